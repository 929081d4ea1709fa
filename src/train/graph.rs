//! The U-Net's training step as two recorded programs: a forward pass that keeps every
//! activation its backward needs, and a backward pass recorded from a tape of the forward's
//! ops, in reverse. Gradients of activations that are consumed more than once (the ResNet
//! input by norm1 and the shortcut, skip connections, the shared time embedding) are summed:
//! the first backward op to write a gradient overwrites it, later ones accumulate.
//!
//! Loss: L_simple = ‖target − model(x_t, t)‖² averaged over elements (paper eq. 14), with
//! x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4) and target ε (or v, or x_0, per `prediction_type`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::diffusion::schedule::PredictionType;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::model::config::UNetConfig;
use crate::model::weights::{expected_tensors, Weights};
use crate::ops::conv2d::{conv2d, Conv2dArgs};
use crate::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight};
use crate::ops::dropout::DropoutOp;
use crate::ops::elementwise::{concat_channels, silu, upsample_nearest2x};
use crate::ops::elementwise_backward::{
    accumulate_scaled, concat_channels_backward, copy_scaled, silu_backward,
    upsample_nearest2x_backward,
};
use crate::ops::embedding::{add_class_embedding, timestep_embedding};
use crate::ops::embedding_backward::add_class_embedding_backward;
use crate::ops::group_norm::group_norm;
use crate::ops::group_norm_backward::{group_norm_backward, group_norm_backward_scratch_shape};
use crate::ops::loss::{mse_loss, mse_partials_len, QSampleOp};
use crate::ops::matmul::{linear, matmul, BiasAlong, MatmulArgs};
use crate::ops::noise::NoiseOp;
use crate::ops::reduce::sum_axes;
use crate::ops::softmax::softmax_rows;
use crate::ops::softmax_backward::softmax_rows_backward;

/// One forward op, with what its backward needs.
enum Tape {
    /// out = x·Wᵀ + b (time-embedding MLP and the ResNets' time projections).
    Linear {
        x: Tensor,
        w: usize,
        b: usize,
        out: Tensor,
        need_dx: bool,
    },
    Silu {
        x: Tensor,
        out: Tensor,
    },
    /// emb += table[labels] (in place on `emb`).
    ClassEmbedding {
        labels: Tensor,
        emb: Tensor,
        table: usize,
    },
    /// out = (conv(x) + b + channel_bias + residual) · scale.
    Conv {
        x: Tensor,
        w: usize,
        b: usize,
        out: Tensor,
        stride: usize,
        padding: [usize; 4],
        scale: f32,
        channel_bias: Option<Tensor>,
        residual: Option<Tensor>,
        need_dx: bool,
    },
    GroupNorm {
        x: Tensor,
        gamma: usize,
        beta: usize,
        out: Tensor,
        groups: usize,
        silu: bool,
    },
    /// out = (W·x + b + residual) · scale at every pixel (attention projections).
    Project {
        x: Tensor,
        w: usize,
        b: usize,
        out: Tensor,
        residual: Option<Tensor>,
        scale: f32,
    },
    /// P = softmax(α qᵀk) per (sample, head); o = P·vᵀ.
    AttentionCore {
        q: Tensor,
        k: Tensor,
        v: Tensor,
        probs: Tensor,
        o: Tensor,
        heads: usize,
        alpha: f32,
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
    Dropout {
        op: usize,
        x: Tensor,
        out: Tensor,
    },
}

/// Planned buffers and programs for one training step of one model at one batch size.
pub struct TrainGraph {
    pub config: UNetConfig,
    pub batch: usize,
    /// Parameter names (diffusers order), their tensors, gradients.
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    pub grads: Vec<Tensor>,
    /// Inputs written by the trainer every step.
    pub x0: Tensor,
    pub timesteps: Tensor,
    pub class_labels: Option<Tensor>,
    /// [√ᾱ_t, √(1−ᾱ_t)] per sample: (N, 2).
    pub coef: Tensor,
    pub noise: Tensor,
    pub x_t: Tensor,
    pub target: Tensor,
    pub pred: Tensor,
    /// Mean squared error of the step: (1).
    pub loss: Tensor,
    /// None when the caller writes `noise` itself (tests against references).
    noise_op: Option<NoiseOp>,
    dropout_ops: Vec<DropoutOp>,
    forward: Program,
    backward: Program,
    pub flops_forward: u64,
    pub activation_bytes: u64,
}

struct Grads {
    /// Gradient buffers of activations, keyed by the activation's buffer, and whether
    /// something has written them yet in the backward pass being recorded.
    map: HashMap<usize, (Tensor, bool)>,
    bytes: u64,
}

fn key(t: &Tensor) -> usize {
    Arc::as_ptr(&t.buffer) as usize
}

impl Grads {
    /// The gradient buffer for `t` and whether a writer must accumulate into it.
    fn out(&mut self, ctx: &GpuContext, t: &Tensor) -> Result<(Tensor, bool)> {
        if let Some((g, written)) = self.map.get_mut(&key(t)) {
            let acc = *written;
            *written = true;
            return Ok((g.reshaped(&t.shape)?, acc));
        }
        let g = ctx.zeros(&t.shape)?;
        self.bytes += g.bytes();
        self.map.insert(key(t), (g.clone(), true));
        Ok((g, false))
    }

    /// The (complete) gradient of `t`, to be read by its producer's backward.
    fn get(&self, t: &Tensor) -> Result<Tensor> {
        match self.map.get(&key(t)) {
            Some((g, true)) => g.reshaped(&t.shape),
            _ => Err(Error::Other(format!(
                "internal: no gradient was recorded for an activation of shape {:?}",
                t.shape
            ))),
        }
    }
}

struct Builder<'a> {
    ctx: &'a GpuContext,
    cfg: &'a UNetConfig,
    index: HashMap<String, usize>,
    params: Vec<Tensor>,
    program: Program,
    tape: Vec<Tape>,
    dropout_ops: Vec<DropoutOp>,
    flops: u64,
    activation_bytes: u64,
    n: usize,
}

impl TrainGraph {
    pub fn new(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        batch: usize,
        prediction: PredictionType,
        gpu_noise: bool,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::shape("the batch size must be at least 1"));
        }
        let [h, w] = config.sample_size;
        let mut names = Vec::new();
        let mut params = Vec::new();
        let mut index = HashMap::new();
        for (i, (name, _)) in expected_tensors(config).into_iter().enumerate() {
            let (shape, data) = weights.get(&name)?;
            params.push(ctx.upload(data, shape)?);
            index.insert(name.clone(), i);
            names.push(name);
        }
        let shape = [batch, config.in_channels, h, w];
        let x0 = ctx.zeros(&shape)?;
        let timesteps = ctx.zeros(&[batch])?;
        let class_labels = match config.num_class_embeds {
            Some(_) => Some(ctx.zeros(&[batch])?),
            None => None,
        };
        let coef = ctx.zeros(&[batch, 2])?;
        let noise = ctx.zeros(&shape)?;
        let x_t = ctx.zeros(&shape)?;
        let target = ctx.zeros(&shape)?;
        let mut b = Builder {
            ctx,
            cfg: config,
            index,
            params,
            program: Program::new(),
            tape: Vec::new(),
            dropout_ops: Vec::new(),
            flops: 0,
            activation_bytes: 0,
            n: batch,
        };
        let noise_op = if gpu_noise {
            Some(NoiseOp::record(ctx, &mut b.program, &noise)?)
        } else {
            None
        };
        let q = QSampleOp::record(
            ctx,
            &mut b.program,
            &x0,
            &noise,
            &coef,
            &x_t,
            &target,
            prediction,
        )?;
        drop(q);
        let pred = b.forward(&x_t, &timesteps, class_labels.as_ref())?;
        if pred.shape != target.shape {
            return Err(Error::config(format!(
                "the model outputs {:?} but the target is {:?} (out_channels must equal in_channels)",
                pred.shape, target.shape
            )));
        }
        let loss = ctx.zeros(&[1])?;
        let dpred = ctx.zeros(&pred.shape)?;
        let partials = ctx.zeros(&[mse_partials_len(pred.numel())])?;
        mse_loss(
            ctx,
            &mut b.program,
            &pred,
            &target,
            &dpred,
            &loss,
            &partials,
        )?;
        let forward = std::mem::take(&mut b.program);

        // Backward, from the tape in reverse.
        let grads: Vec<Tensor> = b
            .params
            .iter()
            .map(|p| ctx.zeros(&p.shape))
            .collect::<Result<_>>()?;
        let mut g = Grads {
            map: HashMap::new(),
            bytes: 0,
        };
        g.map.insert(key(&pred), (dpred, true));
        let tape = std::mem::take(&mut b.tape);
        for op in tape.iter().rev() {
            b.backward(op, &mut g, &grads)?;
        }
        let backward = std::mem::take(&mut b.program);
        ctx.check()?;
        Ok(TrainGraph {
            config: config.clone(),
            batch,
            names,
            params: b.params,
            grads,
            x0,
            timesteps,
            class_labels,
            coef,
            noise,
            x_t,
            target,
            pred,
            loss,
            noise_op,
            dropout_ops: b.dropout_ops,
            forward,
            backward,
            flops_forward: b.flops,
            activation_bytes: b.activation_bytes + g.bytes,
        })
    }

    /// The recorded forward pass (noise, q_sample, U-Net, loss).
    pub fn forward_program(&self) -> &Program {
        &self.forward
    }

    /// The recorded backward pass (writes `grads`).
    pub fn backward_program(&self) -> &Program {
        &self.backward
    }

    /// Seed the step's noise ε and dropout masks (Philox stream per step).
    pub fn set_noise(&self, ctx: &GpuContext, seed: u64, step: u64) {
        let stream = (step as u32).wrapping_mul(2).wrapping_add(1);
        if let Some(op) = &self.noise_op {
            op.set(ctx, seed, stream);
        }
        for (i, d) in self.dropout_ops.iter().enumerate() {
            d.set(ctx, seed ^ 0xD0D0_0000 ^ i as u64, stream);
        }
    }
}

impl Builder<'_> {
    fn p(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::weights(format!("missing tensor {name}")))
    }

    fn alloc(&mut self, shape: &[usize]) -> Result<Tensor> {
        let t = self.ctx.zeros(shape)?;
        self.activation_bytes += t.bytes();
        Ok(t)
    }

    fn linear(&mut self, x: &Tensor, prefix: &str, need_dx: bool) -> Result<Tensor> {
        let (w, b) = (
            self.p(&format!("{prefix}.weight"))?,
            self.p(&format!("{prefix}.bias"))?,
        );
        let (wt, bt) = (self.params[w].clone(), self.params[b].clone());
        let out = self.alloc(&[x.shape[0], wt.shape[0]])?;
        linear(self.ctx, &mut self.program, x, &wt, Some(&bt), &out)?;
        self.flops += 2 * (x.shape[0] * wt.shape[0] * wt.shape[1]) as u64;
        self.tape.push(Tape::Linear {
            x: x.clone(),
            w,
            b,
            out: out.clone(),
            need_dx,
        });
        Ok(out)
    }

    fn silu(&mut self, x: &Tensor) -> Result<Tensor> {
        let out = self.alloc(&x.shape)?;
        silu(self.ctx, &mut self.program, x, &out)?;
        self.tape.push(Tape::Silu {
            x: x.clone(),
            out: out.clone(),
        });
        Ok(out)
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
        scale: f32,
        need_dx: bool,
    ) -> Result<Tensor> {
        let (w, b) = (
            self.p(&format!("{prefix}.weight"))?,
            self.p(&format!("{prefix}.bias"))?,
        );
        let (wt, bt) = (self.params[w].clone(), self.params[b].clone());
        let [n, _, h, wd] = nchw(x)?;
        let [cout, cin, kh, kw] = nchw(&wt)?;
        let ho = (h + padding[0] + padding[2] - kh) / stride + 1;
        let wo = (wd + padding[1] + padding[3] - kw) / stride + 1;
        let out = self.alloc(&[n, cout, ho, wo])?;
        conv2d(
            self.ctx,
            &mut self.program,
            &Conv2dArgs {
                x,
                weight: &wt,
                bias: Some(&bt),
                channel_bias,
                residual,
                out: &out,
                stride,
                padding,
                out_scale: scale,
            },
        )?;
        self.flops += 2 * (n * cout * ho * wo * cin * kh * kw) as u64;
        self.tape.push(Tape::Conv {
            x: x.clone(),
            w,
            b,
            out: out.clone(),
            stride,
            padding,
            scale,
            channel_bias: channel_bias.cloned(),
            residual: residual.cloned(),
            need_dx,
        });
        Ok(out)
    }

    fn group_norm(
        &mut self,
        x: &Tensor,
        prefix: &str,
        groups: usize,
        silu: bool,
    ) -> Result<Tensor> {
        let (gamma, beta) = (
            self.p(&format!("{prefix}.weight"))?,
            self.p(&format!("{prefix}.bias"))?,
        );
        let out = self.alloc(&x.shape)?;
        group_norm(
            self.ctx,
            &mut self.program,
            x,
            &self.params[gamma].clone(),
            &self.params[beta].clone(),
            &out,
            groups,
            self.cfg.norm_eps as f32,
            silu,
        )?;
        self.tape.push(Tape::GroupNorm {
            x: x.clone(),
            gamma,
            beta,
            out: out.clone(),
            groups,
            silu,
        });
        Ok(out)
    }

    fn project(
        &mut self,
        x: &Tensor,
        prefix: &str,
        residual: Option<&Tensor>,
        scale: f32,
    ) -> Result<Tensor> {
        let [n, c, h, w] = nchw(x)?;
        let hw = h * w;
        let (wi, bi) = (
            self.p(&format!("{prefix}.weight"))?,
            self.p(&format!("{prefix}.bias"))?,
        );
        let (wt, bt) = (self.params[wi].clone(), self.params[bi].clone());
        let cout = wt.shape[0];
        let out = self.alloc(&[n, cout, h, w])?;
        matmul(
            self.ctx,
            &mut self.program,
            &MatmulArgs {
                a: &wt,
                b: x,
                out: &out,
                bias: Some(&bt),
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
                out_scale: scale,
                accumulate: false,
            },
        )?;
        self.flops += 2 * (n * cout * hw * c) as u64;
        self.tape.push(Tape::Project {
            x: x.clone(),
            w: wi,
            b: bi,
            out: out.clone(),
            residual: residual.cloned(),
            scale,
        });
        Ok(out)
    }

    fn resnet(
        &mut self,
        x: &Tensor,
        temb_act: &Tensor,
        prefix: &str,
        out_scale_factor: f64,
    ) -> Result<Tensor> {
        let groups = self.cfg.norm_num_groups;
        let h = self.group_norm(x, &format!("{prefix}.norm1"), groups, true)?;
        let t = self.linear(temb_act, &format!("{prefix}.time_emb_proj"), true)?;
        let h1 = self.conv(
            &h,
            &format!("{prefix}.conv1"),
            1,
            [1; 4],
            Some(&t),
            None,
            1.0,
            true,
        )?;
        let mut h2 = self.group_norm(&h1, &format!("{prefix}.norm2"), groups, true)?;
        if self.cfg.dropout > 0.0 {
            let out = self.alloc(&h2.shape)?;
            let op = DropoutOp::record(
                self.ctx,
                &mut self.program,
                &h2,
                &out,
                self.cfg.dropout as f32,
            )?;
            self.dropout_ops.push(op);
            self.tape.push(Tape::Dropout {
                op: self.dropout_ops.len() - 1,
                x: h2.clone(),
                out: out.clone(),
            });
            h2 = out;
        }
        let shortcut = if self
            .index
            .contains_key(&format!("{prefix}.conv_shortcut.weight"))
        {
            self.conv(
                x,
                &format!("{prefix}.conv_shortcut"),
                1,
                [0; 4],
                None,
                None,
                1.0,
                true,
            )?
        } else {
            x.clone()
        };
        self.conv(
            &h2,
            &format!("{prefix}.conv2"),
            1,
            [1; 4],
            None,
            Some(&shortcut),
            (1.0 / out_scale_factor) as f32,
            true,
        )
    }

    fn attention(
        &mut self,
        x: &Tensor,
        prefix: &str,
        groups: usize,
        rescale: f64,
    ) -> Result<Tensor> {
        let [n, c, h, w] = nchw(x)?;
        let hw = h * w;
        let heads = self.cfg.heads(c);
        let d = c / heads;
        let bh = n * heads;
        let hn = self.group_norm(x, &format!("{prefix}.group_norm"), groups, false)?;
        let q = self.project(&hn, &format!("{prefix}.to_q"), None, 1.0)?;
        let k = self.project(&hn, &format!("{prefix}.to_k"), None, 1.0)?;
        let v = self.project(&hn, &format!("{prefix}.to_v"), None, 1.0)?;
        let alpha = (1.0 / (d as f64).sqrt()) as f32;
        let probs = self.alloc(&[bh, hw, hw])?;
        self.gemm(
            &q,
            &k,
            &probs,
            bh,
            hw,
            hw,
            d,
            [d * hw, 1, hw],
            [d * hw, hw, 1],
            [hw * hw, hw, 1],
            alpha,
            false,
        )?;
        softmax_rows(self.ctx, &mut self.program, &probs, hw)?;
        let o = self.alloc(&[n, c, h, w])?;
        self.gemm(
            &probs,
            &v,
            &o,
            bh,
            hw,
            d,
            hw,
            [hw * hw, hw, 1],
            [d * hw, 1, hw],
            [d * hw, 1, hw],
            1.0,
            false,
        )?;
        self.flops += 4 * (bh * hw * hw * d) as u64;
        self.tape.push(Tape::AttentionCore {
            q,
            k,
            v,
            probs,
            o: o.clone(),
            heads,
            alpha,
        });
        self.project(
            &o,
            &format!("{prefix}.to_out.0"),
            Some(x),
            (1.0 / rescale) as f32,
        )
    }

    /// out[b] = alpha · A[b]·B[b] (+ out) with explicit element strides.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        a: &Tensor,
        b: &Tensor,
        out: &Tensor,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a_strides: [usize; 3],
        b_strides: [usize; 3],
        out_strides: [usize; 3],
        alpha: f32,
        accumulate: bool,
    ) -> Result<()> {
        matmul(
            self.ctx,
            &mut self.program,
            &MatmulArgs {
                a,
                b,
                out,
                bias: None,
                bias_along: BiasAlong::N,
                residual: None,
                batch,
                m,
                n,
                k,
                a_strides,
                b_strides,
                out_strides,
                alpha,
                out_scale: 1.0,
                accumulate,
            },
        )
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
        let t_proj = self.alloc(&[n, boc[0]])?;
        timestep_embedding(
            self.ctx,
            &mut self.program,
            timesteps,
            &t_proj,
            cfg.flip_sin_to_cos,
            cfg.freq_shift as f32,
        )?;
        let e1 = self.linear(&t_proj, "time_embedding.linear_1", false)?;
        let e1_act = self.silu(&e1)?;
        let emb = self.linear(&e1_act, "time_embedding.linear_2", true)?;
        if let Some(labels) = class_labels {
            let table = self.p("class_embedding.weight")?;
            add_class_embedding(
                self.ctx,
                &mut self.program,
                labels,
                &self.params[table].clone(),
                &emb,
            )?;
            self.tape.push(Tape::ClassEmbedding {
                labels: labels.clone(),
                emb: emb.clone(),
                table,
            });
        }
        let temb_act = self.silu(&emb)?;
        if cfg.center_input_sample {
            return Err(Error::config(
                "training with center_input_sample is not supported",
            ));
        }
        let mut x = self.conv(sample, "conv_in", 1, [1; 4], None, None, 1.0, false)?;
        let mut skips = vec![x.clone()];
        let nblocks = boc.len();
        for i in 0..nblocks {
            for j in 0..cfg.layers_per_block {
                x = self.resnet(&x, &temb_act, &format!("down_blocks.{i}.resnets.{j}"), 1.0)?;
                if cfg.down_block_types[i].has_attention() {
                    x = self.attention(
                        &x,
                        &format!("down_blocks.{i}.attentions.{j}"),
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
                    true,
                )?;
                skips.push(x.clone());
            }
        }
        let scale = cfg.mid_block_scale_factor;
        x = self.resnet(&x, &temb_act, "mid_block.resnets.0", scale)?;
        if cfg.add_attention {
            x = self.attention(&x, "mid_block.attentions.0", cfg.attn_groups(), scale)?;
        }
        x = self.resnet(&x, &temb_act, "mid_block.resnets.1", scale)?;
        for i in 0..nblocks {
            for j in 0..cfg.layers_per_block + 1 {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::config("skip connections do not match"))?;
                let [_, c1, h, w] = nchw(&x)?;
                let [_, c2, ..] = nchw(&skip)?;
                let cat = self.alloc(&[n, c1 + c2, h, w])?;
                concat_channels(self.ctx, &mut self.program, &x, &skip, &cat)?;
                self.tape.push(Tape::Concat {
                    a: x.clone(),
                    b: skip.clone(),
                    out: cat.clone(),
                });
                x = self.resnet(&cat, &temb_act, &format!("up_blocks.{i}.resnets.{j}"), 1.0)?;
                if cfg.up_block_types[i].has_attention() {
                    x = self.attention(
                        &x,
                        &format!("up_blocks.{i}.attentions.{j}"),
                        cfg.norm_num_groups,
                        1.0,
                    )?;
                }
            }
            if i + 1 < nblocks {
                let [_, c, h, w] = nchw(&x)?;
                let up = self.alloc(&[n, c, 2 * h, 2 * w])?;
                upsample_nearest2x(self.ctx, &mut self.program, &x, &up)?;
                self.tape.push(Tape::Upsample {
                    x: x.clone(),
                    out: up.clone(),
                });
                x = self.conv(
                    &up,
                    &format!("up_blocks.{i}.upsamplers.0.conv"),
                    1,
                    [1; 4],
                    None,
                    None,
                    1.0,
                    true,
                )?;
            }
        }
        let hn = self.group_norm(&x, "conv_norm_out", cfg.norm_num_groups, true)?;
        self.conv(&hn, "conv_out", 1, [1; 4], None, None, 1.0, true)
    }

    fn backward(&mut self, op: &Tape, g: &mut Grads, grads: &[Tensor]) -> Result<()> {
        let ctx = self.ctx;
        match op {
            Tape::Linear {
                x,
                w,
                b,
                out,
                need_dx,
            } => {
                let dout = g.get(out)?;
                let (m, k) = (x.shape[0], x.shape[1]);
                let nout = out.shape[1];
                // dW[o, i] = Σ_b dout[b, o] x[b, i]
                self.gemm(
                    &dout,
                    x,
                    &grads[*w],
                    1,
                    nout,
                    k,
                    m,
                    [0, 1, nout],
                    [0, k, 1],
                    [0, k, 1],
                    1.0,
                    false,
                )?;
                sum_axes(
                    ctx,
                    &mut self.program,
                    &dout,
                    [m, nout, 1],
                    &grads[*b],
                    1.0,
                    false,
                )?;
                if *need_dx {
                    let (dx, acc) = g.out(ctx, x)?;
                    let wt = self.params[*w].clone();
                    // dx[b, i] = Σ_o dout[b, o] W[o, i]
                    self.gemm(
                        &dout,
                        &wt,
                        &dx,
                        1,
                        m,
                        k,
                        nout,
                        [0, nout, 1],
                        [0, k, 1],
                        [0, k, 1],
                        1.0,
                        acc,
                    )?;
                }
            }
            Tape::Silu { x, out } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                silu_backward(ctx, &mut self.program, x, &dout, &dx, acc)?;
            }
            Tape::ClassEmbedding { labels, emb, table } => {
                // The add was in place: d(emb before) = d(emb after), which stays where it is.
                let demb = g.get(emb)?;
                add_class_embedding_backward(
                    ctx,
                    &mut self.program,
                    labels,
                    &demb,
                    &grads[*table],
                )?;
            }
            Tape::Conv {
                x,
                w,
                b,
                out,
                stride,
                padding,
                scale,
                channel_bias,
                residual,
                need_dx,
            } => {
                let dout = g.get(out)?;
                let [n, cout, ho, wo] = nchw(out)?;
                let wt = self.params[*w].clone();
                conv2d_backward_weight(
                    ctx,
                    &mut self.program,
                    x,
                    &dout,
                    &grads[*w],
                    *stride,
                    *padding,
                    *scale,
                    false,
                )?;
                sum_axes(
                    ctx,
                    &mut self.program,
                    &dout,
                    [n, cout, ho * wo],
                    &grads[*b],
                    *scale,
                    false,
                )?;
                if let Some(cb) = channel_bias {
                    let (dcb, acc) = g.out(ctx, cb)?;
                    sum_axes(
                        ctx,
                        &mut self.program,
                        &dout,
                        [1, n * cout, ho * wo],
                        &dcb.reshaped(&[n * cout])?,
                        *scale,
                        acc,
                    )?;
                }
                if let Some(r) = residual {
                    let (dr, acc) = g.out(ctx, r)?;
                    if acc {
                        accumulate_scaled(ctx, &mut self.program, &dout, &dr, *scale)?;
                    } else {
                        copy_scaled(ctx, &mut self.program, &dout, &dr, *scale)?;
                    }
                }
                if *need_dx {
                    let (dx, acc) = g.out(ctx, x)?;
                    conv2d_backward_input(
                        ctx,
                        &mut self.program,
                        &dout,
                        &wt,
                        &dx,
                        *stride,
                        *padding,
                        *scale,
                        acc,
                    )?;
                }
            }
            Tape::GroupNorm {
                x,
                gamma,
                beta,
                out,
                groups,
                silu,
            } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                let [n, c, ..] = nchw(x)?;
                let scratch = ctx.zeros(&group_norm_backward_scratch_shape(n, c))?;
                g.bytes += scratch.bytes();
                group_norm_backward(
                    ctx,
                    &mut self.program,
                    x,
                    &self.params[*gamma].clone(),
                    &self.params[*beta].clone(),
                    &dout,
                    &dx,
                    &grads[*gamma],
                    &grads[*beta],
                    *groups,
                    self.cfg.norm_eps as f32,
                    *silu,
                    acc,
                    &scratch,
                )?;
            }
            Tape::Project {
                x,
                w,
                b,
                out,
                residual,
                scale,
            } => {
                let dout = g.get(out)?;
                let [n, cout, h, wd] = nchw(out)?;
                let cin = x.shape[1];
                let w4 = self.params[*w].reshaped(&[cout, cin, 1, 1])?;
                conv2d_backward_weight(
                    ctx,
                    &mut self.program,
                    x,
                    &dout,
                    &grads[*w].reshaped(&[cout, cin, 1, 1])?,
                    1,
                    [0; 4],
                    *scale,
                    false,
                )?;
                sum_axes(
                    ctx,
                    &mut self.program,
                    &dout,
                    [n, cout, h * wd],
                    &grads[*b],
                    *scale,
                    false,
                )?;
                if let Some(r) = residual {
                    let (dr, acc) = g.out(ctx, r)?;
                    if acc {
                        accumulate_scaled(ctx, &mut self.program, &dout, &dr, *scale)?;
                    } else {
                        copy_scaled(ctx, &mut self.program, &dout, &dr, *scale)?;
                    }
                }
                let (dx, acc) = g.out(ctx, x)?;
                conv2d_backward_input(
                    ctx,
                    &mut self.program,
                    &dout,
                    &w4,
                    &dx,
                    1,
                    [0; 4],
                    *scale,
                    acc,
                )?;
            }
            Tape::AttentionCore {
                q,
                k,
                v,
                probs,
                o,
                heads,
                alpha,
            } => {
                let d_o = g.get(o)?;
                let [n, c, h, w] = nchw(o)?;
                let hw = h * w;
                let d = c / heads;
                let bh = n * heads;
                // dP[b,i,j] = Σ_dd dO[b,dd,i] v[b,dd,j]
                let dp = ctx.zeros(&[bh, hw, hw])?;
                g.bytes += dp.bytes();
                self.gemm(
                    &d_o,
                    v,
                    &dp,
                    bh,
                    hw,
                    hw,
                    d,
                    [d * hw, 1, hw],
                    [d * hw, hw, 1],
                    [hw * hw, hw, 1],
                    1.0,
                    false,
                )?;
                // dv[b,dd,j] = Σ_i dO[b,dd,i] P[b,i,j]
                let (dv, acc) = g.out(ctx, v)?;
                self.gemm(
                    &d_o,
                    probs,
                    &dv,
                    bh,
                    d,
                    hw,
                    hw,
                    [d * hw, hw, 1],
                    [hw * hw, hw, 1],
                    [d * hw, hw, 1],
                    1.0,
                    acc,
                )?;
                softmax_rows_backward(ctx, &mut self.program, probs, &dp, hw)?;
                // dq[b,dd,i] = α Σ_j k[b,dd,j] dS[b,i,j]
                let (dq, acc) = g.out(ctx, q)?;
                self.gemm(
                    k,
                    &dp,
                    &dq,
                    bh,
                    d,
                    hw,
                    hw,
                    [d * hw, hw, 1],
                    [hw * hw, 1, hw],
                    [d * hw, hw, 1],
                    *alpha,
                    acc,
                )?;
                // dk[b,dd,j] = α Σ_i q[b,dd,i] dS[b,i,j]
                let (dk, acc) = g.out(ctx, k)?;
                self.gemm(
                    q,
                    &dp,
                    &dk,
                    bh,
                    d,
                    hw,
                    hw,
                    [d * hw, hw, 1],
                    [hw * hw, hw, 1],
                    [d * hw, hw, 1],
                    *alpha,
                    acc,
                )?;
            }
            Tape::Concat { a, b, out } => {
                let dcat = g.get(out)?;
                let (da, acc_a) = g.out(ctx, a)?;
                let (db, acc_b) = g.out(ctx, b)?;
                concat_channels_backward(ctx, &mut self.program, &dcat, &da, &db, acc_a, acc_b)?;
            }
            Tape::Upsample { x, out } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                upsample_nearest2x_backward(ctx, &mut self.program, &dout, &dx, acc)?;
            }
            Tape::Dropout { op, x, out } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                self.dropout_ops[*op].record_backward(ctx, &mut self.program, &dout, &dx, acc)?;
            }
        }
        Ok(())
    }
}

fn nchw(t: &Tensor) -> Result<[usize; 4]> {
    crate::ops::elementwise::nchw(t, "train")
}
