//! The U-Net's training step as two recorded programs: a forward pass that keeps every
//! activation its backward needs, and a backward pass recorded from a tape of the forward's
//! ops, in reverse. The forward is the network described once in [`crate::unet::structure`],
//! recorded by this module's training builder; the ops it records are the tape. Gradients of
//! activations that are consumed more than once (the ResNet input by norm1 and the shortcut,
//! skip connections, the shared time embedding) are summed: the first backward op to write
//! a gradient overwrites it, later ones accumulate.
//!
//! Loss: L_simple = ‖target − model(x_t, t)‖² averaged over elements (paper eq. 14), with
//! x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4) and target ε (or v, or x_0, per `prediction_type`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::diffusion::schedule::PredictionType;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, PackLayout, Packed, Program, Tensor};
use crate::model::config::UNetConfig;
use crate::model::weights::Weights;
use crate::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight};
use crate::ops::dropout::DropoutOp;
use crate::ops::elementwise_backward::{
    accumulate_scaled, concat_channels_backward, copy_scaled, silu_backward,
    upsample_nearest2x_backward,
};
use crate::ops::embedding_backward::add_class_embedding_backward;
use crate::ops::group_norm_backward::{group_norm_backward, GroupNormStats};
use crate::ops::loss::{mse_loss, mse_partials_len, weighted_mse_loss, QSampleOp};
use crate::ops::matmul::{matmul, BiasAlong, MatmulArgs};
use crate::ops::noise::NoiseOp;
use crate::ops::reduce::sum_axes;
use crate::ops::softmax_backward::softmax_rows_backward;
use crate::unet::structure::{self, Builder, Op, Params, Recording};

/// Where the parameters and their gradients live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamStorage {
    /// Views into a few packed buffers (one layout for parameters and gradients), which
    /// the optimizer updates a whole pack per dispatch (`ops::optim::PackedAdamWOp`).
    Packed,
    /// A buffer per tensor, updated by the per-tensor optimizer ops (the path before the
    /// packed optimizer; kept to compare the two).
    PerTensor,
}

/// The packed buffers of [`ParamStorage::Packed`].
pub struct PackedParams {
    pub layout: PackLayout,
    pub params: Packed,
    pub grads: Packed,
}

/// Planned buffers and programs for one training step of one model at one batch size.
pub struct TrainGraph {
    pub config: UNetConfig,
    pub batch: usize,
    /// Parameter names (diffusers order), their tensors, gradients (views into
    /// [`packed`](Self::packed)'s buffers when there is one).
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    pub grads: Vec<Tensor>,
    pub packed: Option<PackedParams>,
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
    /// Per-sample loss weights (N), written by the trainer each step (min-SNR-γ); None for
    /// the plain L_simple.
    pub loss_weights: Option<Tensor>,
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

/// The training builder: every activation gets its own buffer and is kept; the recorded
/// ops are the tape the backward pass is recorded from, in reverse.
struct Training<'a> {
    rec: Recording<'a>,
    tape: Vec<Op>,
    dropout_ops: Vec<DropoutOp>,
    activation_bytes: u64,
    /// Buffers written by a recorded op: only these get gradients (the U-Net's input and
    /// the sinusoidal timestep projection are constants).
    differentiable: HashSet<usize>,
}

impl<'a> Builder<'a> for Training<'a> {
    fn rec(&mut self) -> &mut Recording<'a> {
        &mut self.rec
    }

    fn alloc(&mut self, shape: &[usize]) -> Result<Tensor> {
        let t = self.rec.ctx.zeros(shape)?;
        self.activation_bytes += t.bytes();
        Ok(t)
    }

    /// Nothing is released: the backward pass reads the forward's activations.
    fn release(&mut self, _t: Tensor) {}

    fn record(&mut self, op: Op) {
        self.differentiable.insert(key(op.output()));
        self.tape.push(op);
    }

    /// Group norm saves its statistics for the backward (which uses the buffer as its
    /// scratch too).
    fn group_norm_saved(&mut self, len: usize) -> Result<Option<Tensor>> {
        self.alloc(&[len]).map(Some)
    }

    fn dropout(&mut self, x: Tensor, p: f32) -> Result<Tensor> {
        let out = self.alloc(&x.shape)?;
        let op = DropoutOp::record(self.rec.ctx, &mut self.rec.program, &x, &out, p)?;
        self.dropout_ops.push(op);
        self.record(Op::Dropout {
            mask: self.dropout_ops.len() - 1,
            x,
            out: out.clone(),
        });
        Ok(out)
    }
}

impl TrainGraph {
    /// The plain L_simple (eq. 14): every sample weighs 1.
    pub fn new(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        batch: usize,
        prediction: PredictionType,
        gpu_noise: bool,
    ) -> Result<Self> {
        Self::with_options(
            ctx,
            config,
            weights,
            batch,
            prediction,
            gpu_noise,
            false,
            ParamStorage::Packed,
        )
    }

    /// The general constructor. With `loss_weights`, the loss is weighted per sample by
    /// [`TrainGraph::loss_weights`] (initially 1), which the caller rewrites before each step;
    /// `storage` says how the parameters (and gradients) are stored.
    #[allow(clippy::too_many_arguments)]
    pub fn with_options(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        batch: usize,
        prediction: PredictionType,
        gpu_noise: bool,
        loss_weights: bool,
        storage: ParamStorage,
    ) -> Result<Self> {
        if batch == 0 {
            return Err(Error::shape("the batch size must be at least 1"));
        }
        if config.center_input_sample {
            return Err(Error::config(
                "training with center_input_sample is not supported",
            ));
        }
        let [h, w] = config.sample_size;
        let (params, packed) = match storage {
            ParamStorage::PerTensor => (Params::upload(ctx, config, weights)?, None),
            ParamStorage::Packed => {
                let (params, layout, packed) = Params::upload_packed(ctx, config, weights)?;
                let grads = ctx.packed(&layout)?;
                (
                    params,
                    Some(PackedParams {
                        layout,
                        params: packed,
                        grads,
                    }),
                )
            }
        };
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
        let mut b = Training {
            rec: Recording::new(ctx, config, params),
            tape: Vec::new(),
            dropout_ops: Vec::new(),
            activation_bytes: 0,
            differentiable: HashSet::new(),
        };
        let noise_op = if gpu_noise {
            Some(NoiseOp::record(ctx, &mut b.rec.program, &noise)?)
        } else {
            None
        };
        let q = QSampleOp::record(
            ctx,
            &mut b.rec.program,
            &x0,
            &noise,
            &coef,
            &x_t,
            &target,
            prediction,
        )?;
        drop(q);
        let pred = structure::forward(&mut b, &x_t, &timesteps, class_labels.as_ref())?;
        if pred.shape != target.shape {
            return Err(Error::config(format!(
                "the model outputs {:?} but the target is {:?} (out_channels must equal in_channels)",
                pred.shape, target.shape
            )));
        }
        let loss = ctx.zeros(&[1])?;
        let dpred = ctx.zeros(&pred.shape)?;
        let partials = ctx.zeros(&[mse_partials_len(pred.numel())])?;
        let loss_weights = match loss_weights {
            true => Some(ctx.upload(&vec![1.0; batch], &[batch])?),
            false => None,
        };
        match &loss_weights {
            Some(w) => weighted_mse_loss(
                ctx,
                &mut b.rec.program,
                &pred,
                &target,
                w,
                &dpred,
                &loss,
                &partials,
            )?,
            None => mse_loss(
                ctx,
                &mut b.rec.program,
                &pred,
                &target,
                &dpred,
                &loss,
                &partials,
            )?,
        }
        let forward = std::mem::take(&mut b.rec.program);

        // Backward, from the tape in reverse.
        let grads: Vec<Tensor> = match &packed {
            Some(p) => p.grads.views.clone(),
            None => b
                .rec
                .params
                .tensors
                .iter()
                .map(|p| ctx.zeros(&p.shape))
                .collect::<Result<_>>()?,
        };
        let mut g = Grads {
            map: HashMap::new(),
            bytes: 0,
        };
        g.map.insert(key(&pred), (dpred, true));
        let tape = std::mem::take(&mut b.tape);
        for op in tape.iter().rev() {
            b.backward(op, &mut g, &grads)?;
        }
        let backward = std::mem::take(&mut b.rec.program);
        ctx.check()?;
        Ok(TrainGraph {
            config: config.clone(),
            batch,
            names: b.rec.params.names,
            params: b.rec.params.tensors,
            grads,
            packed,
            x0,
            timesteps,
            class_labels,
            coef,
            noise,
            x_t,
            target,
            pred,
            loss,
            loss_weights,
            noise_op,
            dropout_ops: b.dropout_ops,
            forward,
            backward,
            flops_forward: b.rec.flops,
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

impl Training<'_> {
    fn differentiable(&self, t: &Tensor) -> bool {
        self.differentiable.contains(&key(t))
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
            self.rec.ctx,
            &mut self.rec.program,
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

    /// The backward of out = (conv(x, W) + b + channel_bias + residual) · scale: dW, db, then
    /// the gradients of channel_bias, residual and x (x only if it is differentiable).
    /// `params` is (W, dW, db).
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &mut self,
        g: &mut Grads,
        x: &Tensor,
        params: (&Tensor, &Tensor, &Tensor),
        out: &Tensor,
        stride: usize,
        padding: [usize; 4],
        scale: f32,
        channel_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<()> {
        let (weight, dweight, dbias) = params;
        let ctx = self.rec.ctx;
        let program = &mut self.rec.program;
        let dout = g.get(out)?;
        let [n, cout, ho, wo] = nchw(out)?;
        conv2d_backward_weight(
            ctx, program, x, &dout, dweight, stride, padding, scale, false,
        )?;
        sum_axes(ctx, program, &dout, [n, cout, ho * wo], dbias, scale, false)?;
        if let Some(cb) = channel_bias {
            let (dcb, acc) = g.out(ctx, cb)?;
            let dcb = dcb.reshaped(&[n * cout])?;
            sum_axes(
                ctx,
                program,
                &dout,
                [1, n * cout, ho * wo],
                &dcb,
                scale,
                acc,
            )?;
        }
        if let Some(r) = residual {
            if scale == 1.0 && key(r) != key(x) && !g.map.contains_key(&key(r)) {
                // d(residual) = dout exactly: the residual's gradient takes dout's buffer
                // instead of a copy (dout is read by this op's backward only, all recorded
                // above and below; later writers of the residual's gradient accumulate).
                g.map.insert(key(r), (dout.clone(), true));
            } else {
                let (dr, acc) = g.out(ctx, r)?;
                if acc {
                    accumulate_scaled(ctx, program, &dout, &dr, scale)?;
                } else {
                    copy_scaled(ctx, program, &dout, &dr, scale)?;
                }
            }
        }
        if self.differentiable.contains(&key(x)) {
            let (dx, acc) = g.out(ctx, x)?;
            conv2d_backward_input(
                ctx, program, &dout, weight, &dx, stride, padding, scale, acc,
            )?;
        }
        Ok(())
    }

    fn backward(&mut self, op: &Op, g: &mut Grads, grads: &[Tensor]) -> Result<()> {
        let ctx = self.rec.ctx;
        match op {
            Op::Linear {
                x,
                weight: w,
                bias: b,
                out,
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
                    &mut self.rec.program,
                    &dout,
                    [m, nout, 1],
                    &grads[*b],
                    1.0,
                    false,
                )?;
                if self.differentiable(x) {
                    let (dx, acc) = g.out(ctx, x)?;
                    let wt = self.rec.params.tensors[*w].clone();
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
            Op::Silu { x, out } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                silu_backward(ctx, &mut self.rec.program, x, &dout, &dx, acc)?;
            }
            Op::ClassEmbedding { labels, emb, table } => {
                // The add was in place: d(emb before) = d(emb after), which stays where it is.
                let demb = g.get(emb)?;
                add_class_embedding_backward(
                    ctx,
                    &mut self.rec.program,
                    labels,
                    &demb,
                    &grads[*table],
                )?;
            }
            Op::Conv {
                x,
                weight: w,
                bias: b,
                out,
                stride,
                padding,
                scale,
                channel_bias,
                residual,
            } => {
                let weight = self.rec.params.tensors[*w].clone();
                self.conv_backward(
                    g,
                    x,
                    (&weight, &grads[*w], &grads[*b]),
                    out,
                    *stride,
                    *padding,
                    *scale,
                    channel_bias.as_ref(),
                    residual.as_ref(),
                )?;
            }
            Op::GroupNorm {
                x,
                gamma,
                beta,
                out,
                groups,
                silu,
                saved,
            } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                let gamma_t = self.rec.params.tensors[*gamma].clone();
                let beta_t = self.rec.params.tensors[*beta].clone();
                let eps = self.rec.cfg.norm_eps as f32;
                let program = &mut self.rec.program;
                // The training builder always saves the statistics.
                let saved = saved.as_ref().ok_or_else(|| {
                    Error::Other("internal: group norm recorded without saved statistics".into())
                })?;
                group_norm_backward(
                    ctx,
                    program,
                    x,
                    &gamma_t,
                    &beta_t,
                    &dout,
                    &dx,
                    &grads[*gamma],
                    &grads[*beta],
                    *groups,
                    eps,
                    *silu,
                    acc,
                    GroupNormStats::Saved(saved),
                )?;
            }
            Op::Project {
                x,
                weight: w,
                bias: b,
                out,
                residual,
                scale,
            } => {
                // A 1×1 conv with a (C_out, C_in) weight.
                let (cout, cin) = (out.shape[1], x.shape[1]);
                let weight = self.rec.params.tensors[*w].reshaped(&[cout, cin, 1, 1])?;
                let dweight = grads[*w].reshaped(&[cout, cin, 1, 1])?;
                self.conv_backward(
                    g,
                    x,
                    (&weight, &dweight, &grads[*b]),
                    out,
                    1,
                    [0; 4],
                    *scale,
                    None,
                    residual.as_ref(),
                )?;
            }
            Op::AttentionMix {
                probs,
                v,
                out,
                heads,
            } => {
                let d_o = g.get(out)?;
                let [n, c, h, w] = nchw(out)?;
                let (hw, d, bh) = (h * w, c / heads, n * heads);
                // dP[b,i,j] = Σ_dd dO[b,dd,i] v[b,dd,j]
                let (dp, acc) = g.out(ctx, probs)?;
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
                    acc,
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
            }
            Op::AttentionScores {
                q,
                k,
                probs,
                heads,
                alpha,
            } => {
                // dP becomes dS (the gradient of the pre-softmax scores) in place.
                let ds = g.get(probs)?;
                let [n, c, h, w] = nchw(q)?;
                let (hw, d, bh) = (h * w, c / heads, n * heads);
                softmax_rows_backward(ctx, &mut self.rec.program, probs, &ds, hw)?;
                // dq[b,dd,i] = α Σ_j k[b,dd,j] dS[b,i,j]
                let (dq, acc) = g.out(ctx, q)?;
                self.gemm(
                    k,
                    &ds,
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
                    &ds,
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
            Op::Concat { a, b, out } => {
                let dcat = g.get(out)?;
                let (da, acc_a) = g.out(ctx, a)?;
                let (db, acc_b) = g.out(ctx, b)?;
                concat_channels_backward(
                    ctx,
                    &mut self.rec.program,
                    &dcat,
                    &da,
                    &db,
                    acc_a,
                    acc_b,
                )?;
            }
            Op::Upsample { x, out } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                upsample_nearest2x_backward(ctx, &mut self.rec.program, &dout, &dx, acc)?;
            }
            Op::Dropout { mask, x, out } => {
                let dout = g.get(out)?;
                let (dx, acc) = g.out(ctx, x)?;
                self.dropout_ops[*mask].record_backward(
                    ctx,
                    &mut self.rec.program,
                    &dout,
                    &dx,
                    acc,
                )?;
            }
        }
        Ok(())
    }
}

fn nchw(t: &Tensor) -> Result<[usize; 4]> {
    crate::ops::elementwise::nchw(t, "train")
}
