//! diffusers' `UNet2DModel` described once, for inference and for training.
//!
//! The functions here record the network's dispatches in diffusers' order (`unet_2d.py`,
//! `unet_2d_blocks.py`, `resnet.py`, `attention_processor.py`): time embedding → conv_in →
//! down blocks (ResNet [+ attention] per layer, strided-conv downsampler) → mid block
//! (ResNet, attention, ResNet) → up blocks (concat skip, ResNet [+ attention], nearest-2×
//! and conv upsampler) → GroupNorm, SiLU, conv_out. They are generic over a [`Builder`],
//! which decides what happens to activations:
//! - inference (`unet::UNet`) hands buffers out of an arena and takes each one back after
//!   its last reader has been recorded ([`Builder::release`]); the recorded [`Op`]s are
//!   dropped;
//! - training (`train::graph::TrainGraph`) keeps every activation and keeps the [`Op`]s as
//!   the tape its backward pass is recorded from.
//!
//! Both therefore record exactly the same forward dispatches, in the same order.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, PackLayout, Packed, Program, Tensor};
use crate::model::config::UNetConfig;
use crate::model::weights::{expected_tensors, Weights};
use crate::ops::conv2d::{conv2d_with_setup, Conv2dArgs};
use crate::ops::elementwise::{concat_channels, scale_shift, silu, upsample_nearest2x};
use crate::ops::embedding::{add_class_embedding, timestep_embedding};
use crate::ops::group_norm::group_norm as group_norm_kernel;
use crate::ops::group_norm_backward::group_norm_saved_len;
use crate::ops::matmul::{linear, matmul, BiasAlong, MatmulArgs};
use crate::ops::softmax::softmax_rows;

/// Index of a parameter in [`Params`] (diffusers' order, `expected_tensors`).
pub type ParamId = usize;

/// The model's parameters on the device, in `expected_tensors` order.
pub struct Params {
    pub names: Vec<String>,
    pub tensors: Vec<Tensor>,
    index: HashMap<String, ParamId>,
}

impl Params {
    /// Upload every tensor the config expects (an error names the first missing one).
    pub fn upload(ctx: &GpuContext, cfg: &UNetConfig, weights: &Weights) -> Result<Self> {
        let mut params = Params {
            names: Vec::new(),
            tensors: Vec::new(),
            index: HashMap::new(),
        };
        for (name, _) in expected_tensors(cfg) {
            let (shape, data) = weights.get(&name)?;
            params.tensors.push(ctx.upload(data, shape)?);
            params.index.insert(name.clone(), params.names.len());
            params.names.push(name);
        }
        Ok(params)
    }

    /// Every tensor the config expects as a view into packed buffers laid out by
    /// [`PackLayout`] (training: the optimizer then updates whole packs), with the packs.
    pub fn upload_packed(
        ctx: &GpuContext,
        cfg: &UNetConfig,
        weights: &Weights,
    ) -> Result<(Self, PackLayout, Packed)> {
        let mut names = Vec::new();
        let mut shapes = Vec::new();
        let mut data = Vec::new();
        for (name, _) in expected_tensors(cfg) {
            let (shape, values) = weights.get(&name)?;
            shapes.push(shape.to_vec());
            data.push(values);
            names.push(name);
        }
        let layout = PackLayout::new(&shapes, ctx.max_binding_bytes())?;
        let packed = ctx.packed(&layout)?;
        for (view, values) in packed.views.iter().zip(data) {
            ctx.write(view, values)?;
        }
        let params = Params {
            index: names.iter().cloned().zip(0..).collect(),
            names,
            tensors: packed.views.clone(),
        };
        Ok((params, layout, packed))
    }

    pub fn bytes(&self) -> u64 {
        self.tensors.iter().map(Tensor::bytes).sum()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn id(&self, name: &str) -> Result<ParamId> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::weights(format!("missing tensor {name}")))
    }

    /// The ids and tensors of `{prefix}.weight` and `{prefix}.bias`.
    fn pair(&self, prefix: &str) -> Result<(ParamId, Tensor, ParamId, Tensor)> {
        let w = self.id(&format!("{prefix}.weight"))?;
        let b = self.id(&format!("{prefix}.bias"))?;
        Ok((w, self.tensors[w].clone(), b, self.tensors[b].clone()))
    }
}

/// What every builder records into: the device, the model, the program so far.
pub struct Recording<'a> {
    pub ctx: &'a GpuContext,
    pub cfg: &'a UNetConfig,
    pub params: Params,
    pub program: Program,
    /// Where passes that only rearrange weights go (the direct convolutions' weight
    /// staging) when the weights are fixed for the program's lifetime (inference: run once
    /// after recording); `None` (training): into `program`, so every run sees updated weights.
    pub setup: Option<Program>,
    /// 2 × multiply-adds of the recorded forward pass (convs and matmuls).
    pub flops: u64,
}

impl<'a> Recording<'a> {
    pub fn new(ctx: &'a GpuContext, cfg: &'a UNetConfig, params: Params) -> Self {
        Recording {
            ctx,
            cfg,
            params,
            program: Program::new(),
            setup: None,
            flops: 0,
        }
    }
}

/// One recorded forward op that has a derivative, with what its backward pass needs.
/// Ops without one (the sinusoidal timestep projection, input centring) are not recorded:
/// nothing upstream of them is trained.
pub enum Op {
    /// out = x·Wᵀ + b (time-embedding MLP and the ResNets' time projections).
    Linear {
        x: Tensor,
        weight: ParamId,
        bias: ParamId,
        out: Tensor,
    },
    Silu {
        x: Tensor,
        out: Tensor,
    },
    /// emb += table[labels] (in place on `emb`).
    ClassEmbedding {
        labels: Tensor,
        emb: Tensor,
        table: ParamId,
    },
    /// out = (conv(x) + b + channel_bias + residual) · scale.
    Conv {
        x: Tensor,
        weight: ParamId,
        bias: ParamId,
        out: Tensor,
        stride: usize,
        padding: [usize; 4],
        scale: f32,
        channel_bias: Option<Tensor>,
        residual: Option<Tensor>,
    },
    GroupNorm {
        x: Tensor,
        gamma: ParamId,
        beta: ParamId,
        out: Tensor,
        groups: usize,
        silu: bool,
        /// The statistics the forward saved ([`Builder::group_norm_saved`]).
        saved: Option<Tensor>,
    },
    /// out = (W·x + b + residual) · scale at every pixel (attention projections).
    Project {
        x: Tensor,
        weight: ParamId,
        bias: ParamId,
        out: Tensor,
        residual: Option<Tensor>,
        scale: f32,
    },
    /// P = softmax(α qᵀk) per (sample, head), in place in `probs`.
    AttentionScores {
        q: Tensor,
        k: Tensor,
        probs: Tensor,
        heads: usize,
        alpha: f32,
    },
    /// out = P·vᵀ per (sample, head).
    AttentionMix {
        probs: Tensor,
        v: Tensor,
        out: Tensor,
        heads: usize,
    },
    Concat {
        a: Tensor,
        b: Tensor,
        out: Tensor,
    },
    Upsample {
        x: Tensor,
        out: Tensor,
    },
    /// Recorded by builders whose [`Builder::dropout`] applies a mask; `mask` is theirs.
    Dropout {
        mask: usize,
        x: Tensor,
        out: Tensor,
    },
}

impl Op {
    /// The tensor the op writes.
    pub fn output(&self) -> &Tensor {
        match self {
            Op::Linear { out, .. }
            | Op::Silu { out, .. }
            | Op::Conv { out, .. }
            | Op::GroupNorm { out, .. }
            | Op::Project { out, .. }
            | Op::AttentionMix { out, .. }
            | Op::Concat { out, .. }
            | Op::Upsample { out, .. }
            | Op::Dropout { out, .. } => out,
            Op::ClassEmbedding { emb, .. } => emb,
            Op::AttentionScores { probs, .. } => probs,
        }
    }
}

/// What differs between recording the network for inference and for training.
pub trait Builder<'a> {
    fn rec(&mut self) -> &mut Recording<'a>;
    /// A buffer for an activation of this shape.
    fn alloc(&mut self, shape: &[usize]) -> Result<Tensor>;
    /// A buffer for the network's output.
    fn alloc_output(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.alloc(shape)
    }
    /// The structure has recorded the last reader of `t` (other handles may still exist).
    fn release(&mut self, t: Tensor);
    /// A forward op has been recorded (called before the structure releases its inputs).
    fn record(&mut self, op: Op);
    /// diffusers' `nn.Dropout(p)` on `x`: the identity in eval mode.
    fn dropout(&mut self, x: Tensor, p: f32) -> Result<Tensor>;
    /// A buffer of `len` floats in which group norm saves its statistics for the backward
    /// (`saved` of `ops::group_norm::group_norm`); None (the default) saves nothing.
    fn group_norm_saved(&mut self, _len: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// The whole forward pass: writes the prediction into a buffer from
/// [`Builder::alloc_output`] and returns it.
pub fn forward<'a, B: Builder<'a>>(
    b: &mut B,
    sample: &Tensor,
    timesteps: &Tensor,
    class_labels: Option<&Tensor>,
) -> Result<Tensor> {
    let cfg = b.rec().cfg;
    let temb_act = time_embedding(b, timesteps, class_labels)?;
    let x = if cfg.center_input_sample {
        let centered = center(b, sample)?;
        let out = conv(b, &centered, &Conv::same("conv_in".into()))?;
        b.release(centered);
        out
    } else {
        conv(b, sample, &Conv::same("conv_in".into()))?
    };
    // Every ResNet(+attention) output and every downsample of the down path is a skip.
    let mut skips = vec![x.clone()];
    let mut x = x;
    let nblocks = cfg.block_out_channels.len();
    for i in 0..nblocks {
        x = down_block(b, x, &temb_act, i, &mut skips)?;
    }
    x = mid_block(b, x, &temb_act)?;
    for i in 0..nblocks {
        x = up_block(b, x, &temb_act, i, &mut skips)?;
    }
    b.release(temb_act);
    let hn = group_norm(b, &x, "conv_norm_out", cfg.norm_num_groups, true)?;
    b.release(x);
    let out = conv_into(b, &hn, &Conv::same("conv_out".into()), true)?;
    b.release(hn);
    Ok(out)
}

/// Sinusoidal projection, linear, SiLU, linear (+ class embedding), then the SiLU that
/// every ResNet applies to the embedding before its projection, done once here.
fn time_embedding<'a, B: Builder<'a>>(
    b: &mut B,
    timesteps: &Tensor,
    class_labels: Option<&Tensor>,
) -> Result<Tensor> {
    let cfg = b.rec().cfg;
    let t_proj = b.alloc(&[timesteps.numel(), cfg.block_out_channels[0]])?;
    let r = b.rec();
    timestep_embedding(
        r.ctx,
        &mut r.program,
        timesteps,
        &t_proj,
        cfg.flip_sin_to_cos,
        cfg.freq_shift as f32,
    )?;
    let e1 = linear_layer(b, &t_proj, "time_embedding.linear_1")?;
    b.release(t_proj);
    let e1_act = silu_op(b, &e1)?;
    b.release(e1);
    let emb = linear_layer(b, &e1_act, "time_embedding.linear_2")?;
    b.release(e1_act);
    if let Some(labels) = class_labels {
        let r = b.rec();
        let table = r.params.id("class_embedding.weight")?;
        let table_t = r.params.tensors[table].clone();
        add_class_embedding(r.ctx, &mut r.program, labels, &table_t, &emb)?;
        b.record(Op::ClassEmbedding {
            labels: labels.clone(),
            emb: emb.clone(),
            table,
        });
    }
    let temb_act = silu_op(b, &emb)?;
    b.release(emb);
    Ok(temb_act)
}

/// `DownBlock2D` / `AttnDownBlock2D` number `i`: its skips are pushed onto `skips`.
fn down_block<'a, B: Builder<'a>>(
    b: &mut B,
    mut x: Tensor,
    temb_act: &Tensor,
    i: usize,
    skips: &mut Vec<Tensor>,
) -> Result<Tensor> {
    let cfg = b.rec().cfg;
    let with_attention = cfg.down_block_types[i].has_attention();
    for j in 0..cfg.layers_per_block {
        x = layer(
            b,
            x,
            temb_act,
            &format!("down_blocks.{i}"),
            j,
            with_attention,
        )?;
        skips.push(x.clone());
    }
    if i + 1 < cfg.block_out_channels.len() {
        x = downsample(b, x, i)?;
        skips.push(x.clone());
    }
    Ok(x)
}

/// `UNetMidBlock2D`: ResNet, attention, ResNet, all scaled by `mid_block_scale_factor`.
fn mid_block<'a, B: Builder<'a>>(b: &mut B, x: Tensor, temb_act: &Tensor) -> Result<Tensor> {
    let cfg = b.rec().cfg;
    let scale = cfg.mid_block_scale_factor;
    let mut x = resnet(b, x, temb_act, "mid_block.resnets.0", scale)?;
    if cfg.add_attention {
        x = attention(b, x, "mid_block.attentions.0", cfg.attn_groups(), scale)?;
    }
    resnet(b, x, temb_act, "mid_block.resnets.1", scale)
}

/// `UpBlock2D` / `AttnUpBlock2D` number `i`: the newest skip is concatenated before each
/// ResNet.
fn up_block<'a, B: Builder<'a>>(
    b: &mut B,
    mut x: Tensor,
    temb_act: &Tensor,
    i: usize,
    skips: &mut Vec<Tensor>,
) -> Result<Tensor> {
    let cfg = b.rec().cfg;
    let prefix = format!("up_blocks.{i}");
    let with_attention = cfg.up_block_types[i].has_attention();
    for j in 0..cfg.layers_per_block + 1 {
        let skip = skips.pop().ok_or_else(|| {
            Error::config("the up path needs more skip connections than the down path made")
        })?;
        let [_, _, h, w] = nchw(&x)?;
        let [_, _, h2, w2] = nchw(&skip)?;
        if (h, w) != (h2, w2) {
            return Err(Error::config(format!(
                "up block {i}: skip connection is {h2}x{w2} but the upsampled path is {h}x{w} \
                 (sample_size must halve evenly at every downsample)"
            )));
        }
        let cat = concat(b, &x, &skip)?;
        b.release(x);
        b.release(skip);
        x = layer(b, cat, temb_act, &prefix, j, with_attention)?;
    }
    if i + 1 < cfg.block_out_channels.len() {
        x = upsample(b, x, i)?;
    }
    Ok(x)
}

/// Layer `j` of a down or up block: `{prefix}.resnets.{j}`, then (in the attention block
/// types) `{prefix}.attentions.{j}`.
fn layer<'a, B: Builder<'a>>(
    b: &mut B,
    x: Tensor,
    temb_act: &Tensor,
    prefix: &str,
    j: usize,
    with_attention: bool,
) -> Result<Tensor> {
    let x = resnet(b, x, temb_act, &format!("{prefix}.resnets.{j}"), 1.0)?;
    if !with_attention {
        return Ok(x);
    }
    let groups = b.rec().cfg.norm_num_groups;
    attention(b, x, &format!("{prefix}.attentions.{j}"), groups, 1.0)
}

/// diffusers `ResnetBlock2D` (time_embedding_norm "default"):
/// out = (shortcut(x) + conv2(dropout(silu(gn2(conv1(silu(gn1(x))) + proj(silu(temb))))))) / scale
fn resnet<'a, B: Builder<'a>>(
    b: &mut B,
    x: Tensor,
    temb_act: &Tensor,
    prefix: &str,
    out_scale_factor: f64,
) -> Result<Tensor> {
    let cfg = b.rec().cfg;
    let groups = cfg.norm_num_groups;
    let h = group_norm(b, &x, &format!("{prefix}.norm1"), groups, true)?;
    let t = linear_layer(b, temb_act, &format!("{prefix}.time_emb_proj"))?;
    let conv1 = Conv {
        channel_bias: Some(&t),
        ..Conv::same(format!("{prefix}.conv1"))
    };
    let h1 = conv(b, &h, &conv1)?;
    b.release(h);
    b.release(t);
    let mut h2 = group_norm(b, &h1, &format!("{prefix}.norm2"), groups, true)?;
    b.release(h1);
    if cfg.dropout > 0.0 {
        h2 = b.dropout(h2, cfg.dropout as f32)?;
    }
    let shortcut_prefix = format!("{prefix}.conv_shortcut");
    let shortcut = if b
        .rec()
        .params
        .contains(&format!("{shortcut_prefix}.weight"))
    {
        let s = conv(b, &x, &Conv::pointwise(shortcut_prefix))?;
        b.release(x);
        s
    } else {
        x
    };
    let conv2 = Conv {
        residual: Some(&shortcut),
        out_scale: (1.0 / out_scale_factor) as f32,
        ..Conv::same(format!("{prefix}.conv2"))
    };
    let out = conv(b, &h2, &conv2)?;
    b.release(h2);
    b.release(shortcut);
    Ok(out)
}

/// diffusers `Attention` as built for UNet2DModel: group norm, q/k/v projections,
/// softmax(qᵀk/√d) per head in f32, output projection + residual, division by
/// `rescale_output_factor`.
fn attention<'a, B: Builder<'a>>(
    b: &mut B,
    x: Tensor,
    prefix: &str,
    groups: usize,
    rescale_output_factor: f64,
) -> Result<Tensor> {
    let [_, c, ..] = nchw(&x)?;
    let heads = b.rec().cfg.heads(c);
    let hn = group_norm(b, &x, &format!("{prefix}.group_norm"), groups, false)?;
    let q = project(b, &hn, &format!("{prefix}.to_q"), None, 1.0)?;
    let k = project(b, &hn, &format!("{prefix}.to_k"), None, 1.0)?;
    let v = project(b, &hn, &format!("{prefix}.to_v"), None, 1.0)?;
    b.release(hn);
    let probs = attention_scores(b, &q, &k, heads)?;
    b.release(q);
    b.release(k);
    let o = attention_mix(b, &probs, &v, heads)?;
    b.release(probs);
    b.release(v);
    let scale = (1.0 / rescale_output_factor) as f32;
    let out = project(b, &o, &format!("{prefix}.to_out.0"), Some(&x), scale)?;
    b.release(o);
    b.release(x);
    Ok(out)
}

/// `Downsample2D` (conv): a stride-2 3×3 conv; `downsample_padding` 0 pads right/bottom.
fn downsample<'a, B: Builder<'a>>(b: &mut B, x: Tensor, i: usize) -> Result<Tensor> {
    let cfg = b.rec().cfg;
    let padding = if cfg.downsample_padding == 0 {
        [0, 0, 1, 1]
    } else {
        [cfg.downsample_padding; 4]
    };
    let down = Conv {
        stride: 2,
        padding,
        ..Conv::same(format!("down_blocks.{i}.downsamplers.0.conv"))
    };
    let out = conv(b, &x, &down)?;
    b.release(x);
    Ok(out)
}

/// `Upsample2D` (conv): nearest 2× then a 3×3 conv.
fn upsample<'a, B: Builder<'a>>(b: &mut B, x: Tensor, i: usize) -> Result<Tensor> {
    let [n, c, h, w] = nchw(&x)?;
    let up = b.alloc(&[n, c, 2 * h, 2 * w])?;
    let r = b.rec();
    upsample_nearest2x(r.ctx, &mut r.program, &x, &up)?;
    b.record(Op::Upsample {
        x: x.clone(),
        out: up.clone(),
    });
    b.release(x);
    let out = conv(
        b,
        &up,
        &Conv::same(format!("up_blocks.{i}.upsamplers.0.conv")),
    )?;
    b.release(up);
    Ok(out)
}

// Single ops: allocate the output, record the dispatch, count its FLOPs, record the `Op`.

/// A conv layer's parameters (`{prefix}.weight`, `{prefix}.bias`) and fused extras.
struct Conv<'t> {
    prefix: String,
    stride: usize,
    padding: [usize; 4],
    /// Added per (sample, output channel): (N, C_out).
    channel_bias: Option<&'t Tensor>,
    /// Added before scaling: the output's shape.
    residual: Option<&'t Tensor>,
    out_scale: f32,
}

impl Conv<'_> {
    /// Stride 1, zero padding 1: a 3×3 conv that keeps the size.
    fn same(prefix: String) -> Self {
        Conv {
            prefix,
            stride: 1,
            padding: [1; 4],
            channel_bias: None,
            residual: None,
            out_scale: 1.0,
        }
    }

    /// Stride 1, no padding (the ResNets' 1×1 shortcut).
    fn pointwise(prefix: String) -> Self {
        Conv {
            padding: [0; 4],
            ..Conv::same(prefix)
        }
    }
}

fn conv<'a, B: Builder<'a>>(b: &mut B, x: &Tensor, c: &Conv) -> Result<Tensor> {
    conv_into(b, x, c, false)
}

/// A conv whose output comes from [`Builder::alloc_output`] when `is_output`.
fn conv_into<'a, B: Builder<'a>>(
    b: &mut B,
    x: &Tensor,
    c: &Conv,
    is_output: bool,
) -> Result<Tensor> {
    let (weight, w, bias, bt) = b.rec().params.pair(&c.prefix)?;
    let [n, _, h, wd] = nchw(x)?;
    let [cout, cin, kh, kw] = match w.shape[..] {
        [a, b, c, d] => [a, b, c, d],
        _ => return Err(Error::weights(format!("{}.weight is not 4-D", c.prefix))),
    };
    let p = c.padding;
    let ho = (h + p[0] + p[2] - kh) / c.stride + 1;
    let wo = (wd + p[1] + p[3] - kw) / c.stride + 1;
    let shape = [n, cout, ho, wo];
    let out = if is_output {
        b.alloc_output(&shape)?
    } else {
        b.alloc(&shape)?
    };
    let r = b.rec();
    conv2d_with_setup(
        r.ctx,
        &mut r.program,
        r.setup.as_mut(),
        &Conv2dArgs {
            x,
            weight: &w,
            bias: Some(&bt),
            channel_bias: c.channel_bias,
            residual: c.residual,
            out: &out,
            stride: c.stride,
            padding: c.padding,
            out_scale: c.out_scale,
        },
    )?;
    r.flops += 2 * (n * cout * ho * wo * cin * kh * kw) as u64;
    b.record(Op::Conv {
        x: x.clone(),
        weight,
        bias,
        out: out.clone(),
        stride: c.stride,
        padding: c.padding,
        scale: c.out_scale,
        channel_bias: c.channel_bias.cloned(),
        residual: c.residual.cloned(),
    });
    Ok(out)
}

fn linear_layer<'a, B: Builder<'a>>(b: &mut B, x: &Tensor, prefix: &str) -> Result<Tensor> {
    let (weight, w, bias, bt) = b.rec().params.pair(prefix)?;
    let out = b.alloc(&[x.shape[0], w.shape[0]])?;
    let r = b.rec();
    linear(r.ctx, &mut r.program, x, &w, Some(&bt), &out)?;
    r.flops += 2 * (x.shape[0] * w.shape[0] * w.shape[1]) as u64;
    b.record(Op::Linear {
        x: x.clone(),
        weight,
        bias,
        out: out.clone(),
    });
    Ok(out)
}

fn silu_op<'a, B: Builder<'a>>(b: &mut B, x: &Tensor) -> Result<Tensor> {
    let out = b.alloc(&x.shape)?;
    let r = b.rec();
    silu(r.ctx, &mut r.program, x, &out)?;
    b.record(Op::Silu {
        x: x.clone(),
        out: out.clone(),
    });
    Ok(out)
}

/// diffusers' `center_input_sample`: 2x − 1.
fn center<'a, B: Builder<'a>>(b: &mut B, sample: &Tensor) -> Result<Tensor> {
    let out = b.alloc(&sample.shape)?;
    let r = b.rec();
    scale_shift(r.ctx, &mut r.program, sample, &out, 2.0, -1.0)?;
    Ok(out)
}

fn group_norm<'a, B: Builder<'a>>(
    b: &mut B,
    x: &Tensor,
    prefix: &str,
    groups: usize,
    silu: bool,
) -> Result<Tensor> {
    let (gamma, g, beta, bt) = b.rec().params.pair(prefix)?;
    let out = b.alloc(&x.shape)?;
    let [n, c, ..] = crate::ops::elementwise::nchw(x, prefix)?;
    let saved = b.group_norm_saved(group_norm_saved_len(n, c, groups))?;
    let r = b.rec();
    let eps = r.cfg.norm_eps as f32;
    group_norm_kernel(
        r.ctx,
        &mut r.program,
        x,
        &g,
        &bt,
        &out,
        groups,
        eps,
        silu,
        saved.as_ref(),
    )?;
    b.record(Op::GroupNorm {
        x: x.clone(),
        gamma,
        beta,
        out: out.clone(),
        groups,
        silu,
        saved,
    });
    Ok(out)
}

/// A linear layer at every pixel of an NCHW tensor (a 1×1 conv with a (C_out, C_in) weight),
/// optionally fused with a residual add and output scale.
fn project<'a, B: Builder<'a>>(
    b: &mut B,
    x: &Tensor,
    prefix: &str,
    residual: Option<&Tensor>,
    out_scale: f32,
) -> Result<Tensor> {
    let [n, c, h, w] = nchw(x)?;
    let (weight, wt, bias, bt) = b.rec().params.pair(prefix)?;
    let cout = wt.shape[0];
    let out = b.alloc(&[n, cout, h, w])?;
    let r = b.rec();
    // As a 1×1 convolution (the same memory as the (C_out, C_in) weight), so CPU adapters take
    // the direct kernel: a batched GEMM with N = H·W = 49 (attention at 7×7) fills under 40 %
    // of its 128-column tile and ran at ~2 GFLOP/s there. The backward already treats it so.
    conv2d_with_setup(
        r.ctx,
        &mut r.program,
        r.setup.as_mut(),
        &Conv2dArgs {
            x,
            weight: &wt.reshaped(&[cout, c, 1, 1])?,
            bias: Some(&bt),
            channel_bias: None,
            residual,
            out: &out,
            stride: 1,
            padding: [0; 4],
            out_scale,
        },
    )?;
    r.flops += 2 * (n * cout * h * w * c) as u64;
    b.record(Op::Project {
        x: x.clone(),
        weight,
        bias,
        out: out.clone(),
        residual: residual.cloned(),
        scale: out_scale,
    });
    Ok(out)
}

/// P = softmax(qᵀk / √d) for every (sample, head): (N·heads, HW, HW). Heads split channels:
/// channel h·d + dd of sample i is q[b = i·heads + h][dd][s].
fn attention_scores<'a, B: Builder<'a>>(
    b: &mut B,
    q: &Tensor,
    k: &Tensor,
    heads: usize,
) -> Result<Tensor> {
    let [n, c, h, w] = nchw(q)?;
    let (hw, d, bh) = (h * w, c / heads, n * heads);
    let alpha = (1.0 / (d as f64).sqrt()) as f32;
    let probs = b.alloc(&[bh, hw, hw])?;
    let r = b.rec();
    matmul(
        r.ctx,
        &mut r.program,
        &MatmulArgs {
            a: q,
            b: k,
            out: &probs,
            bias: None,
            bias_along: BiasAlong::N,
            residual: None,
            batch: bh,
            m: hw,
            n: hw,
            k: d,
            a_strides: [d * hw, 1, hw],
            b_strides: [d * hw, hw, 1],
            out_strides: [hw * hw, hw, 1],
            alpha,
            out_scale: 1.0,
            accumulate: false,
        },
    )?;
    r.flops += 2 * (bh * hw * hw * d) as u64;
    softmax_rows(r.ctx, &mut r.program, &probs, hw)?;
    b.record(Op::AttentionScores {
        q: q.clone(),
        k: k.clone(),
        probs: probs.clone(),
        heads,
        alpha,
    });
    Ok(probs)
}

/// o = P·vᵀ for every (sample, head), written back in NCHW: (N, C, H, W).
fn attention_mix<'a, B: Builder<'a>>(
    b: &mut B,
    probs: &Tensor,
    v: &Tensor,
    heads: usize,
) -> Result<Tensor> {
    let [n, c, h, w] = nchw(v)?;
    let (hw, d, bh) = (h * w, c / heads, n * heads);
    let out = b.alloc(&[n, c, h, w])?;
    let r = b.rec();
    matmul(
        r.ctx,
        &mut r.program,
        &MatmulArgs {
            a: probs,
            b: v,
            out: &out,
            bias: None,
            bias_along: BiasAlong::N,
            residual: None,
            batch: bh,
            m: hw,
            n: d,
            k: hw,
            a_strides: [hw * hw, hw, 1],
            b_strides: [d * hw, 1, hw],
            out_strides: [d * hw, 1, hw],
            alpha: 1.0,
            out_scale: 1.0,
            accumulate: false,
        },
    )?;
    r.flops += 2 * (bh * hw * hw * d) as u64;
    b.record(Op::AttentionMix {
        probs: probs.clone(),
        v: v.clone(),
        out: out.clone(),
        heads,
    });
    Ok(out)
}

/// [a; b] along channels (the up path's skip connections).
fn concat<'a, B: Builder<'a>>(b: &mut B, x: &Tensor, skip: &Tensor) -> Result<Tensor> {
    let [n, c1, h, w] = nchw(x)?;
    let [_, c2, ..] = nchw(skip)?;
    let out = b.alloc(&[n, c1 + c2, h, w])?;
    let r = b.rec();
    concat_channels(r.ctx, &mut r.program, x, skip, &out)?;
    b.record(Op::Concat {
        a: x.clone(),
        b: skip.clone(),
        out: out.clone(),
    });
    Ok(out)
}

fn nchw(t: &Tensor) -> Result<[usize; 4]> {
    crate::ops::elementwise::nchw(t, "unet")
}
