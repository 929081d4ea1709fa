//! Training-side diffusion kernels (`shaders/loss.wgsl`): the forward noising q(x_t | x_0)
//! with the network's regression target, and the mean squared error with its gradient.

use crate::diffusion::schedule::PredictionType;
use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::LOSS;

/// Mirrors `Params` in loss.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LossParams {
    numel: u32,
    inner: u32,
    mode: u32,
    _pad: u32,
    scale: f32,
    _pad2: [u32; 3],
}

const WORKGROUP: u64 = 256;
/// Elements per workgroup of `mse_partials` (`CHUNK` in loss.wgsl).
const CHUNK: usize = 2048;

fn as_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(format!("{what}: {n} is too large for one kernel")))
}

fn distinct(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if std::sync::Arc::ptr_eq(&a.buffer, &b.buffer) {
        return Err(Error::shape(format!("{what} must not share a buffer")));
    }
    Ok(())
}

/// The training input and target for a batch: x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (Ho et al. 2020,
/// eq. 4) and the target ε, v = √ᾱ_t ε − √(1−ᾱ_t) x₀ or x₀ by the prediction type (as
/// diffusers' `DDPMScheduler.add_noise` / `get_velocity`).
pub struct QSampleOp {
    coef: Tensor,
}

impl QSampleOp {
    /// `x0`, `eps`, `x_t`, `target`: (N, …) of one shape; `coef`: (N, 2) holding
    /// [√ᾱ_t, √(1−ᾱ_t)] for each sample's timestep, rewritten by the CPU each step
    /// (see [`set_alphas_cumprod`](Self::set_alphas_cumprod)).
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        x0: &Tensor,
        eps: &Tensor,
        coef: &Tensor,
        x_t: &Tensor,
        target: &Tensor,
        prediction: PredictionType,
    ) -> Result<QSampleOp> {
        let n = *x0
            .shape
            .first()
            .ok_or_else(|| Error::shape("q_sample: x0 has no batch dimension"))?;
        if n == 0 || x0.numel() == 0 {
            return Err(Error::shape(format!(
                "q_sample: x0 is empty ({:?})",
                x0.shape
            )));
        }
        expect_shape(eps, &x0.shape, "q_sample: eps")?;
        expect_shape(x_t, &x0.shape, "q_sample: x_t")?;
        expect_shape(target, &x0.shape, "q_sample: target")?;
        expect_shape(coef, &[n, 2], "q_sample: coef")?;
        distinct(x_t, target, "q_sample: x_t and target")?;
        for (t, what) in [(x0, "x0"), (eps, "eps"), (coef, "coef")] {
            distinct(t, x_t, &format!("q_sample: {what} and x_t"))?;
            distinct(t, target, &format!("q_sample: {what} and target"))?;
        }
        let params = LossParams {
            numel: as_u32(x0.numel(), "q_sample")?,
            inner: as_u32(x0.numel() / n, "q_sample")?,
            mode: match prediction {
                PredictionType::Epsilon => 0,
                PredictionType::VPrediction => 1,
                PredictionType::Sample => 2,
            },
            ..Default::default()
        };
        ctx.record(
            program,
            DispatchDesc {
                label: "q_sample",
                shader: &LOSS,
                entry: "q_sample",
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&params)),
                inputs: &[&x0.buffer, &eps.buffer, &coef.buffer],
                outputs: &[&x_t.buffer, &target.buffer],
                workgroups: grid_1d((x0.numel() as u64).div_ceil(WORKGROUP))?,
            },
        )?;
        Ok(QSampleOp { coef: coef.clone() })
    }

    /// Write `coef` from each sample's ᾱ_t (computed in f64, then rounded to f32).
    pub fn set_alphas_cumprod(&self, ctx: &GpuContext, alpha_bar: &[f64]) -> Result<()> {
        ctx.write(&self.coef, &q_sample_coefficients(alpha_bar))
    }
}

/// [√ᾱ, √(1−ᾱ)] per sample, flattened (N, 2), for [`QSampleOp`]'s `coef`.
pub fn q_sample_coefficients(alpha_bar: &[f64]) -> Vec<f32> {
    alpha_bar
        .iter()
        .flat_map(|&a| [a.sqrt() as f32, (1.0 - a).sqrt() as f32])
        .collect()
}

/// Length of the scratch `partials` tensor [`mse_loss`] needs for `numel` elements.
pub fn mse_partials_len(numel: usize) -> usize {
    numel.div_ceil(CHUNK).max(1)
}

/// loss = mean((pred − target)²) (L_simple, Ho et al. 2020 eq. 14, as
/// `F.mse_loss(pred, target)`) and its gradient dpred = 2(pred − target)/numel. `loss`: (1);
/// `partials`: ([`mse_partials_len`]) scratch. Two passes in a fixed order, so the loss is
/// deterministic.
#[allow(clippy::too_many_arguments)]
pub fn mse_loss(
    ctx: &GpuContext,
    program: &mut Program,
    pred: &Tensor,
    target: &Tensor,
    dpred: &Tensor,
    loss: &Tensor,
    partials: &Tensor,
) -> Result<()> {
    record_mse(ctx, program, pred, target, None, dpred, loss, partials)
}

/// [`mse_loss`] with a weight per sample: loss = (1/numel) Σ_n w_n Σ_j (pred − target)²_nj,
/// i.e. the mean over samples of w_n × that sample's mean squared error (diffusers'
/// `mse_loss(reduction="none").mean(dims) * weights`, then `.mean()`), and dpred =
/// 2 w_n (pred − target)/numel. `weights`: (N), N = pred's first dimension, rewritten by the
/// caller per step (min-SNR-γ weighting, Hang et al. 2023).
#[allow(clippy::too_many_arguments)]
pub fn weighted_mse_loss(
    ctx: &GpuContext,
    program: &mut Program,
    pred: &Tensor,
    target: &Tensor,
    weights: &Tensor,
    dpred: &Tensor,
    loss: &Tensor,
    partials: &Tensor,
) -> Result<()> {
    record_mse(
        ctx,
        program,
        pred,
        target,
        Some(weights),
        dpred,
        loss,
        partials,
    )
}

#[allow(clippy::too_many_arguments)]
fn record_mse(
    ctx: &GpuContext,
    program: &mut Program,
    pred: &Tensor,
    target: &Tensor,
    weights: Option<&Tensor>,
    dpred: &Tensor,
    loss: &Tensor,
    partials: &Tensor,
) -> Result<()> {
    let numel = pred.numel();
    if numel == 0 {
        return Err(Error::shape("mse_loss: pred is empty"));
    }
    expect_shape(target, &pred.shape, "mse_loss: target")?;
    expect_shape(dpred, &pred.shape, "mse_loss: dpred")?;
    if loss.numel() != 1 {
        return Err(Error::shape(format!(
            "mse_loss: loss: expected 1 element, got shape {:?}",
            loss.shape
        )));
    }
    let np = mse_partials_len(numel);
    if partials.numel() != np {
        return Err(Error::shape(format!(
            "mse_loss: partials: expected {np} elements for {numel} inputs, got shape {:?}",
            partials.shape
        )));
    }
    for (t, what) in [(pred, "pred"), (target, "target")] {
        distinct(t, dpred, &format!("mse_loss: {what} and dpred"))?;
        distinct(t, partials, &format!("mse_loss: {what} and partials"))?;
    }
    distinct(dpred, partials, "mse_loss: dpred and partials")?;
    distinct(loss, partials, "mse_loss: loss and partials")?;
    let n32 = as_u32(numel, "mse_loss")?;
    let (mode, inner) = match weights {
        Some(w) => {
            let n = pred.shape[0];
            expect_shape(w, &[n], "mse_loss: weights")?;
            distinct(w, dpred, "mse_loss: weights and dpred")?;
            distinct(w, partials, "mse_loss: weights and partials")?;
            (1, as_u32(numel / n, "mse_loss")?)
        }
        None => (0, 0),
    };
    let params = LossParams {
        numel: n32,
        inner,
        mode,
        scale: (2.0 / numel as f64) as f32,
        ..Default::default()
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "mse_partials",
            shader: &LOSS,
            entry: "mse_partials",
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[
                &pred.buffer,
                &target.buffer,
                &weights.unwrap_or(target).buffer,
            ],
            outputs: &[&dpred.buffer, &partials.buffer],
            workgroups: grid_1d(numel.div_ceil(CHUNK) as u64)?,
        },
    )?;
    let params = LossParams {
        numel: n32,
        inner: np as u32,
        scale: (1.0 / numel as f64) as f32,
        ..Default::default()
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "mse_finalize",
            shader: &LOSS,
            entry: "mse_finalize",
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&partials.buffer, &partials.buffer, &partials.buffer],
            outputs: &[&loss.buffer],
            workgroups: [1, 1, 1],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    #[test]
    fn q_sample_matches_f64_for_every_prediction_type() {
        let ctx = ctx();
        let shape = [3, 2, 7, 5];
        let n: usize = shape.iter().product();
        let x0 = random(n, 1);
        let eps = random(n, 2);
        let tx0 = ctx.upload(&x0, &shape).unwrap();
        let teps = ctx.upload(&eps, &shape).unwrap();
        let coef = ctx.zeros(&[3, 2]).unwrap();
        let xt = ctx.zeros(&shape).unwrap();
        let target = ctx.zeros(&shape).unwrap();
        // Near-clean, middle and near-pure-noise timesteps.
        let alpha_bar = [0.9999, 0.5, 0.0047];
        let inner = n / 3;
        for pt in [
            PredictionType::Epsilon,
            PredictionType::VPrediction,
            PredictionType::Sample,
        ] {
            let mut p = Program::new();
            let op = QSampleOp::record(&ctx, &mut p, &tx0, &teps, &coef, &xt, &target, pt).unwrap();
            op.set_alphas_cumprod(&ctx, &alpha_bar).unwrap();
            ctx.run(&p).unwrap();
            let (mut want_xt, mut want_t) = (vec![0.0; n], vec![0.0; n]);
            for i in 0..n {
                let ab = alpha_bar[i / inner];
                let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
                let (x, e) = (x0[i] as f64, eps[i] as f64);
                want_xt[i] = a * x + s * e;
                want_t[i] = match pt {
                    PredictionType::Epsilon => e,
                    PredictionType::VPrediction => a * e - s * x,
                    PredictionType::Sample => x,
                };
            }
            let what = pt.name();
            assert_close(
                &block_on(ctx.read(&xt)).unwrap(),
                &want_xt,
                1e-7,
                1e-6,
                &format!("{what}: x_t"),
            );
            assert_close(
                &block_on(ctx.read(&target)).unwrap(),
                &want_t,
                1e-7,
                1e-6,
                &format!("{what}: target"),
            );
        }
    }

    fn mse_f64(pred: &[f64], target: &[f32]) -> f64 {
        pred.iter()
            .zip(target)
            .map(|(&a, &b)| (a - b as f64).powi(2))
            .sum::<f64>()
            / pred.len() as f64
    }

    /// Loss and gradient vs f64, on sizes below, at and past one 2048-element chunk, and
    /// the gradient of a small problem against central differences of the f64 loss.
    #[test]
    fn mse_loss_and_grad_match_f64() {
        let ctx = ctx();
        for (k, shape) in [[1usize, 1, 3, 5], [2, 4, 16, 16], [3, 3, 29, 31]]
            .iter()
            .enumerate()
        {
            let n: usize = shape.iter().product();
            let pred = random(n, 10 + k as u64);
            let target = random(n, 20 + k as u64);
            let tp = ctx.upload(&pred, shape).unwrap();
            let tt = ctx.upload(&target, shape).unwrap();
            let dpred = ctx.zeros(shape).unwrap();
            let loss = ctx.zeros(&[1]).unwrap();
            let partials = ctx.zeros(&[mse_partials_len(n)]).unwrap();
            let mut p = Program::new();
            mse_loss(&ctx, &mut p, &tp, &tt, &dpred, &loss, &partials).unwrap();
            ctx.run(&p).unwrap();
            let pred64: Vec<f64> = pred.iter().map(|&x| x as f64).collect();
            let want_loss = mse_f64(&pred64, &target);
            let what = format!("shape {shape:?}");
            // f32 sum of n squares: relative error ~1e-6.
            assert_close(
                &block_on(ctx.read(&loss)).unwrap(),
                &[want_loss],
                0.0,
                1e-5,
                &format!("{what}: loss"),
            );
            let got_grad = block_on(ctx.read(&dpred)).unwrap();
            let want_grad: Vec<f64> = pred64
                .iter()
                .zip(&target)
                .map(|(&a, &b)| 2.0 * (a - b as f64) / n as f64)
                .collect();
            assert_close(&got_grad, &want_grad, 1e-12, 1e-6, &format!("{what}: grad"));
            if n <= 64 {
                // Central differences of the f64 loss, h = 1e-6.
                let h = 1e-6;
                let fd: Vec<f64> = (0..n)
                    .map(|i| {
                        let mut pp = pred64.clone();
                        pp[i] += h;
                        let up = mse_f64(&pp, &target);
                        pp[i] -= 2.0 * h;
                        let down = mse_f64(&pp, &target);
                        (up - down) / (2.0 * h)
                    })
                    .collect();
                assert_close(&got_grad, &fd, 1e-8, 1e-5, &format!("{what}: finite diff"));
            }
        }
    }

    /// (1/numel) Σ_n w_n Σ_j (pred − target)², in f64.
    fn weighted_mse_f64(pred: &[f64], target: &[f32], w: &[f64]) -> f64 {
        let inner = pred.len() / w.len();
        pred.iter()
            .zip(target)
            .enumerate()
            .map(|(i, (&a, &b))| w[i / inner] * (a - b as f64).powi(2))
            .sum::<f64>()
            / pred.len() as f64
    }

    #[test]
    fn weighted_mse_loss_and_grad_match_f64() {
        let ctx = ctx();
        for (k, shape) in [[1usize, 1, 3, 5], [3, 2, 16, 16], [4, 3, 29, 31]]
            .iter()
            .enumerate()
        {
            let n: usize = shape.iter().product();
            let pred = random(n, 30 + k as u64);
            let target = random(n, 40 + k as u64);
            // Weights as min-SNR-γ gives them: tiny near t = 0, 1 at high noise.
            let w: Vec<f32> = (0..shape[0])
                .map(|i| [5e-4, 1.0, 0.37, 0.02][i % 4])
                .collect();
            let tp = ctx.upload(&pred, shape).unwrap();
            let tt = ctx.upload(&target, shape).unwrap();
            let tw = ctx.upload(&w, &[shape[0]]).unwrap();
            let dpred = ctx.zeros(shape).unwrap();
            let loss = ctx.zeros(&[1]).unwrap();
            let partials = ctx.zeros(&[mse_partials_len(n)]).unwrap();
            let mut p = Program::new();
            weighted_mse_loss(&ctx, &mut p, &tp, &tt, &tw, &dpred, &loss, &partials).unwrap();
            ctx.run(&p).unwrap();
            let pred64: Vec<f64> = pred.iter().map(|&x| x as f64).collect();
            let w64: Vec<f64> = w.iter().map(|&x| x as f64).collect();
            let what = format!("weighted, shape {shape:?}");
            assert_close(
                &block_on(ctx.read(&loss)).unwrap(),
                &[weighted_mse_f64(&pred64, &target, &w64)],
                0.0,
                1e-5,
                &format!("{what}: loss"),
            );
            let inner = n / shape[0];
            let got_grad = block_on(ctx.read(&dpred)).unwrap();
            let want_grad: Vec<f64> = pred64
                .iter()
                .zip(&target)
                .enumerate()
                .map(|(i, (&a, &b))| 2.0 * w64[i / inner] * (a - b as f64) / n as f64)
                .collect();
            assert_close(&got_grad, &want_grad, 1e-12, 1e-6, &format!("{what}: grad"));
            if n <= 64 {
                let h = 1e-6;
                let fd: Vec<f64> = (0..n)
                    .map(|i| {
                        let mut pp = pred64.clone();
                        pp[i] += h;
                        let up = weighted_mse_f64(&pp, &target, &w64);
                        pp[i] -= 2.0 * h;
                        let down = weighted_mse_f64(&pp, &target, &w64);
                        (up - down) / (2.0 * h)
                    })
                    .collect();
                assert_close(&got_grad, &fd, 1e-8, 1e-5, &format!("{what}: finite diff"));
            }
            // Unit weights give the plain loss bit for bit.
            ctx.write(&tw, &vec![1.0; shape[0]]).unwrap();
            ctx.run(&p).unwrap();
            let weighted1 = block_on(ctx.read(&loss)).unwrap();
            let grad1 = block_on(ctx.read(&dpred)).unwrap();
            let mut q = Program::new();
            mse_loss(&ctx, &mut q, &tp, &tt, &dpred, &loss, &partials).unwrap();
            ctx.run(&q).unwrap();
            assert_eq!(weighted1, block_on(ctx.read(&loss)).unwrap(), "{what}");
            assert_eq!(grad1, block_on(ctx.read(&dpred)).unwrap(), "{what}");
        }
        // Weights must be (N).
        let a = ctx.zeros(&[2, 1, 4, 4]).unwrap();
        let b = ctx.zeros(&[2, 1, 4, 4]).unwrap();
        let d = ctx.zeros(&[2, 1, 4, 4]).unwrap();
        let loss = ctx.zeros(&[1]).unwrap();
        let bad_w = ctx.zeros(&[3]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            weighted_mse_loss(
                &ctx,
                &mut p,
                &a,
                &b,
                &bad_w,
                &d,
                &loss,
                &ctx.zeros(&[1]).unwrap()
            ),
            Err(Error::Shape(_))
        ));
    }

    #[test]
    fn loss_bad_shapes_are_errors() {
        let ctx = ctx();
        let a = ctx.zeros(&[2, 1, 4, 4]).unwrap();
        let b = ctx.zeros(&[2, 1, 4, 5]).unwrap();
        let c = ctx.zeros(&[2, 1, 4, 4]).unwrap();
        let d = ctx.zeros(&[2, 1, 4, 4]).unwrap();
        let loss = ctx.zeros(&[1]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            mse_loss(&ctx, &mut p, &a, &b, &c, &loss, &ctx.zeros(&[1]).unwrap()),
            Err(Error::Shape(_))
        ));
        // Wrong partials length.
        assert!(matches!(
            mse_loss(&ctx, &mut p, &a, &c, &d, &loss, &ctx.zeros(&[2]).unwrap()),
            Err(Error::Shape(_))
        ));
        // coef must be (N, 2).
        let coef = ctx.zeros(&[3, 2]).unwrap();
        assert!(matches!(
            QSampleOp::record(&ctx, &mut p, &a, &c, &coef, &d, &b, PredictionType::Epsilon),
            Err(Error::Shape(_))
        ));
        let coef = ctx.zeros(&[2, 2]).unwrap();
        assert!(matches!(
            QSampleOp::record(&ctx, &mut p, &a, &c, &coef, &d, &d, PredictionType::Epsilon),
            Err(Error::Shape(_))
        ));
    }
}
