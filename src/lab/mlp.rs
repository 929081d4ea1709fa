//! The lab's network ε_θ(x_t, t, y): input [x_t, emb(t)] with emb the 32-dim sinusoidal
//! timestep embedding (Vaswani et al. 2017, as in Ho et al. 2020 §4), three hidden layers of
//! 128 SiLU units, the class embedding row E[y] added to the first pre-activation (row
//! `num_classes` is the null class of classifier-free guidance, Ho & Salimans 2022), and a
//! linear output of 2.
//!
//! The parameters are one flat f32 vector (layout below, shared with `shaders/mlp.wgsl` and
//! `shaders/mlp_update.wgsl`). This module has the layout, the initialisation, the CPU f64
//! reference (forward, L_simple and its gradient) and the GPU evaluation entry points; the
//! training loop is in [`super::train`].

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::rng::SplitMix64;
use crate::shaders::{MLP, MLP_UPDATE};

/// Hidden units per layer (`H` in the shaders).
pub const HIDDEN: usize = 128;
/// Timestep embedding size (`E`).
pub const TIME_DIM: usize = 32;
/// First-layer inputs: x_t (2) and the embedding.
pub const IN: usize = 2 + TIME_DIM;
/// Rows per workgroup tile of every mlp.wgsl kernel (`FR`).
pub const TILE: usize = 16;
/// Floats per row of the activation buffer: input, a1, a2, a3.
pub const ACT_STRIDE: usize = IN + 3 * HIDDEN;
/// Floats per row of the delta buffer: d1, d2, d3, d_out.
pub const DELTA_STRIDE: usize = 3 * HIDDEN + 2;

pub const OFF_W1: usize = 0;
pub const OFF_B1: usize = OFF_W1 + HIDDEN * IN;
pub const OFF_W2: usize = OFF_B1 + HIDDEN;
pub const OFF_B2: usize = OFF_W2 + HIDDEN * HIDDEN;
pub const OFF_W3: usize = OFF_B2 + HIDDEN;
pub const OFF_B3: usize = OFF_W3 + HIDDEN * HIDDEN;
pub const OFF_W4: usize = OFF_B3 + HIDDEN;
pub const OFF_B4: usize = OFF_W4 + 2 * HIDDEN;
/// The class embedding, (num_classes + 1, HIDDEN), last so that the other offsets are fixed.
pub const OFF_EMB: usize = OFF_B4 + 2;

/// Number of parameters for a model with `num_classes` classes (0: unconditional).
pub fn num_params(num_classes: usize) -> usize {
    OFF_EMB + (num_classes + 1) * HIDDEN
}

/// Multiply-adds of one forward pass for one row (the FLOP count is twice this).
pub fn forward_macs() -> u64 {
    (HIDDEN * IN + 2 * HIDDEN * HIDDEN + 2 * HIDDEN) as u64
}

/// The named tensors of the flat vector: (name, offset, shape), PyTorch `nn.Linear` style.
pub fn tensors(num_classes: usize) -> Vec<(&'static str, usize, Vec<usize>)> {
    vec![
        ("layers.0.weight", OFF_W1, vec![HIDDEN, IN]),
        ("layers.0.bias", OFF_B1, vec![HIDDEN]),
        ("layers.1.weight", OFF_W2, vec![HIDDEN, HIDDEN]),
        ("layers.1.bias", OFF_B2, vec![HIDDEN]),
        ("layers.2.weight", OFF_W3, vec![HIDDEN, HIDDEN]),
        ("layers.2.bias", OFF_B3, vec![HIDDEN]),
        ("out.weight", OFF_W4, vec![2, HIDDEN]),
        ("out.bias", OFF_B4, vec![2]),
        (
            "class_embedding.weight",
            OFF_EMB,
            vec![num_classes + 1, HIDDEN],
        ),
    ]
}

/// PyTorch's default `nn.Linear` initialisation, U(−1/√fan_in, 1/√fan_in) for weights and
/// biases; the class embedding U(−0.1, 0.1). Seeded.
pub fn init_params(num_classes: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed ^ 0x6d6c_705f_696e_6974);
    let mut p = vec![0.0f32; num_params(num_classes)];
    let mut fill = |p: &mut [f32], bound: f64| {
        for v in p {
            *v = ((rng.next_f64() * 2.0 - 1.0) * bound) as f32;
        }
    };
    let (hi, hh) = (1.0 / (IN as f64).sqrt(), 1.0 / (HIDDEN as f64).sqrt());
    fill(&mut p[OFF_W1..OFF_W2], hi);
    fill(&mut p[OFF_W2..OFF_W3], hh);
    fill(&mut p[OFF_W3..OFF_W4], hh);
    fill(&mut p[OFF_W4..OFF_EMB], hh);
    let n = p.len();
    fill(&mut p[OFF_EMB..n], 0.1);
    p
}

/// The sinusoidal embedding of timestep t: sin(t·f_k) for k < E/2, then cos(t·f_k),
/// f_k = 10000^(−k/(E/2)).
pub fn time_embedding(t: f64) -> [f64; TIME_DIM] {
    let half = TIME_DIM / 2;
    let mut e = [0.0; TIME_DIM];
    for k in 0..half {
        let f = (-(10000f64).ln() * k as f64 / half as f64).exp();
        e[k] = (t * f).sin();
        e[half + k] = (t * f).cos();
    }
    e
}

/// One row of a batch: x_t, the timestep, the class (`num_classes` = null) and the target ε.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    pub x: [f64; 2],
    pub t: f64,
    pub y: usize,
    pub eps: [f64; 2],
}

fn silu(z: f64) -> f64 {
    z / (1.0 + (-z).exp())
}

fn silu_grad(z: f64) -> f64 {
    let s = 1.0 / (1.0 + (-z).exp());
    s * (1.0 + z * (1.0 - s))
}

struct Cache {
    inp: [f64; IN],
    z: [Vec<f64>; 3],
    out: [f64; 2],
}

#[allow(clippy::needless_range_loop)] // index math mirrors the kernels
fn forward_cached(p: &[f64], x: [f64; 2], t: f64, y: usize) -> Cache {
    let mut inp = [0.0; IN];
    inp[0] = x[0];
    inp[1] = x[1];
    inp[2..].copy_from_slice(&time_embedding(t));
    let layer = |w: usize, b: usize, a: &[f64], extra: Option<usize>| -> Vec<f64> {
        (0..HIDDEN)
            .map(|j| {
                let mut s = p[b + j] + extra.map_or(0.0, |e| p[e + j]);
                for (k, ak) in a.iter().enumerate() {
                    s += p[w + j * a.len() + k] * ak;
                }
                s
            })
            .collect()
    };
    let z1 = layer(OFF_W1, OFF_B1, &inp, Some(OFF_EMB + y * HIDDEN));
    let a1: Vec<f64> = z1.iter().map(|&z| silu(z)).collect();
    let z2 = layer(OFF_W2, OFF_B2, &a1, None);
    let a2: Vec<f64> = z2.iter().map(|&z| silu(z)).collect();
    let z3 = layer(OFF_W3, OFF_B3, &a2, None);
    let mut out = [0.0; 2];
    for (o, v) in out.iter_mut().enumerate() {
        *v = p[OFF_B4 + o];
        for k in 0..HIDDEN {
            *v += p[OFF_W4 + o * HIDDEN + k] * silu(z3[k]);
        }
    }
    Cache {
        inp,
        z: [z1, z2, z3],
        out,
    }
}

/// ε_θ(x, t, y) in f64.
pub fn forward_ref(params: &[f64], x: [f64; 2], t: f64, y: usize) -> [f64; 2] {
    forward_cached(params, x, t, y).out
}

/// L_simple = (1/2B) Σ_b ‖ε_θ(x_b, t_b, y_b) − ε_b‖² (eq. 14; torch's `mse_loss`, mean over
/// rows and coordinates) and its gradient with respect to every parameter, in f64.
#[allow(clippy::needless_range_loop)] // index math mirrors the kernels
pub fn loss_and_grad_ref(params: &[f64], rows: &[Row]) -> (f64, Vec<f64>) {
    let mut g = vec![0.0; params.len()];
    let mut loss = 0.0;
    let inv_b = 1.0 / rows.len() as f64;
    for r in rows {
        let c = forward_cached(params, r.x, r.t, r.y);
        let dout = [(c.out[0] - r.eps[0]) * inv_b, (c.out[1] - r.eps[1]) * inv_b];
        loss += ((c.out[0] - r.eps[0]).powi(2) + (c.out[1] - r.eps[1]).powi(2)) * 0.5 * inv_b;
        let a = |l: usize, k: usize| silu(c.z[l][k]);
        // Output layer.
        for o in 0..2 {
            g[OFF_B4 + o] += dout[o];
            for k in 0..HIDDEN {
                g[OFF_W4 + o * HIDDEN + k] += dout[o] * a(2, k);
            }
        }
        let d3: Vec<f64> = (0..HIDDEN)
            .map(|j| {
                silu_grad(c.z[2][j])
                    * (params[OFF_W4 + j] * dout[0] + params[OFF_W4 + HIDDEN + j] * dout[1])
            })
            .collect();
        let back = |d: &[f64], w: usize, zl: &[f64]| -> Vec<f64> {
            (0..HIDDEN)
                .map(|k| {
                    let s: f64 = (0..HIDDEN).map(|j| params[w + j * HIDDEN + k] * d[j]).sum();
                    silu_grad(zl[k]) * s
                })
                .collect()
        };
        let d2 = back(&d3, OFF_W3, &c.z[1]);
        let d1 = back(&d2, OFF_W2, &c.z[0]);
        for j in 0..HIDDEN {
            g[OFF_B3 + j] += d3[j];
            g[OFF_B2 + j] += d2[j];
            g[OFF_B1 + j] += d1[j];
            g[OFF_EMB + r.y * HIDDEN + j] += d1[j];
            for k in 0..HIDDEN {
                g[OFF_W3 + j * HIDDEN + k] += d3[j] * a(1, k);
                g[OFF_W2 + j * HIDDEN + k] += d2[j] * a(0, k);
            }
            for k in 0..IN {
                g[OFF_W1 + j * IN + k] += d1[j] * c.inp[k];
            }
        }
    }
    (loss, g)
}

/// Mirrors `Uniforms` in mlp.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MlpUniforms {
    pub batch: u32,
    pub n_data: u32,
    pub num_t: u32,
    pub null_class: u32,
    pub seed: u32,
    pub sample_step: u32,
    /// sample_step: weight of x̂_0 in the step, and the clip range (0: no clip).
    pub c_x0: f32,
    pub clip_x0: f32,
    pub p_uncond: f32,
    pub guidance: f32,
    pub t: f32,
    pub c_x: f32,
    pub c_eps: f32,
    pub c_z: f32,
    pub sqrt_ab: f32,
    pub sqrt_one_minus_ab: f32,
}

/// Mirrors `Uniforms` in mlp_update.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct UpdateUniforms {
    pub batch: u32,
    pub n_params: u32,
    pub loss_slots: u32,
    /// grad_adamw_tiled: 0 = AdamW + EMA, 1 = gradient into `m`.
    pub mode: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub ema_decay: f32,
    pub _pad1: [f32; 2],
}

/// Workgroups of the per-parameter kernels (64 threads; mlp_update.wgsl's `param_index`
/// assumes rows of `grid[0]` workgroups).
pub(crate) fn param_grid(n: usize) -> Result<[u32; 3]> {
    grid_1d(n.div_ceil(64) as u64)
}

/// Workgroups of `grad_adamw_tiled`: 64 (output units) × 32 (columns) blocks of each layer's
/// [W | b | one-hots] (x: columns, y: output units, z: the 4 layers).
pub(crate) fn tiled_grad_grid(num_classes: usize) -> [u32; 3] {
    let cols = (IN + 2 + num_classes).max(HIDDEN + 1);
    [cols.div_ceil(32) as u32, HIDDEN.div_ceil(64) as u32, 4]
}

/// Record one dispatch of mlp.wgsl's `entry` over `rows` rows. Every entry point shares
/// one binding layout: `inputs` = (params, src, sched, state), `outputs` = (buf_a, buf_b,
/// buf_c); an entry point's unused slots take small dummies.
pub(crate) fn record_mlp(
    ctx: &GpuContext,
    program: &mut Program,
    (label, entry): (&'static str, &'static str),
    uniforms: &MlpUniforms,
    inputs: [&crate::gpu::BufferView; 4],
    outputs: [&crate::gpu::BufferView; 3],
    rows: usize,
) -> Result<()> {
    ctx.record(
        program,
        DispatchDesc {
            label,
            shader: &MLP,
            entry,
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(uniforms)),
            inputs: &inputs,
            outputs: &outputs,
            workgroups: grid_1d(rows.div_ceil(TILE) as u64)?,
        },
    )
}

/// Which kernel turns activations and deltas into parameter gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradKernel {
    /// One thread per parameter looping over the batch (`grad_adamw`).
    PerParameter,
    /// Tiled GEMMs through workgroup memory (`grad_adamw_tiled`).
    Tiled,
}

/// Check a flat parameter tensor against the layout.
pub fn check_params(params: &Tensor, num_classes: usize) -> Result<()> {
    if params.numel() != num_params(num_classes) {
        return Err(Error::shape(format!(
            "lab mlp: {} parameters given, a model with {num_classes} classes has {}",
            params.numel(),
            num_params(num_classes)
        )));
    }
    Ok(())
}

/// ε_θ for rows (x, y, t, class) on the GPU; `class == num_classes` is the null class.
/// Builds its buffers per call (evaluation, not a training step).
pub async fn eval_eps(
    ctx: &GpuContext,
    params: &Tensor,
    num_classes: usize,
    rows: &[[f32; 4]],
) -> Result<Vec<[f32; 2]>> {
    check_params(params, num_classes)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(r) = rows
        .iter()
        .find(|r| r[3] < 0.0 || r[3] as usize > num_classes)
    {
        return Err(Error::shape(format!(
            "lab mlp: class {} given to a model with {num_classes} classes",
            r[3]
        )));
    }
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let src = ctx.upload(&flat, &[rows.len(), 4])?;
    let out = ctx.zeros(&[rows.len(), 2])?;
    let dummy = ctx.zeros(&[4])?;
    let (da, db) = (ctx.zeros(&[1])?, ctx.zeros(&[1])?);
    let uni = MlpUniforms {
        batch: rows.len() as u32,
        null_class: num_classes as u32,
        ..Default::default()
    };
    let mut program = Program::new();
    record_mlp(
        ctx,
        &mut program,
        ("lab eval_forward", "eval_forward"),
        &uni,
        [&params.buffer, &src.buffer, &dummy.buffer, &dummy.buffer],
        [&da.buffer, &db.buffer, &out.buffer],
        rows.len(),
    )?;
    ctx.run(&program)?;
    let v = ctx.read(&out).await?;
    Ok(v.chunks(2).map(|c| [c[0], c[1]]).collect())
}

/// Record `eval_forward` (ε_θ for the rows of `rows`, (B, 4) = (x, y, t, class), into `out`,
/// (B, 2)) with its uniforms in `uniforms` (written by [`write_eval_uniforms`]) and three
/// `scratch` tensors the kernel binds but does not use: recording creates no buffer, and the
/// rows can be rewritten between runs (the field views evaluate a grid at a changing t).
/// `scratch[0]` needs at least 4 elements.
#[allow(clippy::too_many_arguments)]
pub fn record_eval_forward(
    ctx: &GpuContext,
    program: &mut Program,
    params: &Tensor,
    num_classes: usize,
    rows: &Tensor,
    out: &Tensor,
    uniforms: &wgpu::Buffer,
    scratch: &[Tensor; 3],
) -> Result<()> {
    check_params(params, num_classes)?;
    let b = rows.numel() / 4;
    if rows.shape != [b, 4] || out.shape != [b, 2] {
        return Err(Error::shape(format!(
            "lab mlp: rows {:?} must be (B, 4) and out {:?} (B, 2)",
            rows.shape, out.shape
        )));
    }
    ctx.record(
        program,
        DispatchDesc {
            label: "lab eval_forward",
            shader: &MLP,
            entry: "eval_forward",
            constants: &[],
            params: Params::Buffer(uniforms),
            inputs: &[
                &params.buffer,
                &rows.buffer,
                &scratch[0].buffer,
                &scratch[0].buffer,
            ],
            outputs: &[&scratch[1].buffer, &scratch[2].buffer, &out.buffer],
            workgroups: grid_1d(b.div_ceil(TILE) as u64)?,
        },
    )
}

/// The uniforms of [`record_eval_forward`] for `batch` rows, into a buffer made with
/// `ctx.uniform_buffer(EVAL_UNIFORM_BYTES)`.
pub fn write_eval_uniforms(ctx: &GpuContext, buf: &wgpu::Buffer, batch: usize, num_classes: usize) {
    let uni = MlpUniforms {
        batch: batch as u32,
        null_class: num_classes as u32,
        ..Default::default()
    };
    ctx.queue.write_buffer(buf, 0, bytemuck::bytes_of(&uni));
}

/// Bytes of the uniforms of [`record_eval_forward`].
pub const EVAL_UNIFORM_BYTES: usize = std::mem::size_of::<MlpUniforms>();

/// L_simple and its gradient for given rows, on the GPU (`given_fwd_bwd` + `grads_only`):
/// the fused training kernels on a batch chosen by the caller (tests, fixtures).
pub async fn loss_and_grad_gpu(
    ctx: &GpuContext,
    params: &Tensor,
    num_classes: usize,
    rows: &[Row],
    kernel: GradKernel,
) -> Result<(f64, Vec<f32>)> {
    check_params(params, num_classes)?;
    let b = rows.len();
    if b == 0 {
        return Err(Error::shape("lab mlp: an empty batch"));
    }
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            [
                r.x[0] as f32,
                r.x[1] as f32,
                r.t as f32,
                r.y as f32,
                r.eps[0] as f32,
                r.eps[1] as f32,
            ]
        })
        .collect();
    let src = ctx.upload(&flat, &[b, 6])?;
    let acts = ctx.zeros(&[b, ACT_STRIDE])?;
    let deltas = ctx.zeros(&[b, DELTA_STRIDE])?;
    let info = ctx.zeros(&[b, 2])?;
    let dummy = ctx.zeros(&[4])?;
    let n = num_params(num_classes);
    let grads = ctx.zeros(&[n])?;
    let (dv, de, ds) = (ctx.zeros(&[1])?, ctx.zeros(&[1])?, ctx.zeros(&[4])?);
    let params_copy = ctx.zeros(&[n])?;
    let uni = MlpUniforms {
        batch: b as u32,
        null_class: num_classes as u32,
        ..Default::default()
    };
    let upd = UpdateUniforms {
        batch: b as u32,
        n_params: n as u32,
        loss_slots: 1,
        mode: 1,
        ..Default::default()
    };
    let mut program = Program::new();
    record_mlp(
        ctx,
        &mut program,
        ("lab given_fwd_bwd", "given_fwd_bwd"),
        &uni,
        [&params.buffer, &src.buffer, &dummy.buffer, &dummy.buffer],
        [&acts.buffer, &deltas.buffer, &info.buffer],
        b,
    )?;
    ctx.record(
        &mut program,
        DispatchDesc {
            label: "lab grads",
            shader: &MLP_UPDATE,
            entry: match kernel {
                GradKernel::PerParameter => "grads_only",
                GradKernel::Tiled => "grad_adamw_tiled",
            },
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&upd)),
            inputs: &[&acts.buffer, &deltas.buffer, &info.buffer],
            outputs: &[
                &params_copy.buffer,
                &grads.buffer,
                &dv.buffer,
                &de.buffer,
                &ds.buffer,
            ],
            workgroups: match kernel {
                GradKernel::PerParameter => param_grid(n)?,
                GradKernel::Tiled => tiled_grad_grid(num_classes),
            },
        },
    )?;
    ctx.run(&program)?;
    let info_v = ctx.read(&info).await?;
    let loss = info_v.chunks(2).map(|c| c[0] as f64).sum::<f64>() / (2.0 * b as f64);
    Ok((loss, ctx.read(&grads).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx};

    /// shaders/lib/mlp_layout.wgsl (which mlp.wgsl and mlp_update.wgsl index the parameters
    /// with) holds exactly this module's sizes and offsets.
    #[test]
    fn shader_layout_matches_the_rust_layout() {
        let want = [
            ("H", HIDDEN),
            ("E", TIME_DIM),
            ("IN", IN),
            ("AS", ACT_STRIDE),
            ("DS", DELTA_STRIDE),
            ("OFF_W1", OFF_W1),
            ("OFF_B1", OFF_B1),
            ("OFF_W2", OFF_W2),
            ("OFF_B2", OFF_B2),
            ("OFF_W3", OFF_W3),
            ("OFF_B3", OFF_B3),
            ("OFF_W4", OFF_W4),
            ("OFF_B4", OFF_B4),
            ("OFF_EMB", OFF_EMB),
        ];
        let mut got = Vec::new();
        for line in crate::shaders::MLP_LAYOUT.source.lines() {
            let Some(rest) = line.strip_prefix("const ") else {
                continue;
            };
            let (name, value) = rest.split_once(": u32 = ").expect(line);
            let value = value
                .split('u')
                .next()
                .unwrap()
                .parse::<usize>()
                .expect(line);
            got.push((name, value));
        }
        assert_eq!(got, want);
        // mlp.wgsl's rows per tile.
        assert!(MLP.body.contains(&format!("const FR: u32 = {TILE}u;")));
    }

    fn random_rows(n: usize, num_classes: usize, seed: u64) -> Vec<Row> {
        let mut rng = SplitMix64(seed);
        let mut u = move || rng.next_f64() * 2.0 - 1.0;
        (0..n)
            .map(|i| Row {
                x: [2.0 * u(), 2.0 * u()],
                t: ((u() + 1.0) * 499.5).floor(),
                y: i % (num_classes + 1),
                eps: [u(), u()],
            })
            .collect()
    }

    fn as_f64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    #[test]
    fn layout_is_consistent() {
        assert_eq!(OFF_EMB, 37762);
        assert_eq!(ACT_STRIDE, 418);
        assert_eq!(DELTA_STRIDE, 386);
        let t = tensors(3);
        let total: usize = t.iter().map(|(_, _, s)| s.iter().product::<usize>()).sum();
        assert_eq!(total, num_params(3));
        for w in t.windows(2) {
            assert_eq!(
                w[0].1 + w[0].2.iter().product::<usize>(),
                w[1].1,
                "{}",
                w[1].0
            );
        }
    }

    /// The f64 reference gradient against central finite differences of its own loss,
    /// on a sample of parameters from every tensor.
    #[test]
    fn reference_gradient_matches_finite_differences() {
        let nc = 2;
        let p = as_f64(&init_params(nc, 3));
        let rows = random_rows(5, nc, 4);
        let (_, g) = loss_and_grad_ref(&p, &rows);
        let mut rng = SplitMix64(9);
        for (name, off, shape) in tensors(nc) {
            let len: usize = shape.iter().product();
            for _ in 0..6 {
                let i = off + rng.below(len as u64) as usize;
                let h = 1e-5;
                let (mut pp, mut pm) = (p.clone(), p.clone());
                pp[i] += h;
                pm[i] -= h;
                let fd =
                    (loss_and_grad_ref(&pp, &rows).0 - loss_and_grad_ref(&pm, &rows).0) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() <= 1e-7 + 1e-5 * fd.abs(),
                    "{name}[{}]: finite difference {fd}, gradient {}",
                    i - off,
                    g[i]
                );
            }
        }
    }

    /// The fused GPU kernels (forward, backward, per-parameter gradient) against the f64
    /// reference, with a batch that is not a multiple of either tile.
    #[test]
    fn gpu_forward_and_gradient_match_reference() {
        let ctx = ctx();
        let nc = 3;
        let p32 = init_params(nc, 5);
        let p = as_f64(&p32);
        // 37 rows: several tiles of both kernels' sizes, the last one partial.
        let rows = random_rows(37, nc, 6);
        let params = ctx.upload(&p32, &[p32.len()]).unwrap();
        let eval_rows: Vec<[f32; 4]> = rows
            .iter()
            .map(|r| [r.x[0] as f32, r.x[1] as f32, r.t as f32, r.y as f32])
            .collect();
        let eps = block_on(eval_eps(&ctx, &params, nc, &eval_rows)).unwrap();
        let got: Vec<f32> = eps.iter().flatten().copied().collect();
        let want: Vec<f64> = rows
            .iter()
            .flat_map(|r| forward_ref(&p, r.x, r.t, r.y))
            .collect();
        assert_close(&got, &want, 2e-4, 1e-3, "eval_forward");
        let (want_loss, want_g) = loss_and_grad_ref(&p, &rows);
        let scale = want_g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for kernel in [GradKernel::PerParameter, GradKernel::Tiled] {
            let (loss, g) = block_on(loss_and_grad_gpu(&ctx, &params, nc, &rows, kernel)).unwrap();
            assert!(
                (loss - want_loss).abs() < 1e-4 * (1.0 + want_loss),
                "loss {loss} vs {want_loss}"
            );
            assert_close(
                &g,
                &want_g,
                1e-4 * scale,
                1e-3,
                &format!("{kernel:?} gradient"),
            );
        }
    }

    /// The weights of tests/fixtures/lab/make_lab_fixture.py: scale · sin(0.37 i + 0.5),
    /// rounded to f32, with the scale of each tensor's default initialisation bound.
    fn fixture_params(nc: usize) -> Vec<f32> {
        let (si, sh) = (1.0 / (IN as f64).sqrt(), 1.0 / (HIDDEN as f64).sqrt());
        let scales = [si, si, sh, sh, sh, sh, sh, sh, 0.1];
        let mut p = Vec::new();
        for ((_, _, shape), s) in tensors(nc).iter().zip(scales) {
            for _ in 0..shape.iter().product::<usize>() {
                p.push((s * (0.37 * p.len() as f64 + 0.5).sin()) as f32);
            }
        }
        p
    }

    fn fixture_tensor(st: &safetensors::SafeTensors, name: &str) -> Vec<f64> {
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F64, "{name}");
        t.data()
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// The CPU reference and the GPU kernels against PyTorch (nn.Linear, nn.Embedding,
    /// F.silu, F.mse_loss and autograd in float64; tests/fixtures/lab/make_lab_fixture.py).
    #[test]
    fn matches_pytorch_fixture() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lab/mlp.safetensors"
        ))
        .unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let nc = 2;
        let p32 = fixture_params(nc);
        let p = as_f64(&p32);
        let rows: Vec<Row> = fixture_tensor(&st, "rows")
            .chunks(6)
            .map(|r| Row {
                x: [r[0], r[1]],
                t: r[2],
                y: r[3] as usize,
                eps: [r[4], r[5]],
            })
            .collect();
        let out = fixture_tensor(&st, "out");
        let loss = fixture_tensor(&st, "loss")[0];
        let grad = fixture_tensor(&st, "grad_every_19th");
        // CPU f64 reference: to rounding.
        let cpu_out: Vec<f64> = rows
            .iter()
            .flat_map(|r| forward_ref(&p, r.x, r.t, r.y))
            .collect();
        for (a, b) in cpu_out.iter().zip(&out) {
            assert!((a - b).abs() < 1e-10, "reference output {a} vs torch {b}");
        }
        let (l, g) = loss_and_grad_ref(&p, &rows);
        assert!(
            (l - loss).abs() < 1e-10,
            "reference loss {l} vs torch {loss}"
        );
        let g19: Vec<f64> = g.iter().step_by(19).copied().collect();
        assert_eq!(g19.len(), grad.len());
        for (i, (a, b)) in g19.iter().zip(&grad).enumerate() {
            assert!(
                (a - b).abs() < 1e-10,
                "reference grad {}: {a} vs torch {b}",
                19 * i
            );
        }
        // GPU (f32).
        let ctx = ctx();
        let params = ctx.upload(&p32, &[p32.len()]).unwrap();
        let eval_rows: Vec<[f32; 4]> = rows
            .iter()
            .map(|r| [r.x[0] as f32, r.x[1] as f32, r.t as f32, r.y as f32])
            .collect();
        let got: Vec<f32> = block_on(eval_eps(&ctx, &params, nc, &eval_rows))
            .unwrap()
            .into_iter()
            .flatten()
            .collect();
        assert_close(&got, &out, 2e-4, 1e-3, "GPU output vs torch");
        let (gl, gg) = block_on(loss_and_grad_gpu(
            &ctx,
            &params,
            nc,
            &rows,
            GradKernel::Tiled,
        ))
        .unwrap();
        assert!(
            (gl - loss).abs() < 1e-4 * (1.0 + loss),
            "GPU loss {gl} vs torch {loss}"
        );
        let gg19: Vec<f32> = gg.iter().step_by(19).copied().collect();
        let scale = grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close(&gg19, &grad, 1e-4 * scale, 1e-3, "GPU gradient vs torch");
    }

    #[test]
    fn bad_arguments_are_errors() {
        let ctx = ctx();
        let params = ctx.zeros(&[num_params(1)]).unwrap();
        let e = block_on(eval_eps(&ctx, &params, 2, &[[0.0; 4]])).unwrap_err();
        assert!(e.to_string().contains("parameters"), "{e}");
        let e = block_on(eval_eps(&ctx, &params, 1, &[[0.0, 0.0, 0.0, 2.0]])).unwrap_err();
        assert!(e.to_string().contains("class 2"), "{e}");
    }
}
