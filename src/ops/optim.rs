//! Optimizer kernels (`shaders/optim.wgsl`): the global gradient norm with its clip factor
//! (torch.nn.utils.clip_grad_norm_), fused AdamW (Loshchilov & Hutter 2019; torch.optim.AdamW)
//! and the EMA of the weights (diffusers' EMAModel). Everything stays on the GPU: the clip
//! factor reaches AdamW through a 2-float buffer, never through a CPU readback.
//!
//! [`GradNormOp`], [`AdamWOp`] and [`EmaOp`] record one dispatch per tensor. Element counts
//! come from `arrayLength` in the shader, so every tensor must own its whole buffer (as
//! [`GpuContext::zeros`] makes them); that lets one uniform buffer of per-step values serve
//! all tensors.
//!
//! [`PackedGradNormOp`] and [`PackedAdamWOp`] (`shaders/optim_packed.wgsl`) do the same over
//! tensors packed by a [`PackLayout`] (parameters, gradients, moments and EMA each in a few
//! buffers with one layout): one dispatch per pack and op, plus one to finalize the norm —
//! three per step for a model under 128 MiB of parameters — with results bit-identical to
//! the per-tensor ops (`packed_optimizer_is_bit_identical_to_per_tensor_ops`).

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, PackLayout, Params, Program, Tensor};
use crate::shaders::{OPTIM, OPTIM_PACKED};

/// Mirrors `Params` in optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct OptimParams {
    offset: u32,
    ema_rate: f32,
    _pad: [u32; 2],
    s0: f32,
    s1: f32,
    s2: f32,
    s3: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
}

const WORKGROUP: u64 = 256;
/// Elements per workgroup of the sum-of-squares pass (`CHUNK` in optim.wgsl).
const CHUNK: usize = 2048;

/// The shader reads element counts with `arrayLength`: the buffer must hold exactly the tensor.
fn check_whole_buffer(t: &Tensor, what: &str) -> Result<()> {
    if t.numel() == 0 || t.buffer.size() != t.bytes() {
        return Err(Error::shape(format!(
            "{what}: a tensor of shape {:?} in a {}-byte buffer; optimizer ops need non-empty \
             tensors that own their whole buffer",
            t.shape,
            t.buffer.size()
        )));
    }
    Ok(())
}

fn same_buffer(a: &Tensor, b: &Tensor) -> bool {
    std::sync::Arc::ptr_eq(&a.buffer, &b.buffer)
}

fn check_pair(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.shape != b.shape {
        return Err(Error::shape(format!(
            "{what}: shapes {:?} and {:?} differ",
            a.shape, b.shape
        )));
    }
    if same_buffer(a, b) {
        return Err(Error::shape(format!(
            "{what}: the two tensors share a buffer"
        )));
    }
    Ok(())
}

fn elementwise_grid(t: &Tensor) -> Result<[u32; 3]> {
    grid_1d((t.numel() as u64).div_ceil(WORKGROUP))
}

/// The global L2 norm of many gradient tensors and the clip factor derived from it.
pub struct GradNormOp {
    stats: Tensor,
    partials: Tensor,
}

impl GradNormOp {
    /// Record, for `grads`, a sum-of-squares pass per tensor into a scratch buffer of
    /// partial sums, then one reduction into [`stats`](Self::stats) = [norm, factor] with
    /// norm = ‖(g₁, …, gₙ)‖₂ and factor = min(1, max_norm / (norm + 1e-6)), as
    /// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (which scales every gradient by
    /// that factor). The reduction order is fixed, so the result is deterministic.
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        grads: &[&Tensor],
        max_norm: f32,
    ) -> Result<GradNormOp> {
        if max_norm.is_nan() || max_norm <= 0.0 {
            return Err(Error::config(format!(
                "max_grad_norm must be positive, got {max_norm}"
            )));
        }
        let mut offsets = Vec::with_capacity(grads.len());
        let mut total = 0usize;
        for (i, g) in grads.iter().enumerate() {
            check_whole_buffer(g, &format!("grad_norm: grads[{i}]"))?;
            offsets.push(total);
            total += g.numel().div_ceil(CHUNK);
        }
        let partials = ctx.zeros(&[total.max(1)])?;
        let stats = ctx.zeros(&[2])?;
        for (g, &offset) in grads.iter().zip(&offsets) {
            let params = OptimParams {
                offset: u32::try_from(offset)
                    .map_err(|_| Error::shape("grad_norm: too many gradient elements"))?,
                ..Default::default()
            };
            ctx.record(
                program,
                DispatchDesc {
                    label: "grad_sumsq",
                    shader: &OPTIM,
                    entry: "sumsq_partials",
                    constants: &[],
                    params: Params::Static(bytemuck::bytes_of(&params)),
                    inputs: &[&g.buffer, &g.buffer],
                    outputs: &[&partials.buffer],
                    workgroups: grid_1d(g.numel().div_ceil(CHUNK) as u64)?,
                },
            )?;
        }
        let params = OptimParams {
            offset: total as u32,
            s0: max_norm,
            ..Default::default()
        };
        ctx.record(
            program,
            DispatchDesc {
                label: "grad_norm_finalize",
                shader: &OPTIM,
                entry: "grad_norm_finalize",
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&params)),
                inputs: &[&partials.buffer, &partials.buffer],
                outputs: &[&stats.buffer],
                workgroups: [1, 1, 1],
            },
        )?;
        Ok(GradNormOp { stats, partials })
    }

    /// (2) = [global gradient norm, clip factor]; valid after the program ran.
    pub fn stats(&self) -> &Tensor {
        &self.stats
    }

    /// Number of partial sums in the scratch buffer.
    pub fn partials_len(&self) -> usize {
        self.partials.numel()
    }
}

/// AdamW hyperparameters that stay fixed over a run (the learning rate is per step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    /// `torch.optim.AdamW` defaults.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// The uniform values of AdamW step `step` (1-based) at rate `lr`; bias corrections in f64.
fn step_params(c: &AdamWConfig, step: u64, lr: f32, ema_rate: f32) -> Result<OptimParams> {
    if step == 0 {
        return Err(Error::config("adamw: steps are counted from 1"));
    }
    let (b1, b2, lr64) = (c.beta1 as f64, c.beta2 as f64, lr as f64);
    // powf: the step may exceed i32.
    let bc1 = 1.0 - b1.powf(step as f64);
    let bc2 = 1.0 - b2.powf(step as f64);
    Ok(OptimParams {
        s0: (1.0 - lr64 * c.weight_decay as f64) as f32,
        s1: (lr64 / bc1) as f32,
        s2: (1.0 / bc2.sqrt()) as f32,
        s3: c.eps,
        beta1: c.beta1,
        one_minus_beta1: (1.0 - b1) as f32,
        beta2: c.beta2,
        one_minus_beta2: (1.0 - b2) as f32,
        ema_rate,
        ..Default::default()
    })
}

/// Fused AdamW over many parameter tensors: one dispatch per tensor updates p, m and v.
pub struct AdamWOp {
    uniform: wgpu::Buffer,
    cfg: AdamWConfig,
    /// 1 − the EMA decay written with the step values (the fused EMA, see
    /// [`record_with_ema`](Self::record_with_ema)).
    ema_rate: std::cell::Cell<f32>,
    /// [0, 1]: the "no clipping" factor, when no grad-norm buffer was given.
    _unit_clip: Option<Tensor>,
}

impl AdamWOp {
    /// Record one AdamW step for every (param, grad, m, v): with t the step, γ the rate,
    /// λ the weight decay and c the clip factor (`clip[1]`, see [`GradNormOp`]; 1 without):
    /// g ← c·g; p ← p(1 − γλ); m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)g²;
    /// p ← p − γ/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε), which is torch.optim.AdamW's
    /// arithmetic. `decay[i] = false` skips the decay for tensor i (empty slice: decay all,
    /// as diffusers' train_unconditional does). m and v start at zero.
    ///
    /// The op starts with a learning rate of 0 (a no-op); call [`set_step`](Self::set_step)
    /// before every run.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        params: &[&Tensor],
        grads: &[&Tensor],
        m: &[&Tensor],
        v: &[&Tensor],
        clip: Option<&Tensor>,
        decay: &[bool],
        cfg: AdamWConfig,
    ) -> Result<AdamWOp> {
        Self::record_with_ema(ctx, program, params, grads, m, v, None, clip, decay, cfg)
    }

    /// [`record`](Self::record), and with `ema` also the EMA of the updated weights in the
    /// same dispatch (ema ← ema − (1 − d)(ema − p), the arithmetic of [`EmaOp`] after this
    /// op, bit for bit; one dispatch per tensor instead of two). The decay starts at 1 (a
    /// no-op); set it with [`set_step_and_ema`](Self::set_step_and_ema).
    #[allow(clippy::too_many_arguments)]
    pub fn record_with_ema(
        ctx: &GpuContext,
        program: &mut Program,
        params: &[&Tensor],
        grads: &[&Tensor],
        m: &[&Tensor],
        v: &[&Tensor],
        ema: Option<&[&Tensor]>,
        clip: Option<&Tensor>,
        decay: &[bool],
        cfg: AdamWConfig,
    ) -> Result<AdamWOp> {
        let n = params.len();
        if let Some(e) = ema {
            if e.len() != n {
                return Err(Error::shape(format!(
                    "adamw: {n} params but {} EMA tensors",
                    e.len()
                )));
            }
        }
        if grads.len() != n || m.len() != n || v.len() != n {
            return Err(Error::shape(format!(
                "adamw: {n} params but {} grads, {} m and {} v tensors",
                grads.len(),
                m.len(),
                v.len()
            )));
        }
        if !decay.is_empty() && decay.len() != n {
            return Err(Error::shape(format!(
                "adamw: {n} params but {} decay flags",
                decay.len()
            )));
        }
        if !(0.0..1.0).contains(&cfg.beta1) || !(0.0..1.0).contains(&cfg.beta2) {
            return Err(Error::config(format!(
                "adamw: betas must lie in [0, 1), got ({}, {})",
                cfg.beta1, cfg.beta2
            )));
        }
        if let Some(c) = clip {
            if c.numel() != 2 {
                return Err(Error::shape(format!(
                    "adamw: clip: expected the 2-float grad-norm stats, got shape {:?}",
                    c.shape
                )));
            }
        }
        let unit_clip = match clip {
            Some(_) => None,
            None => Some(ctx.upload(&[0.0, 1.0], &[2])?),
        };
        let clip_buf = match (clip, &unit_clip) {
            (Some(c), _) => c.buffer.clone(),
            (None, Some(u)) => u.buffer.clone(),
            (None, None) => unreachable!("unit_clip is made when clip is None"),
        };
        let uniform = ctx.uniform_buffer(std::mem::size_of::<OptimParams>());
        for i in 0..n {
            let (p, g, mi, vi) = (params[i], grads[i], m[i], v[i]);
            check_whole_buffer(p, &format!("adamw: params[{i}]"))?;
            for (t, what) in [(g, "grads"), (mi, "m"), (vi, "v")] {
                check_whole_buffer(t, &format!("adamw: {what}[{i}]"))?;
                check_pair(p, t, &format!("adamw: params[{i}] and {what}[{i}]"))?;
            }
            if same_buffer(mi, vi) || same_buffer(g, mi) || same_buffer(g, vi) {
                return Err(Error::shape(format!(
                    "adamw: grads[{i}], m[{i}] and v[{i}] must be distinct buffers"
                )));
            }
            let with_decay = decay.get(i).copied().unwrap_or(true);
            let ei = match ema {
                Some(e) => {
                    let ei = e[i];
                    check_whole_buffer(ei, &format!("adamw: ema[{i}]"))?;
                    check_pair(p, ei, &format!("adamw: params[{i}] and ema[{i}]"))?;
                    if [g, mi, vi].iter().any(|t| same_buffer(t, ei)) {
                        return Err(Error::shape(format!(
                            "adamw: ema[{i}] must be a buffer of its own"
                        )));
                    }
                    Some(ei)
                }
                None => None,
            };
            let entry = match (ei.is_some(), with_decay) {
                (false, true) => "adamw",
                (false, false) => "adamw_no_decay",
                (true, true) => "adamw_ema",
                (true, false) => "adamw_ema_no_decay",
            };
            let mut outputs = vec![p.buffer.as_ref(), mi.buffer.as_ref(), vi.buffer.as_ref()];
            if let Some(ei) = ei {
                outputs.push(ei.buffer.as_ref());
            }
            ctx.record(
                program,
                DispatchDesc {
                    label: if ei.is_some() { "adamw_ema" } else { "adamw" },
                    shader: &OPTIM,
                    entry,
                    constants: &[],
                    params: Params::Buffer(&uniform),
                    inputs: &[&g.buffer, &clip_buf],
                    outputs: &outputs,
                    workgroups: elementwise_grid(p)?,
                },
            )?;
        }
        let op = AdamWOp {
            uniform,
            cfg,
            ema_rate: std::cell::Cell::new(0.0),
            _unit_clip: unit_clip,
        };
        op.set_step(ctx, 1, 0.0)?;
        Ok(op)
    }

    /// Set the values for optimizer step `step` (1-based, torch's `state["step"]` after its
    /// increment) and learning rate `lr`. Bias corrections are computed in f64.
    pub fn set_step(&self, ctx: &GpuContext, step: u64, lr: f32) -> Result<()> {
        let params = step_params(&self.cfg, step, lr, self.ema_rate.get())?;
        ctx.queue
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&params));
        Ok(())
    }

    /// [`set_step`](Self::set_step) and the fused EMA's decay d for this step (0 copies
    /// the weights, 1 leaves the EMA alone; taken in f64 as in [`EmaOp::set_decay`]).
    pub fn set_step_and_ema(&self, ctx: &GpuContext, step: u64, lr: f32, decay: f64) -> Result<()> {
        self.ema_rate.set((1.0 - decay) as f32);
        self.set_step(ctx, step, lr)
    }

    pub fn config(&self) -> AdamWConfig {
        self.cfg
    }
}

/// Check that `packs` are the whole buffers of `layout`'s packs.
fn check_packs(layout: &PackLayout, packs: &[Tensor], what: &str) -> Result<()> {
    if packs.len() != layout.packs.len() {
        return Err(Error::shape(format!(
            "{what}: {} buffers for a layout of {} packs",
            packs.len(),
            layout.packs.len()
        )));
    }
    for (i, (t, span)) in packs.iter().zip(&layout.packs).enumerate() {
        if t.numel() != span.floats || !t.buffer.is_whole() || t.buffer.size() != t.bytes() {
            return Err(Error::shape(format!(
                "{what}: pack {i}: a tensor of shape {:?} in a {}-byte buffer; the layout's \
                 pack holds {} floats",
                t.shape,
                t.buffer.size(),
                span.floats
            )));
        }
    }
    Ok(())
}

/// [`GradNormOp`] over packed gradients: per pack one dispatch writes the partial sums of
/// the same 2048-element chunks of each tensor that the per-tensor op sums (a table gives
/// each workgroup its chunk), then the same final reduce. Bit-identical to [`GradNormOp`] on
/// the tensors alone.
pub struct PackedGradNormOp {
    stats: Tensor,
    partials: Tensor,
    _tables: Vec<Tensor>,
}

impl PackedGradNormOp {
    /// Record the norm of the tensors of `layout` held in `grads` (one whole buffer per
    /// pack) and the clip factor for `max_norm`, as [`GradNormOp::record`].
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        layout: &PackLayout,
        grads: &[Tensor],
        max_norm: f32,
    ) -> Result<PackedGradNormOp> {
        if max_norm.is_nan() || max_norm <= 0.0 {
            return Err(Error::config(format!(
                "max_grad_norm must be positive, got {max_norm}"
            )));
        }
        check_packs(layout, grads, "packed grad_norm: grads")?;
        // Per pack: [first element, end of its tensor] per chunk, tensors in order.
        let mut tables = Vec::with_capacity(layout.packs.len());
        let mut firsts = Vec::with_capacity(layout.packs.len());
        let mut total = 0usize;
        for span in &layout.packs {
            let mut table = Vec::new();
            for i in span.tensors.clone() {
                let numel: usize = layout.shapes[i].iter().product();
                let start = layout.slots[i].offset;
                for c in 0..numel.div_ceil(CHUNK) {
                    table.push((start + c * CHUNK) as u32);
                    table.push((start + numel) as u32);
                }
            }
            firsts.push(total);
            total += table.len() / 2;
            tables.push(ctx.upload_u32(&table, &[table.len()])?);
        }
        let partials = ctx.zeros(&[total.max(1)])?;
        let stats = ctx.zeros(&[2])?;
        for ((g, table), &first) in grads.iter().zip(&tables).zip(&firsts) {
            let chunks = table.numel() / 2;
            if chunks == 0 {
                continue;
            }
            let params = OptimParams {
                offset: first as u32,
                ..Default::default()
            };
            ctx.record(
                program,
                DispatchDesc {
                    label: "grad_sumsq_packed",
                    shader: &OPTIM_PACKED,
                    entry: "sumsq_packed",
                    constants: &[],
                    params: Params::Static(bytemuck::bytes_of(&params)),
                    inputs: &[&g.buffer, &g.buffer, &table.buffer],
                    outputs: &[&partials.buffer],
                    workgroups: grid_1d(chunks as u64)?,
                },
            )?;
        }
        let params = OptimParams {
            offset: u32::try_from(total)
                .map_err(|_| Error::shape("grad_norm: too many gradient elements"))?,
            s0: max_norm,
            ..Default::default()
        };
        ctx.record(
            program,
            DispatchDesc {
                label: "grad_norm_finalize",
                shader: &OPTIM,
                entry: "grad_norm_finalize",
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&params)),
                inputs: &[&partials.buffer, &partials.buffer],
                outputs: &[&stats.buffer],
                workgroups: [1, 1, 1],
            },
        )?;
        Ok(PackedGradNormOp {
            stats,
            partials,
            _tables: tables,
        })
    }

    /// (2) = [global gradient norm, clip factor]; valid after the program ran.
    pub fn stats(&self) -> &Tensor {
        &self.stats
    }

    /// Number of partial sums in the scratch buffer (as [`GradNormOp::partials_len`]).
    pub fn partials_len(&self) -> usize {
        self.partials.numel()
    }
}

/// [`AdamWOp`] (optionally with the fused EMA) over packed tensors: one dispatch per pack.
/// Per-tensor weight-decay exemptions become a bit mask over 64-element blocks (tensors
/// start at multiples of 64 elements). Padding between tensors is zero in every buffer and
/// stays zero (a zero gradient leaves a zero weight and zero moments unchanged).
pub struct PackedAdamWOp {
    uniform: wgpu::Buffer,
    cfg: AdamWConfig,
    ema_rate: std::cell::Cell<f32>,
    _masks: Vec<Tensor>,
    _unit_clip: Option<Tensor>,
}

impl PackedAdamWOp {
    /// Record one AdamW step over every pack of `layout`, as [`AdamWOp::record_with_ema`]
    /// over the tensors: `params`, `grads`, `m`, `v` and `ema` are the packs' whole buffers
    /// (from [`GpuContext::packed`] with `layout`), `decay[i] = false` exempts tensor i
    /// (empty: decay all). Learning rate 0 and EMA decay 1 until
    /// [`set_step_and_ema`](Self::set_step_and_ema).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        layout: &PackLayout,
        params: &[Tensor],
        grads: &[Tensor],
        m: &[Tensor],
        v: &[Tensor],
        ema: Option<&[Tensor]>,
        clip: Option<&Tensor>,
        decay: &[bool],
        cfg: AdamWConfig,
    ) -> Result<PackedAdamWOp> {
        check_packs(layout, params, "packed adamw: params")?;
        check_packs(layout, grads, "packed adamw: grads")?;
        check_packs(layout, m, "packed adamw: m")?;
        check_packs(layout, v, "packed adamw: v")?;
        if let Some(e) = ema {
            check_packs(layout, e, "packed adamw: ema")?;
        }
        let n = layout.shapes.len();
        if !decay.is_empty() && decay.len() != n {
            return Err(Error::shape(format!(
                "adamw: {n} params but {} decay flags",
                decay.len()
            )));
        }
        if !(0.0..1.0).contains(&cfg.beta1) || !(0.0..1.0).contains(&cfg.beta2) {
            return Err(Error::config(format!(
                "adamw: betas must lie in [0, 1), got ({}, {})",
                cfg.beta1, cfg.beta2
            )));
        }
        if let Some(c) = clip {
            if c.numel() != 2 {
                return Err(Error::shape(format!(
                    "adamw: clip: expected the 2-float grad-norm stats, got shape {:?}",
                    c.shape
                )));
            }
        }
        for k in 0..layout.packs.len() {
            let mut raws = vec![
                params[k].buffer.raw(),
                grads[k].buffer.raw(),
                m[k].buffer.raw(),
                v[k].buffer.raw(),
            ];
            if let Some(e) = ema {
                raws.push(e[k].buffer.raw());
            }
            for a in 0..raws.len() {
                if raws[a + 1..].contains(&raws[a]) {
                    return Err(Error::shape(format!(
                        "adamw: pack {k}: params, grads, m, v and ema must be distinct buffers"
                    )));
                }
            }
        }
        let unit_clip = match clip {
            Some(_) => None,
            None => Some(ctx.upload(&[0.0, 1.0], &[2])?),
        };
        let clip = clip
            .or(unit_clip.as_ref())
            .expect("unit_clip is made when clip is None");
        let uniform = ctx.uniform_buffer(std::mem::size_of::<OptimParams>());
        let block = PackLayout::ALIGN_FLOATS;
        let mut masks = Vec::with_capacity(layout.packs.len());
        for (k, span) in layout.packs.iter().enumerate() {
            let blocks = span.floats.div_ceil(block);
            let mut mask = vec![u32::MAX; blocks.div_ceil(32).max(1)];
            for i in span.tensors.clone() {
                if decay.get(i).copied().unwrap_or(true) {
                    continue;
                }
                let numel: usize = layout.shapes[i].iter().product();
                let first = layout.slots[i].offset / block;
                for b in first..first + numel.div_ceil(block) {
                    mask[b / 32] &= !(1u32 << (b % 32));
                }
            }
            let mask = ctx.upload_u32(&mask, &[mask.len()])?;
            let mut outputs = vec![
                params[k].buffer.as_ref(),
                m[k].buffer.as_ref(),
                v[k].buffer.as_ref(),
            ];
            if let Some(e) = ema {
                outputs.push(e[k].buffer.as_ref());
            }
            ctx.record(
                program,
                DispatchDesc {
                    label: if ema.is_some() {
                        "adamw_ema_packed"
                    } else {
                        "adamw_packed"
                    },
                    shader: &OPTIM_PACKED,
                    entry: if ema.is_some() {
                        "adamw_ema_packed"
                    } else {
                        "adamw_packed"
                    },
                    constants: &[],
                    params: Params::Buffer(&uniform),
                    inputs: &[&grads[k].buffer, &clip.buffer, &mask.buffer],
                    outputs: &outputs,
                    workgroups: elementwise_grid(&params[k])?,
                },
            )?;
            masks.push(mask);
        }
        let op = PackedAdamWOp {
            uniform,
            cfg,
            ema_rate: std::cell::Cell::new(0.0),
            _masks: masks,
            _unit_clip: unit_clip,
        };
        op.set_step(ctx, 1, 0.0)?;
        Ok(op)
    }

    /// As [`AdamWOp::set_step`].
    pub fn set_step(&self, ctx: &GpuContext, step: u64, lr: f32) -> Result<()> {
        let params = step_params(&self.cfg, step, lr, self.ema_rate.get())?;
        ctx.queue
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&params));
        Ok(())
    }

    /// As [`AdamWOp::set_step_and_ema`].
    pub fn set_step_and_ema(&self, ctx: &GpuContext, step: u64, lr: f32, decay: f64) -> Result<()> {
        self.ema_rate.set((1.0 - decay) as f32);
        self.set_step(ctx, step, lr)
    }

    pub fn config(&self) -> AdamWConfig {
        self.cfg
    }
}

/// The exponential moving average of the weights: ema ← ema − (1 − d)(ema − param).
pub struct EmaOp {
    uniform: wgpu::Buffer,
}

impl EmaOp {
    /// Record one EMA update per (ema, param) pair. The decay starts at 1 (a no-op); set it
    /// with [`set_decay`](Self::set_decay) (see `train::schedule::ema_decay`) before a run.
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        ema: &[&Tensor],
        params: &[&Tensor],
    ) -> Result<EmaOp> {
        if ema.len() != params.len() {
            return Err(Error::shape(format!(
                "ema: {} EMA tensors for {} params",
                ema.len(),
                params.len()
            )));
        }
        let uniform = ctx.uniform_buffer(std::mem::size_of::<OptimParams>());
        for (i, (e, p)) in ema.iter().zip(params).enumerate() {
            check_whole_buffer(e, &format!("ema: ema[{i}]"))?;
            check_whole_buffer(p, &format!("ema: params[{i}]"))?;
            check_pair(e, p, &format!("ema: ema[{i}] and params[{i}]"))?;
            ctx.record(
                program,
                DispatchDesc {
                    label: "ema",
                    shader: &OPTIM,
                    entry: "ema",
                    constants: &[],
                    params: Params::Buffer(&uniform),
                    inputs: &[&p.buffer, &p.buffer],
                    outputs: &[&e.buffer],
                    workgroups: elementwise_grid(e)?,
                },
            )?;
        }
        let op = EmaOp { uniform };
        op.set_decay(ctx, 1.0);
        Ok(op)
    }

    /// Set the decay d for the next runs (0 copies the weights; 1 leaves the EMA alone).
    /// Taken in f64 because the kernel uses 1 − d, which f32 would round badly near 0.9999.
    pub fn set_decay(&self, ctx: &GpuContext, decay: f64) {
        let params = OptimParams {
            s0: (1.0 - decay) as f32,
            ..Default::default()
        };
        ctx.queue
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&params));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    /// Odd sizes: smaller than, equal to and just past the 2048-element chunk.
    const SHAPES: [&[usize]; 5] = [&[1], &[3, 5], &[2048], &[2049], &[7, 3, 3, 11]];

    fn upload_all(ctx: &GpuContext, data: &[Vec<f32>]) -> Vec<Tensor> {
        data.iter()
            .zip(SHAPES)
            .map(|(d, s)| ctx.upload(d, s).unwrap())
            .collect()
    }

    fn random_set(seed: u64, scale: f32) -> Vec<Vec<f32>> {
        SHAPES
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let n: usize = s.iter().product();
                random(n, seed + i as u64)
                    .into_iter()
                    .map(|x| x * scale)
                    .collect()
            })
            .collect()
    }

    fn norm_f64(data: &[Vec<f32>]) -> f64 {
        data.iter()
            .flatten()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    }

    fn clip_factor(norm: f64, max_norm: f64) -> f64 {
        (max_norm / (norm + 1e-6)).min(1.0)
    }

    #[test]
    fn grad_norm_matches_f64() {
        let ctx = ctx();
        let data = random_set(10, 3.0);
        let grads = upload_all(&ctx, &data);
        let refs: Vec<&Tensor> = grads.iter().collect();
        let norm = norm_f64(&data);
        // One max_norm below the norm (clips) and one above (factor exactly 1).
        for max_norm in [1.5f32, 1e3] {
            let mut p = Program::new();
            let op = GradNormOp::record(&ctx, &mut p, &refs, max_norm).unwrap();
            assert_eq!(op.partials_len(), 1 + 1 + 1 + 2 + 1);
            ctx.run(&p).unwrap();
            let got = block_on(ctx.read(op.stats())).unwrap();
            let want = [norm, clip_factor(norm, max_norm as f64)];
            // f32 sums of ~3000 squares: relative error ~1e-6.
            assert_close(&got, &want, 0.0, 1e-5, &format!("max_norm {max_norm}"));
        }
        assert!(norm > 1.5, "the clipping case must actually clip");
        // No gradients: norm 0, factor 1.
        let mut p = Program::new();
        let op = GradNormOp::record(&ctx, &mut p, &[], 1.0).unwrap();
        ctx.run(&p).unwrap();
        assert_close(
            &block_on(ctx.read(op.stats())).unwrap(),
            &[0.0, 1.0],
            0.0,
            0.0,
            "empty",
        );
    }

    /// torch.optim.AdamW's single-tensor step, in f64.
    #[allow(clippy::too_many_arguments)]
    fn adamw_ref(
        p: &mut [f64],
        m: &mut [f64],
        v: &mut [f64],
        g: &[f64],
        step: u64,
        lr: f64,
        cfg: &AdamWConfig,
        decay: bool,
    ) {
        let (b1, b2, eps) = (cfg.beta1 as f64, cfg.beta2 as f64, cfg.eps as f64);
        let wd = if decay { cfg.weight_decay as f64 } else { 0.0 };
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
        }
    }

    /// The f64 reference reproduces torch 2.15's AdamW (values printed by torch in float64).
    #[test]
    fn adamw_reference_matches_torch() {
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-3,
            weight_decay: 0.5,
        };
        let mut p = vec![0.5, -1.25, 2.0];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        let gs = [[0.3, -0.2, 1.5], [-0.7, 0.1, 0.25], [0.05, 0.9, -1.0]];
        for (t, g) in gs.iter().enumerate() {
            adamw_ref(&mut p, &mut m, &mut v, g, t as u64 + 1, 0.1, &cfg, true);
        }
        // cfg's f32 betas differ from torch's f64 ones by ~1e-8 relative.
        let want = [0.4066978323142232, -1.0134452082001135, 1.53458778230709];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-7, "param {a} vs torch {b}");
        }
        let want_m = [
            -0.033699999999999994,
            0.08279999999999998,
            0.04400000000000001,
        ];
        let want_v = [
            0.005758090000000004,
            0.008591040000000008,
            0.03267100000000003,
        ];
        for (a, b) in m.iter().zip(want_m).chain(v.iter().zip(want_v)) {
            assert!((a - b).abs() < 1e-7, "moment {a} vs torch {b}");
        }
    }

    fn r(ts: &[Tensor]) -> Vec<&Tensor> {
        ts.iter().collect()
    }

    fn adamw_run(clip: bool) {
        let ctx = ctx();
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let decay = [true, false, true, true, false];
        let p0 = random_set(100, 1.0);
        let params = upload_all(&ctx, &p0);
        let zeros: Vec<Vec<f32>> = p0.iter().map(|x| vec![0.0; x.len()]).collect();
        let (m, v) = (upload_all(&ctx, &zeros), upload_all(&ctx, &zeros));
        let grads = upload_all(&ctx, &zeros);
        let mut prog = Program::new();
        let max_norm = 2.0;
        let gn = if clip {
            Some(GradNormOp::record(&ctx, &mut prog, &r(&grads), max_norm).unwrap())
        } else {
            None
        };
        let op = AdamWOp::record(
            &ctx,
            &mut prog,
            &r(&params),
            &r(&grads),
            &r(&m),
            &r(&v),
            gn.as_ref().map(|g| g.stats()),
            &decay,
            cfg,
        )
        .unwrap();

        let mut pr: Vec<Vec<f64>> = p0
            .iter()
            .map(|x| x.iter().map(|&y| y as f64).collect())
            .collect();
        let mut mr: Vec<Vec<f64>> = pr.iter().map(|x| vec![0.0; x.len()]).collect();
        let mut vr = mr.clone();
        let mut clipped = false;
        for step in 1..=5u64 {
            let lr = 0.01 * step as f32;
            let g = random_set(1000 * step, 2.0);
            for (t, d) in grads.iter().zip(&g) {
                ctx.write(t, d).unwrap();
            }
            op.set_step(&ctx, step, lr).unwrap();
            ctx.run(&prog).unwrap();
            let factor = if clip {
                clip_factor(norm_f64(&g), max_norm as f64)
            } else {
                1.0
            };
            clipped |= factor < 0.5;
            for i in 0..SHAPES.len() {
                let gi: Vec<f64> = g[i].iter().map(|&x| x as f64 * factor).collect();
                adamw_ref(
                    &mut pr[i], &mut mr[i], &mut vr[i], &gi, step, lr as f64, &cfg, decay[i],
                );
            }
        }
        assert_eq!(clipped, clip, "the clipped run must clip");
        for i in 0..SHAPES.len() {
            let what = format!("clip {clip}, tensor {i}");
            // f32 state over 5 steps; updates are ~lr, so errors stay ~1e-6 absolute.
            assert_close(
                &block_on(ctx.read(&params[i])).unwrap(),
                &pr[i],
                2e-6,
                1e-5,
                &format!("{what}: param"),
            );
            assert_close(
                &block_on(ctx.read(&m[i])).unwrap(),
                &mr[i],
                1e-6,
                1e-5,
                &format!("{what}: m"),
            );
            assert_close(
                &block_on(ctx.read(&v[i])).unwrap(),
                &vr[i],
                1e-7,
                1e-5,
                &format!("{what}: v"),
            );
        }
    }

    #[test]
    fn adamw_matches_f64_without_clipping() {
        adamw_run(false);
    }

    #[test]
    fn adamw_matches_f64_with_clipping() {
        adamw_run(true);
    }

    #[test]
    fn ema_matches_f64() {
        use crate::train::schedule::{ema_decay, EmaConfig};
        let ctx = ctx();
        let e0 = random_set(200, 1.0);
        let ema = upload_all(&ctx, &e0);
        let params = upload_all(&ctx, &e0);
        let mut prog = Program::new();
        let op = EmaOp::record(
            &ctx,
            &mut prog,
            &ema.iter().collect::<Vec<_>>(),
            &params.iter().collect::<Vec<_>>(),
        )
        .unwrap();
        let mut er: Vec<Vec<f64>> = e0
            .iter()
            .map(|x| x.iter().map(|&y| y as f64).collect())
            .collect();
        let cfg = EmaConfig::train_unconditional();
        // Steps 1..=4 of the warmup schedule: 0 (copy), then rising decays.
        for step in 1..=4u64 {
            let d = ema_decay(step, &cfg);
            let pd = random_set(300 + step, 1.0);
            for (t, x) in params.iter().zip(&pd) {
                ctx.write(t, x).unwrap();
            }
            op.set_decay(&ctx, d);
            ctx.run(&prog).unwrap();
            for (e, p) in er.iter_mut().zip(&pd) {
                for (a, &b) in e.iter_mut().zip(p) {
                    *a = d * *a + (1.0 - d) * b as f64;
                }
            }
        }
        for (i, (t, want)) in ema.iter().zip(&er).enumerate() {
            assert_close(
                &block_on(ctx.read(t)).unwrap(),
                want,
                1e-6,
                1e-6,
                &format!("ema tensor {i}"),
            );
        }
    }

    /// AdamW with the fused EMA gives bit for bit what AdamW followed by EmaOp gives (which
    /// the tests above compare with f64 references), over steps with clipping and rising
    /// decays, with and without weight decay.
    #[test]
    fn fused_adamw_ema_is_bit_identical_to_separate_ops() {
        use crate::train::schedule::{ema_decay, EmaConfig};
        let ctx = ctx();
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let decay = [true, false, true, true, false];
        let p0 = random_set(500, 1.0);
        let zeros: Vec<Vec<f32>> = p0.iter().map(|x| vec![0.0; x.len()]).collect();
        // Two identical states: [separate, fused].
        let state = || {
            (
                upload_all(&ctx, &p0),
                upload_all(&ctx, &zeros),
                upload_all(&ctx, &zeros),
                upload_all(&ctx, &p0),
                upload_all(&ctx, &zeros),
            )
        };
        let (pa, ma, va, ea, ga) = state();
        let (pb, mb, vb, eb, gb) = state();
        let mut prog_a = Program::new();
        let gn_a = GradNormOp::record(&ctx, &mut prog_a, &r(&ga), 2.0).unwrap();
        let op_a = AdamWOp::record(
            &ctx,
            &mut prog_a,
            &r(&pa),
            &r(&ga),
            &r(&ma),
            &r(&va),
            Some(gn_a.stats()),
            &decay,
            cfg,
        )
        .unwrap();
        let ema_a = EmaOp::record(&ctx, &mut prog_a, &r(&ea), &r(&pa)).unwrap();
        let mut prog_b = Program::new();
        let gn_b = GradNormOp::record(&ctx, &mut prog_b, &r(&gb), 2.0).unwrap();
        let op_b = AdamWOp::record_with_ema(
            &ctx,
            &mut prog_b,
            &r(&pb),
            &r(&gb),
            &r(&mb),
            &r(&vb),
            Some(&r(&eb)),
            Some(gn_b.stats()),
            &decay,
            cfg,
        )
        .unwrap();
        assert_eq!(prog_b.len(), prog_a.len() - SHAPES.len());
        let ecfg = EmaConfig::train_unconditional();
        for step in 1..=4u64 {
            let g = random_set(700 + step, 2.0);
            for (ts, d) in ga.iter().zip(&g).chain(gb.iter().zip(&g)) {
                ctx.write(ts, d).unwrap();
            }
            let lr = 0.01 * step as f32;
            let d = ema_decay(step + 3, &ecfg);
            op_a.set_step(&ctx, step, lr).unwrap();
            ema_a.set_decay(&ctx, d);
            op_b.set_step_and_ema(&ctx, step, lr, d).unwrap();
            ctx.run(&prog_a).unwrap();
            ctx.run(&prog_b).unwrap();
        }
        for (what, a, b) in [
            ("param", &pa, &pb),
            ("m", &ma, &mb),
            ("v", &va, &vb),
            ("ema", &ea, &eb),
        ] {
            for i in 0..SHAPES.len() {
                let (x, y) = (
                    block_on(ctx.read(&a[i])).unwrap(),
                    block_on(ctx.read(&b[i])).unwrap(),
                );
                assert!(
                    x.iter().zip(&y).all(|(u, v)| u.to_bits() == v.to_bits()),
                    "{what}[{i}] differs between fused and separate ops"
                );
            }
        }
        // The EMA moved (a no-op EMA would pass the comparison trivially).
        let e = block_on(ctx.read(&eb[3])).unwrap();
        assert!(e.iter().zip(&p0[3]).any(|(a, b)| a != b));
    }

    fn shapes() -> Vec<Vec<usize>> {
        SHAPES.iter().map(|s| s.to_vec()).collect()
    }

    /// The packed ops (grad norm, AdamW with the fused EMA, decay exemptions) give bit for
    /// bit what the per-tensor ops give, over steps with clipping and rising EMA decays, in
    /// one pack and split over two (a 16 KiB pack limit).
    #[test]
    fn packed_optimizer_is_bit_identical_to_per_tensor_ops() {
        use crate::train::schedule::{ema_decay, EmaConfig};
        let ctx = ctx();
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let decay = [true, false, true, false, true];
        let p0 = random_set(900, 1.0);
        let zeros: Vec<Vec<f32>> = p0.iter().map(|x| vec![0.0; x.len()]).collect();
        let (pa, ma, va, ea, ga) = (
            upload_all(&ctx, &p0),
            upload_all(&ctx, &zeros),
            upload_all(&ctx, &zeros),
            upload_all(&ctx, &p0),
            upload_all(&ctx, &zeros),
        );
        let mut prog_a = Program::new();
        let gn_a = GradNormOp::record(&ctx, &mut prog_a, &r(&ga), 2.0).unwrap();
        let op_a = AdamWOp::record_with_ema(
            &ctx,
            &mut prog_a,
            &r(&pa),
            &r(&ga),
            &r(&ma),
            &r(&va),
            Some(&r(&ea)),
            Some(gn_a.stats()),
            &decay,
            cfg,
        )
        .unwrap();
        for (max_bytes, want_packs) in [(1u64 << 20, 1usize), (16 << 10, 2)] {
            let layout = PackLayout::new(&shapes(), max_bytes).unwrap();
            assert_eq!(layout.packs.len(), want_packs);
            let [pb, mb, vb, eb, gb] = std::array::from_fn(|_| ctx.packed(&layout).unwrap());
            for (i, d) in p0.iter().enumerate() {
                ctx.write(&pb.views[i], d).unwrap();
                ctx.write(&eb.views[i], d).unwrap();
            }
            let mut prog_b = Program::new();
            let gn_b =
                PackedGradNormOp::record(&ctx, &mut prog_b, &layout, &gb.packs, 2.0).unwrap();
            assert_eq!(gn_b.partials_len(), gn_a.partials_len());
            let op_b = PackedAdamWOp::record(
                &ctx,
                &mut prog_b,
                &layout,
                &pb.packs,
                &gb.packs,
                &mb.packs,
                &vb.packs,
                Some(&eb.packs),
                Some(gn_b.stats()),
                &decay,
                cfg,
            )
            .unwrap();
            assert_eq!(prog_b.len(), 2 * want_packs + 1);
            // Restart the per-tensor state.
            for (ts, d) in [(&pa, &p0), (&ea, &p0), (&ma, &zeros), (&va, &zeros)] {
                for (t, x) in ts.iter().zip(d) {
                    ctx.write(t, x).unwrap();
                }
            }
            let ecfg = EmaConfig::train_unconditional();
            for step in 1..=4u64 {
                // Step 1 large (clipped), later ones small (factor 1).
                let scale = if step == 1 { 5.0 } else { 0.01 };
                let g = random_set(1700 + step, scale);
                for (i, d) in g.iter().enumerate() {
                    ctx.write(&ga[i], d).unwrap();
                    ctx.write(&gb.views[i], d).unwrap();
                }
                let lr = 0.01 * step as f32;
                let d = ema_decay(step + 3, &ecfg);
                op_a.set_step_and_ema(&ctx, step, lr, d).unwrap();
                op_b.set_step_and_ema(&ctx, step, lr, d).unwrap();
                ctx.run(&prog_a).unwrap();
                ctx.run(&prog_b).unwrap();
                let (sa, sb) = (
                    block_on(ctx.read(gn_a.stats())).unwrap(),
                    block_on(ctx.read(gn_b.stats())).unwrap(),
                );
                assert_eq!(sa[0].to_bits(), sb[0].to_bits(), "step {step}: norm");
                assert_eq!(sa[1].to_bits(), sb[1].to_bits(), "step {step}: clip factor");
                assert_eq!(sa[1] < 1.0, step == 1, "step {step}: clipping");
            }
            for (what, a, b) in [
                ("param", &pa, &pb),
                ("m", &ma, &mb),
                ("v", &va, &vb),
                ("ema", &ea, &eb),
            ] {
                for (i, (ta, tb)) in a.iter().zip(&b.views).enumerate() {
                    let (x, y) = (
                        block_on(ctx.read(ta)).unwrap(),
                        block_on(ctx.read(tb)).unwrap(),
                    );
                    assert!(
                        x.iter().zip(&y).all(|(u, v)| u.to_bits() == v.to_bits()),
                        "{what}[{i}] differs between packed and per-tensor ops ({want_packs} packs)"
                    );
                }
                // Padding stays zero.
                for (k, pack) in b.packs.iter().enumerate() {
                    let all = block_on(ctx.read(pack)).unwrap();
                    let mut in_view = vec![false; all.len()];
                    for i in layout.packs[k].tensors.clone() {
                        let o = layout.slots[i].offset;
                        in_view[o..o + b.views[i].numel()].fill(true);
                    }
                    assert!(
                        all.iter().zip(&in_view).all(|(x, &v)| v || *x == 0.0),
                        "{what}: pack {k}: padding was written"
                    );
                }
            }
            // The EMA moved (a no-op EMA would pass the comparison trivially).
            let e = block_on(ctx.read(&eb.views[3])).unwrap();
            assert!(e.iter().zip(&p0[3]).any(|(a, b)| a != b));
        }
    }

    /// Weight-decay exemptions matter: with every tensor decayed, the exempt ones come out
    /// different (so the bit-identity above checks the mask).
    #[test]
    fn packed_decay_mask_is_per_tensor() {
        let ctx = ctx();
        let cfg = AdamWConfig {
            weight_decay: 0.5,
            ..AdamWConfig::default()
        };
        let layout = PackLayout::new(&shapes(), 1 << 20).unwrap();
        let p0 = random_set(40, 1.0);
        let run = |decay: &[bool]| -> Vec<Vec<f32>> {
            let [p, g, m, v] = std::array::from_fn(|_| ctx.packed(&layout).unwrap());
            for (i, d) in p0.iter().enumerate() {
                ctx.write(&p.views[i], d).unwrap();
            }
            let mut prog = Program::new();
            let op = PackedAdamWOp::record(
                &ctx, &mut prog, &layout, &p.packs, &g.packs, &m.packs, &v.packs, None, None,
                decay, cfg,
            )
            .unwrap();
            op.set_step(&ctx, 1, 0.1).unwrap();
            ctx.run(&prog).unwrap();
            p.views
                .iter()
                .map(|t| block_on(ctx.read(t)).unwrap())
                .collect()
        };
        let all = run(&[]);
        let some = run(&[true, false, true, false, true]);
        for i in 0..SHAPES.len() {
            // Zero gradients: only the decay moves a weight, p ← p(1 − γλ).
            let want: Vec<f64> = p0[i]
                .iter()
                .map(|&x| {
                    if [1, 3].contains(&i) {
                        x as f64
                    } else {
                        x as f64 * 0.95
                    }
                })
                .collect();
            assert_close(&some[i], &want, 1e-7, 1e-6, &format!("tensor {i}"));
            let want_all: Vec<f64> = p0[i].iter().map(|&x| x as f64 * 0.95).collect();
            assert_close(&all[i], &want_all, 1e-7, 1e-6, &format!("all, tensor {i}"));
        }
    }

    #[test]
    fn packed_bad_inputs_are_errors() {
        let ctx = ctx();
        let layout = PackLayout::new(&shapes(), 1 << 20).unwrap();
        let other = PackLayout::new(&shapes(), 16 << 10).unwrap();
        let [p, g, m, v] = std::array::from_fn(|_| ctx.packed(&layout).unwrap());
        let q = ctx.packed(&other).unwrap();
        let mut prog = Program::new();
        let cfg = AdamWConfig::default();
        // Packs of another layout.
        assert!(matches!(
            PackedGradNormOp::record(&ctx, &mut prog, &layout, &q.packs, 1.0),
            Err(Error::Shape(_))
        ));
        // A view instead of a whole pack.
        assert!(matches!(
            PackedGradNormOp::record(&ctx, &mut prog, &layout, &g.views[..1], 1.0),
            Err(Error::Shape(_))
        ));
        // m and v the same buffer.
        assert!(matches!(
            PackedAdamWOp::record(
                &ctx,
                &mut prog,
                &layout,
                &p.packs,
                &g.packs,
                &m.packs,
                &m.packs,
                None,
                None,
                &[],
                cfg
            ),
            Err(Error::Shape(_))
        ));
        // Wrong number of decay flags.
        assert!(matches!(
            PackedAdamWOp::record(
                &ctx,
                &mut prog,
                &layout,
                &p.packs,
                &g.packs,
                &m.packs,
                &v.packs,
                None,
                None,
                &[true],
                cfg
            ),
            Err(Error::Shape(_))
        ));
        assert!(prog.is_empty());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ctx = ctx();
        let a = ctx.zeros(&[4]).unwrap();
        let b = ctx.zeros(&[5]).unwrap();
        let c = ctx.zeros(&[4]).unwrap();
        let mut p = Program::new();
        let cfg = AdamWConfig::default();
        // Shape mismatch between a param and its gradient.
        assert!(matches!(
            AdamWOp::record(&ctx, &mut p, &[&a], &[&b], &[&c], &[&c], None, &[], cfg),
            Err(Error::Shape(_))
        ));
        // m and v sharing a buffer.
        assert!(matches!(
            AdamWOp::record(&ctx, &mut p, &[&a], &[&c], &[&b], &[&b], None, &[], cfg),
            Err(Error::Shape(_))
        ));
        // Wrong list lengths.
        assert!(matches!(
            AdamWOp::record(&ctx, &mut p, &[&a, &a], &[&c], &[&c], &[&c], None, &[], cfg),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            EmaOp::record(&ctx, &mut p, &[&a], &[&b]),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            GradNormOp::record(&ctx, &mut p, &[&a], 0.0),
            Err(Error::Config(_))
        ));
        // A view whose buffer is larger than the tensor cannot be used (arrayLength).
        let big = ctx.zeros(&[8]).unwrap();
        let small = Tensor {
            buffer: big.buffer.clone(),
            shape: vec![4],
        };
        assert!(matches!(
            GradNormOp::record(&ctx, &mut p, &[&small], 1.0),
            Err(Error::Shape(_))
        ));
    }
}
