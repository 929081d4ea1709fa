//! diffusers' `UNet2DModel` as one recorded [`Program`]: every activation buffer is planned
//! once for (model, batch) and reused by liveness, every bind group is created once, and a
//! forward pass is a single submission with no allocation.
//!
//! The structure follows diffusers (`unet_2d.py`, `unet_2d_blocks.py`, `resnet.py`,
//! `attention_processor.py`): conv_in → down blocks (ResNet [+ attention] per layer, strided
//! conv downsampler) → mid block (ResNet, attention, ResNet) → up blocks (concat skip,
//! ResNet [+ attention], nearest-2x + conv upsampler) → GroupNorm, SiLU, conv_out.

mod summary;

pub use summary::{forward_flops, summary};

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::config::UNetConfig;
use crate::model::weights::Weights;
use crate::ops::conv2d::{conv2d, Conv2dArgs};
use crate::ops::elementwise::{concat_channels, scale_shift, silu, upsample_nearest2x};
use crate::ops::embedding::{add_class_embedding, timestep_embedding};
use crate::ops::group_norm::group_norm;
use crate::ops::matmul::{linear, matmul, BiasAlong, MatmulArgs};
use crate::ops::softmax::softmax_rows;

/// Activation buffers, handed out by exact byte size and taken back after their last use.
/// Buffers are recycled by size; a released buffer must not be one the caller still reads,
/// which `release` guarantees by checking that the tensor it is given is the last handle.
/// Because a program runs its dispatches in order, a buffer freed at record time may be
/// reused by any later dispatch.
#[derive(Default)]
struct Arena {
    free: HashMap<u64, Vec<Arc<wgpu::Buffer>>>,
    allocated_bytes: u64,
}

impl Arena {
    fn alloc(&mut self, ctx: &GpuContext, shape: &[usize]) -> Result<Tensor> {
        let bytes = (shape.iter().product::<usize>().max(1) * 4) as u64;
        if let Some(buffer) = self.free.get_mut(&bytes).and_then(|v| v.pop()) {
            return Ok(Tensor {
                buffer,
                shape: shape.to_vec(),
            });
        }
        self.allocated_bytes += bytes;
        ctx.zeros(shape)
    }

    /// Take a buffer back, unless something else (a pending skip connection, the caller's
    /// input) still holds it: then it is simply not recycled.
    fn release(&mut self, t: Tensor) {
        if Arc::strong_count(&t.buffer) == 1 {
            let bytes = (t.numel().max(1) * 4) as u64;
            self.free.entry(bytes).or_default().push(t.buffer);
        }
    }
}

/// The U-Net for one model and one batch size, ready to run.
pub struct UNet {
    pub config: UNetConfig,
    pub batch: usize,
    /// Input x_t: (N, in_channels, H, W). Written by the caller (or by a sampler kernel).
    pub sample: Tensor,
    /// Input timesteps as f32: (N).
    pub timesteps: Tensor,
    /// Input class labels as u32: (N); present for class-conditional models.
    pub class_labels: Option<Tensor>,
    /// Output: (N, out_channels, H, W), what diffusers returns as `.sample`.
    pub output: Tensor,
    program: Program,
    /// 2 × multiply-adds of one forward pass (convs and matmuls).
    pub flops: u64,
    /// Bytes of weights and of planned activations on the device.
    pub weight_bytes: u64,
    pub activation_bytes: u64,
}

struct Builder<'a> {
    ctx: &'a GpuContext,
    cfg: &'a UNetConfig,
    weights: HashMap<String, Tensor>,
    program: Program,
    arena: Arena,
    flops: u64,
    n: usize,
}

impl UNet {
    /// Upload the weights and plan the forward pass for `batch` samples.
    pub fn new(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        batch: usize,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::shape("the batch size must be at least 1"));
        }
        let [h, w] = config.sample_size;
        let mut uploaded = HashMap::new();
        let mut weight_bytes = 0;
        for (name, _) in crate::model::weights::expected_tensors(config) {
            let (shape, data) = weights.get(&name)?;
            let t = ctx.upload(data, shape)?;
            weight_bytes += t.bytes();
            uploaded.insert(name, t);
        }
        let sample = ctx.zeros(&[batch, config.in_channels, h, w])?;
        let timesteps = ctx.zeros(&[batch])?;
        let class_labels = match config.num_class_embeds {
            Some(_) => Some(ctx.zeros(&[batch])?),
            None => None,
        };
        let mut b = Builder {
            ctx,
            cfg: config,
            weights: uploaded,
            program: Program::new(),
            arena: Arena::default(),
            flops: 0,
            n: batch,
        };
        let output = b.forward(&sample, &timesteps, class_labels.as_ref())?;
        ctx.check()?;
        Ok(UNet {
            config: config.clone(),
            batch,
            sample,
            timesteps,
            class_labels,
            output,
            flops: b.flops,
            weight_bytes,
            activation_bytes: b.arena.allocated_bytes,
            program: b.program,
        })
    }

    /// The recorded forward pass (reads `sample`, `timesteps`, `class_labels`; writes `output`).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Write the inputs for the next run. Labels are checked against `num_class_embeds`.
    pub fn set_inputs(
        &self,
        ctx: &GpuContext,
        sample: Option<&[f32]>,
        timesteps: &[f32],
        class_labels: Option<&[u32]>,
    ) -> Result<()> {
        if let Some(s) = sample {
            ctx.write(&self.sample, s)?;
        }
        ctx.write(&self.timesteps, timesteps)?;
        self.set_class_labels(ctx, class_labels)
    }

    /// Write the class labels (required for class-conditional models, refused otherwise).
    pub fn set_class_labels(&self, ctx: &GpuContext, class_labels: Option<&[u32]>) -> Result<()> {
        match (
            &self.class_labels,
            class_labels,
            self.config.num_class_embeds,
        ) {
            (Some(t), Some(labels), Some(k)) => {
                if let Some(bad) = labels.iter().find(|&&l| l as usize >= k) {
                    return Err(Error::shape(format!(
                        "class label {bad} is out of range: this model has {k} class embeddings (0..{})",
                        k - 1
                    )));
                }
                ctx.write_u32(t, labels)
            }
            (Some(_), None, _) => Err(Error::shape(
                "this model is class-conditional: class labels are required",
            )),
            (None, Some(_), _) => Err(Error::shape(
                "this model is not class-conditional: it takes no class labels",
            )),
            _ => Ok(()),
        }
    }

    /// One forward pass: write inputs, run, read the output back.
    pub async fn predict(
        &self,
        ctx: &GpuContext,
        sample: &[f32],
        timesteps: &[f32],
        class_labels: Option<&[u32]>,
    ) -> Result<Vec<f32>> {
        self.set_inputs(ctx, Some(sample), timesteps, class_labels)?;
        ctx.run(&self.program)?;
        ctx.read(&self.output).await
    }
}

impl Builder<'_> {
    fn weight(&self, name: &str) -> Result<&Tensor> {
        self.weights
            .get(name)
            .ok_or_else(|| Error::weights(format!("missing tensor {name}")))
    }

    fn alloc(&mut self, shape: &[usize]) -> Result<Tensor> {
        self.arena.alloc(self.ctx, shape)
    }

    fn free(&mut self, t: Tensor) {
        self.arena.release(t);
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: &Tensor,
        prefix: &str,
        stride: usize,
        padding: [usize; 4],
        channel_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        out_scale: f32,
    ) -> Result<Tensor> {
        let weight = self.weight(&format!("{prefix}.weight"))?.clone();
        let bias = self.weight(&format!("{prefix}.bias"))?.clone();
        let [n, _, h, w] = nchw(x)?;
        let [cout, cin, kh, kw] = match weight.shape[..] {
            [a, b, c, d] => [a, b, c, d],
            _ => return Err(Error::weights(format!("{prefix}.weight is not 4-D"))),
        };
        let ho = (h + padding[0] + padding[2] - kh) / stride + 1;
        let wo = (w + padding[1] + padding[3] - kw) / stride + 1;
        let out = self.alloc(&[n, cout, ho, wo])?;
        conv2d(
            self.ctx,
            &mut self.program,
            &Conv2dArgs {
                x,
                weight: &weight,
                bias: Some(&bias),
                channel_bias,
                residual,
                out: &out,
                stride,
                padding,
                out_scale,
            },
        )?;
        self.flops += 2 * (n * cout * ho * wo * cin * kh * kw) as u64;
        Ok(out)
    }

    fn group_norm(
        &mut self,
        x: &Tensor,
        prefix: &str,
        groups: usize,
        silu: bool,
    ) -> Result<Tensor> {
        let gamma = self.weight(&format!("{prefix}.weight"))?.clone();
        let beta = self.weight(&format!("{prefix}.bias"))?.clone();
        let out = self.alloc(&x.shape)?;
        group_norm(
            self.ctx,
            &mut self.program,
            x,
            &gamma,
            &beta,
            &out,
            groups,
            self.cfg.norm_eps as f32,
            silu,
        )?;
        Ok(out)
    }

    fn linear(&mut self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let weight = self.weight(&format!("{prefix}.weight"))?.clone();
        let bias = self.weight(&format!("{prefix}.bias"))?.clone();
        let out = self.alloc(&[x.shape[0], weight.shape[0]])?;
        linear(self.ctx, &mut self.program, x, &weight, Some(&bias), &out)?;
        self.flops += 2 * (x.shape[0] * weight.shape[0] * weight.shape[1]) as u64;
        Ok(out)
    }

    /// diffusers `ResnetBlock2D` (time_embedding_norm "default", dropout off):
    /// out = (shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x))) + proj(silu(temb)))))) / scale
    fn resnet(
        &mut self,
        x: Tensor,
        temb_act: &Tensor,
        prefix: &str,
        out_scale_factor: f64,
    ) -> Result<Tensor> {
        let groups = self.cfg.norm_num_groups;
        let h = self.group_norm(&x, &format!("{prefix}.norm1"), groups, true)?;
        let t = self.linear(temb_act, &format!("{prefix}.time_emb_proj"))?;
        let h1 = self.conv(
            &h,
            &format!("{prefix}.conv1"),
            1,
            [1; 4],
            Some(&t),
            None,
            1.0,
        )?;
        self.free(h);
        self.free(t);
        let h2 = self.group_norm(&h1, &format!("{prefix}.norm2"), groups, true)?;
        self.free(h1);
        let shortcut_name = format!("{prefix}.conv_shortcut.weight");
        let shortcut = if self.weights.contains_key(&shortcut_name) {
            let s = self.conv(
                &x,
                &format!("{prefix}.conv_shortcut"),
                1,
                [0; 4],
                None,
                None,
                1.0,
            )?;
            self.free(x);
            s
        } else {
            x
        };
        let out = self.conv(
            &h2,
            &format!("{prefix}.conv2"),
            1,
            [1; 4],
            None,
            Some(&shortcut),
            (1.0 / out_scale_factor) as f32,
        )?;
        self.free(h2);
        self.free(shortcut);
        Ok(out)
    }

    /// diffusers `Attention` as built for UNet2DModel (group norm, q/k/v/out projections,
    /// softmax in f32, residual, division by `rescale_output_factor`).
    fn attention(
        &mut self,
        x: Tensor,
        prefix: &str,
        groups: usize,
        rescale_output_factor: f64,
    ) -> Result<Tensor> {
        let [n, c, h, w] = nchw(&x)?;
        let hw = h * w;
        let heads = self.cfg.heads(c);
        let d = c / heads;
        let hn = self.group_norm(&x, &format!("{prefix}.group_norm"), groups, false)?;
        let q = self.project(&hn, &format!("{prefix}.to_q"), None, 1.0)?;
        let k = self.project(&hn, &format!("{prefix}.to_k"), None, 1.0)?;
        let v = self.project(&hn, &format!("{prefix}.to_v"), None, 1.0)?;
        self.free(hn);
        // Heads split channels: channel h*d + dd of sample i is q[b = i*heads + h][dd][s].
        let bh = n * heads;
        let scores = self.alloc(&[bh, hw, hw])?;
        matmul(
            self.ctx,
            &mut self.program,
            &MatmulArgs {
                a: &q,
                b: &k,
                out: &scores,
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
                alpha: (1.0 / (d as f64).sqrt()) as f32,
                out_scale: 1.0,
                accumulate: false,
            },
        )?;
        self.flops += 2 * (bh * hw * hw * d) as u64;
        self.free(q);
        self.free(k);
        softmax_rows(self.ctx, &mut self.program, &scores, hw)?;
        let attn = self.alloc(&[n, c, h, w])?;
        matmul(
            self.ctx,
            &mut self.program,
            &MatmulArgs {
                a: &scores,
                b: &v,
                out: &attn,
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
        self.flops += 2 * (bh * hw * hw * d) as u64;
        self.free(scores);
        self.free(v);
        let out = self.project(
            &attn,
            &format!("{prefix}.to_out.0"),
            Some(&x),
            (1.0 / rescale_output_factor) as f32,
        )?;
        self.free(attn);
        self.free(x);
        Ok(out)
    }

    /// A linear layer applied at every pixel of an NCHW tensor (a 1x1 conv with a (C_out, C_in)
    /// weight), optionally fused with a residual add and output scale.
    fn project(
        &mut self,
        x: &Tensor,
        prefix: &str,
        residual: Option<&Tensor>,
        out_scale: f32,
    ) -> Result<Tensor> {
        let [n, c, h, w] = nchw(x)?;
        let hw = h * w;
        let weight = self.weight(&format!("{prefix}.weight"))?.clone();
        let bias = self.weight(&format!("{prefix}.bias"))?.clone();
        let cout = weight.shape[0];
        let out = self.alloc(&[n, cout, h, w])?;
        matmul(
            self.ctx,
            &mut self.program,
            &MatmulArgs {
                a: &weight,
                b: x,
                out: &out,
                bias: Some(&bias),
                bias_along: BiasAlong::M,
                residual,
                batch: n,
                m: cout,
                n: hw,
                k: c,
                a_strides: [0, c, 1],
                b_strides: [c * hw, hw, 1],
                out_strides: [cout * hw, hw, 1],
                alpha: 1.0,
                out_scale,
                accumulate: false,
            },
        )?;
        self.flops += 2 * (n * cout * hw * c) as u64;
        Ok(out)
    }

    fn forward(
        &mut self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let cfg = self.cfg;
        let n = self.n;
        let boc = cfg.block_out_channels.clone();

        // Time embedding: sinusoidal projection, linear, SiLU, linear (+ class embedding).
        let t_proj = self.alloc(&[n, boc[0]])?;
        timestep_embedding(
            self.ctx,
            &mut self.program,
            timesteps,
            &t_proj,
            cfg.flip_sin_to_cos,
            cfg.freq_shift as f32,
        )?;
        let e1 = self.linear(&t_proj, "time_embedding.linear_1")?;
        self.free(t_proj);
        let e1_act = self.alloc(&e1.shape)?;
        silu(self.ctx, &mut self.program, &e1, &e1_act)?;
        self.free(e1);
        let emb = self.linear(&e1_act, "time_embedding.linear_2")?;
        self.free(e1_act);
        if let Some(labels) = class_labels {
            let table = self.weight("class_embedding.weight")?.clone();
            add_class_embedding(self.ctx, &mut self.program, labels, &table, &emb)?;
        }
        // Every ResNet applies SiLU to the embedding before its projection: do it once.
        let temb_act = self.alloc(&emb.shape)?;
        silu(self.ctx, &mut self.program, &emb, &temb_act)?;
        self.free(emb);

        let x = if cfg.center_input_sample {
            let centered = self.alloc(&sample.shape)?;
            scale_shift(self.ctx, &mut self.program, sample, &centered, 2.0, -1.0)?;
            let out = self.conv(&centered, "conv_in", 1, [1; 4], None, None, 1.0)?;
            self.free(centered);
            out
        } else {
            self.conv(sample, "conv_in", 1, [1; 4], None, None, 1.0)?
        };

        // Down path: every ResNet(+attention) output and every downsample is a skip.
        let mut skips: Vec<Tensor> = vec![x.clone()];
        let mut x = x;
        let nblocks = boc.len();
        for (i, _) in boc.iter().enumerate() {
            for j in 0..cfg.layers_per_block {
                let prefix = format!("down_blocks.{i}");
                x = self.resnet(x, &temb_act, &format!("{prefix}.resnets.{j}"), 1.0)?;
                if cfg.down_block_types[i].has_attention() {
                    x = self.attention(
                        x,
                        &format!("{prefix}.attentions.{j}"),
                        cfg.norm_num_groups,
                        1.0,
                    )?;
                }
                skips.push(x.clone());
            }
            if i + 1 < nblocks {
                let padding = if cfg.downsample_padding == 0 {
                    [0, 0, 1, 1]
                } else {
                    [cfg.downsample_padding; 4]
                };
                x = self.conv(
                    &x,
                    &format!("down_blocks.{i}.downsamplers.0.conv"),
                    2,
                    padding,
                    None,
                    None,
                    1.0,
                )?;
                skips.push(x.clone());
            }
        }

        // Mid block: ResNet, attention, ResNet, all scaled by mid_block_scale_factor.
        let scale = cfg.mid_block_scale_factor;
        x = self.resnet(x, &temb_act, "mid_block.resnets.0", scale)?;
        if cfg.add_attention {
            x = self.attention(x, "mid_block.attentions.0", cfg.attn_groups(), scale)?;
        }
        x = self.resnet(x, &temb_act, "mid_block.resnets.1", scale)?;

        // Up path: concat the newest skip before each ResNet.
        for i in 0..nblocks {
            let prefix = format!("up_blocks.{i}");
            for j in 0..cfg.layers_per_block + 1 {
                let skip = skips.pop().ok_or_else(|| {
                    Error::config("the up path needs more skip connections than the down path made")
                })?;
                let [_, c1, h, w] = nchw(&x)?;
                let [_, c2, h2, w2] = nchw(&skip)?;
                if (h, w) != (h2, w2) {
                    return Err(Error::config(format!(
                        "up block {i}: skip connection is {h2}x{w2} but the upsampled path is {h}x{w} \
                         (sample_size must halve evenly at every downsample)"
                    )));
                }
                let cat = self.alloc(&[n, c1 + c2, h, w])?;
                concat_channels(self.ctx, &mut self.program, &x, &skip, &cat)?;
                self.free(x);
                self.free(skip);
                x = self.resnet(cat, &temb_act, &format!("{prefix}.resnets.{j}"), 1.0)?;
                if cfg.up_block_types[i].has_attention() {
                    x = self.attention(
                        x,
                        &format!("{prefix}.attentions.{j}"),
                        cfg.norm_num_groups,
                        1.0,
                    )?;
                }
            }
            if i + 1 < nblocks {
                let [_, c, h, w] = nchw(&x)?;
                let up = self.alloc(&[n, c, 2 * h, 2 * w])?;
                upsample_nearest2x(self.ctx, &mut self.program, &x, &up)?;
                self.free(x);
                x = self.conv(
                    &up,
                    &format!("{prefix}.upsamplers.0.conv"),
                    1,
                    [1; 4],
                    None,
                    None,
                    1.0,
                )?;
                self.free(up);
            }
        }
        self.free(temb_act);

        let hn = self.group_norm(&x, "conv_norm_out", cfg.norm_num_groups, true)?;
        self.free(x);
        // The output gets its own buffer (never handed out again), so callers can read it.
        let out_shape = {
            let [n, _, h, w] = nchw(&hn)?;
            [n, cfg.out_channels, h, w]
        };
        let weight = self.weight("conv_out.weight")?.clone();
        let bias = self.weight("conv_out.bias")?.clone();
        let out = self.ctx.zeros(&out_shape)?;
        conv2d(
            self.ctx,
            &mut self.program,
            &Conv2dArgs {
                x: &hn,
                weight: &weight,
                bias: Some(&bias),
                channel_bias: None,
                residual: None,
                out: &out,
                stride: 1,
                padding: [1; 4],
                out_scale: 1.0,
            },
        )?;
        let [_, cin, _, _] = nchw(&hn)?;
        self.flops += 2 * (out.numel() * cin * 9) as u64;
        self.free(hn);
        Ok(out)
    }
}

fn nchw(t: &Tensor) -> Result<[usize; 4]> {
    crate::ops::elementwise::nchw(t, "unet")
}
