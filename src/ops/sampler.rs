//! The sampler update (`shaders/sampler.wgsl`): one elementwise kernel applies a step's
//! [`StepCoefficients`] (DDPM/DDIM/DPM-Solver++, any prediction type), and classifier-free guidance
//! (Ho & Salimans 2022) combines the conditional and unconditional halves of a batch.

use crate::diffusion::StepCoefficients;
use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::SAMPLER;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct StepParams {
    x0_from_xt: f32,
    x0_from_model: f32,
    eps_from_xt: f32,
    eps_from_model: f32,
    clip: f32,
    prev_from_x0: f32,
    prev_from_xt: f32,
    prev_from_eps: f32,
    noise_scale: f32,
    numel: u32,
    guidance_scale: f32,
    prev_from_prev_x0: f32,
    threshold_ratio: f32,
    threshold_max: f32,
    per_sample: u32,
    _pad: u32,
}

const WORKGROUP: u64 = 256;

fn numel_u32(t: &Tensor, what: &str) -> Result<u32> {
    u32::try_from(t.numel())
        .map_err(|_| Error::shape(format!("{what} is too large for one kernel")))
}

/// A recorded sampler step: `x_t` ← x_prev and `x0` ← x̂_0, with the coefficients of the
/// latest [`SamplerStepOp::set`].
pub struct SamplerStepOp {
    params: wgpu::Buffer,
    numel: u32,
    per_sample: u32,
    /// (N) dynamic thresholding's s per sample.
    pub scales: Tensor,
}

impl SamplerStepOp {
    /// Record the step. All four tensors have one shape; `x_t` is updated in place, `x0`
    /// read (the previous x̂_0, only when `prev_from_prev_x0` is nonzero) and written. `noise` is read only when the step's noise_scale is nonzero. The
    /// coefficients are all zero until [`Self::set`].
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        model_out: &Tensor,
        noise: &Tensor,
        x_t: &Tensor,
        x0: &Tensor,
    ) -> Result<SamplerStepOp> {
        expect_shape(model_out, &x_t.shape, "sampler step: model_out")?;
        expect_shape(noise, &x_t.shape, "sampler step: noise")?;
        expect_shape(x0, &x_t.shape, "sampler step: x0")?;
        let numel = numel_u32(x_t, "sampler step: x_t")?;
        let n = x_t.shape.first().copied().unwrap_or(1).max(1);
        let groups = u32::try_from(n)
            .ok()
            .filter(|&g| g <= 65535)
            .ok_or_else(|| Error::shape(format!("sampler step: batch {n} > 65535")))?;
        let op = SamplerStepOp {
            params: ctx.uniform_buffer(std::mem::size_of::<StepParams>()),
            numel,
            per_sample: (numel as usize / n).max(1) as u32,
            scales: ctx.zeros(&[n])?,
        };
        op.set(ctx, &StepCoefficients::default());
        // Dynamic thresholding's per-sample s first (returns at once when it is off).
        ctx.record(
            program,
            DispatchDesc {
                label: "threshold_scales",
                shader: &SAMPLER,
                entry: "threshold_scales",
                constants: &[],
                params: Params::Buffer(&op.params),
                inputs: &[&model_out.buffer, &noise.buffer],
                outputs: &[&x_t.buffer, &x0.buffer, &op.scales.buffer],
                workgroups: [groups, 1, 1],
            },
        )?;
        ctx.record(
            program,
            DispatchDesc {
                label: "sampler_step",
                shader: &SAMPLER,
                entry: "sampler_step",
                constants: &[],
                params: Params::Buffer(&op.params),
                inputs: &[&model_out.buffer, &noise.buffer],
                outputs: &[&x_t.buffer, &x0.buffer, &op.scales.buffer],
                workgroups: grid_1d((numel as u64).div_ceil(WORKGROUP))?,
            },
        )?;
        Ok(op)
    }

    /// Write this step's coefficients (rounded to f32) for the next run.
    pub fn set(&self, ctx: &GpuContext, c: &StepCoefficients) {
        let params = StepParams {
            x0_from_xt: c.x0_from_xt as f32,
            x0_from_model: c.x0_from_model as f32,
            eps_from_xt: c.eps_from_xt as f32,
            eps_from_model: c.eps_from_model as f32,
            clip: c.clip as f32,
            prev_from_x0: c.prev_from_x0 as f32,
            prev_from_xt: c.prev_from_xt as f32,
            prev_from_eps: c.prev_from_eps as f32,
            noise_scale: c.noise_scale as f32,
            numel: self.numel,
            guidance_scale: 0.0,
            prev_from_prev_x0: c.prev_from_prev_x0 as f32,
            threshold_ratio: c.threshold_ratio as f32,
            threshold_max: c.threshold_max as f32,
            per_sample: self.per_sample,
            _pad: 0,
        };
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
    }
}

/// A recorded classifier-free guidance combination with the scale of the latest
/// [`GuidanceOp::set`].
pub struct GuidanceOp {
    params: wgpu::Buffer,
    numel: u32,
}

impl GuidanceOp {
    /// Record out = uncond + scale · (cond − uncond), where `model_out` is (2N, ...) with the
    /// conditional outputs first and the unconditional last, and `out` is (N, ...). The scale
    /// is 1 (plain conditional output) until [`Self::set`].
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        model_out: &Tensor,
        out: &Tensor,
    ) -> Result<GuidanceOp> {
        let bad = || {
            Error::shape(format!(
                "guidance: model_out {:?} must be out {:?} with twice the batch",
                model_out.shape, out.shape
            ))
        };
        match (model_out.shape.split_first(), out.shape.split_first()) {
            (Some((&n2, rest2)), Some((&n, rest))) if n2 == 2 * n && rest2 == rest => {}
            _ => return Err(bad()),
        }
        numel_u32(model_out, "guidance: model_out")?;
        let numel = numel_u32(out, "guidance: out")?;
        let op = GuidanceOp {
            params: ctx.uniform_buffer(std::mem::size_of::<StepParams>()),
            numel,
        };
        op.set(ctx, 1.0);
        ctx.record(
            program,
            DispatchDesc {
                label: "guidance",
                shader: &SAMPLER,
                entry: "guidance",
                constants: &[],
                params: Params::Buffer(&op.params),
                // The second input slot (noise) is unused here; x0 (binding 4) is not bound.
                inputs: &[&model_out.buffer, &model_out.buffer],
                outputs: &[&out.buffer],
                workgroups: grid_1d((numel as u64).div_ceil(WORKGROUP))?,
            },
        )?;
        Ok(op)
    }

    /// Set the guidance scale w for the next run (1: conditional only, 0: unconditional).
    pub fn set(&self, ctx: &GpuContext, scale: f32) {
        let params = StepParams {
            numel: self.numel,
            guidance_scale: scale,
            ..Default::default()
        };
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
    }
}

/// A recorded guidance rescale (Lin et al. 2024; diffusers `guidance_rescale`), in place on
/// the guided output `out` (N, ...), with the conditional outputs the first N of
/// `model_out` (2N, ...): out ← out · (φ·std(cond)/std(out) + 1 − φ), std per sample. φ = 0
/// (the default until [`GuidanceRescaleOp::set`]) leaves `out` unchanged.
pub struct GuidanceRescaleOp {
    params: wgpu::Buffer,
    numel: u32,
}

impl GuidanceRescaleOp {
    pub fn record(
        ctx: &GpuContext,
        program: &mut Program,
        model_out: &Tensor,
        out: &Tensor,
    ) -> Result<GuidanceRescaleOp> {
        let (n, per) = match (model_out.shape.split_first(), out.shape.split_first()) {
            (Some((&n2, rest2)), Some((&n, rest))) if n2 == 2 * n && rest2 == rest && n > 0 => {
                (n, rest.iter().product::<usize>())
            }
            _ => {
                return Err(Error::shape(format!(
                    "guidance rescale: model_out {:?} must be out {:?} with twice the batch",
                    model_out.shape, out.shape
                )))
            }
        };
        numel_u32(model_out, "guidance rescale: model_out")?;
        let numel =
            u32::try_from(per).map_err(|_| Error::shape("guidance rescale: samples too large"))?;
        let groups = u32::try_from(n)
            .ok()
            .filter(|&g| g <= 65535)
            .ok_or_else(|| Error::shape(format!("guidance rescale: batch {n} > 65535")))?;
        let op = GuidanceRescaleOp {
            params: ctx.uniform_buffer(std::mem::size_of::<StepParams>()),
            numel,
        };
        op.set(ctx, 0.0);
        ctx.record(
            program,
            DispatchDesc {
                label: "guidance_rescale",
                shader: &SAMPLER,
                entry: "guidance_rescale",
                constants: &[],
                params: Params::Buffer(&op.params),
                // As for GuidanceOp: the noise slot is unused, x0 is not bound.
                inputs: &[&model_out.buffer, &model_out.buffer],
                outputs: &[&out.buffer],
                workgroups: [groups, 1, 1],
            },
        )?;
        Ok(op)
    }

    /// Set φ for the next run (0: off, 1: fully rescaled; diffusers suggests 0.7).
    pub fn set(&self, ctx: &GpuContext, phi: f32) {
        let params = StepParams {
            numel: self.numel,
            guidance_scale: phi,
            ..Default::default()
        };
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
    }
}

/// diffusers' `_threshold_sample` s per sample in f64: torch.quantile (linear) of |x̂_0|,
/// then clamp(min = 1, max = `max`). `x0` is (N, per).
pub fn threshold_reference(x0: &[f64], n: usize, ratio: f64, max: f64) -> Vec<f64> {
    let per = x0.len() / n.max(1);
    (0..n)
        .map(|i| {
            let mut a: Vec<f64> = x0[i * per..(i + 1) * per].iter().map(|v| v.abs()).collect();
            a.sort_by(f64::total_cmp);
            let q = ratio * (per - 1) as f64;
            let k = (q.floor() as usize).min(per - 1);
            let v = a[k] + (q - k as f64) * (a[(k + 1).min(per - 1)] - a[k]);
            v.max(1.0).min(max)
        })
        .collect()
}

/// diffusers' `rescale_noise_cfg` in f64 for one batch: `cond` and `cfg` are (N, per).
pub fn guidance_rescale_reference(cond: &[f64], cfg: &[f64], n: usize, phi: f64) -> Vec<f64> {
    let per = cfg.len() / n.max(1);
    // Unbiased std (torch.std's default), as diffusers.
    let std = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt()
    };
    let mut out = Vec::with_capacity(cfg.len());
    for i in 0..n {
        let (c, g) = (&cond[i * per..(i + 1) * per], &cfg[i * per..(i + 1) * per]);
        let ratio = std(c) / std(g);
        out.extend(g.iter().map(|x| phi * x * ratio + (1.0 - phi) * x));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    /// The StepCoefficients formula in f64 on the f32-rounded coefficients the kernel sees.
    fn reference(
        c: &StepCoefficients,
        m: &[f32],
        z: &[f32],
        xt: &[f32],
        x0_prev: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let r = |v: f64| v as f32 as f64;
        let (mut prev, mut x0) = (Vec::new(), Vec::new());
        let x0_raw: Vec<f64> = (0..xt.len())
            .map(|i| r(c.x0_from_xt) * xt[i] as f64 + r(c.x0_from_model) * m[i] as f64)
            .collect();
        let scales = threshold_reference(&x0_raw, 2, r(c.threshold_ratio), r(c.threshold_max));
        let per = xt.len() / 2;
        for i in 0..xt.len() {
            let (x, mo, zz) = (xt[i] as f64, m[i] as f64, z[i] as f64);
            let mut x0h = x0_raw[i];
            if c.threshold_ratio > 0.0 {
                let s = scales[i / per];
                x0h = x0h.clamp(-s, s) / s;
            } else if c.clip > 0.0 {
                x0h = x0h.clamp(-r(c.clip), r(c.clip));
            }
            let eps = r(c.eps_from_xt) * x + r(c.eps_from_model) * mo;
            prev.push(
                r(c.prev_from_x0) * x0h
                    + r(c.prev_from_xt) * x
                    + r(c.prev_from_eps) * eps
                    + r(c.noise_scale) * zz
                    + r(c.prev_from_prev_x0) * x0_prev[i] as f64,
            );
            x0.push(x0h);
        }
        (prev, x0)
    }

    #[test]
    fn sampler_step_matches_reference() {
        let ctx = ctx();
        let shape = [2, 3, 11, 13];
        let n: usize = shape.iter().product();
        // Scale so that some x̂_0 fall outside [-1, 1] and clipping matters.
        let m: Vec<f32> = random(n, 50).iter().map(|v| 2.0 * v).collect();
        let xt: Vec<f32> = random(n, 51).iter().map(|v| 2.0 * v).collect();
        let z = random(n, 52);
        // A DDPM ε-prediction step at ᾱ_t = 0.5, ᾱ_{t-1} = 0.6 (numbers need not be exact).
        let base = StepCoefficients {
            x0_from_xt: 1.0 / 0.5f64.sqrt(),
            x0_from_model: -(0.5f64 / 0.5).sqrt(),
            eps_from_xt: 0.0,
            eps_from_model: 1.0,
            clip: 0.0,
            prev_from_x0: 0.3,
            prev_from_xt: 0.7,
            prev_from_eps: -0.05,
            noise_scale: 0.0,
            prev_from_prev_x0: 0.0,
            threshold_ratio: 0.0,
            threshold_max: 0.0,
        };
        let x0_prev: Vec<f32> = random(n, 53);
        let mut checked_clip = false;
        for (clip, noise_scale, prev_from_prev_x0) in [
            (0.0, 0.0, 0.0),
            (0.0, 0.37, 0.0),
            (1.0, 0.0, 0.0),
            (1.0, 0.37, 0.0),
            // A DPM-Solver++(2M) step: x_prev = f·x_t + e·x̂_0 + k·x̂_0(previous).
            (0.0, 0.0, -0.21),
        ] {
            // Dynamic thresholding on top (clip is then ignored): ratio 0.9 with a max that
            // binds for no sample, and 0.995 with a max of 2 that binds.
            for (threshold_ratio, threshold_max) in [(0.0, 0.0), (0.9, 10.0), (0.995, 2.0)] {
                if threshold_ratio > 0.0 && (noise_scale > 0.0 || prev_from_prev_x0 != 0.0) {
                    continue;
                }
                let c = StepCoefficients {
                    clip,
                    noise_scale,
                    prev_from_prev_x0,
                    threshold_ratio,
                    threshold_max,
                    ..base
                };
                let tm = ctx.upload(&m, &shape).unwrap();
                let tx = ctx.upload(&xt, &shape).unwrap();
                // NaN noise proves that noise is not read when noise_scale == 0.
                let zz = if noise_scale == 0.0 {
                    vec![f32::NAN; n]
                } else {
                    z.clone()
                };
                let tz = ctx.upload(&zz, &shape).unwrap();
                // NaN in x0 proves that the previous x̂_0 is not read when its weight is 0.
                let x0_in = if prev_from_prev_x0 == 0.0 {
                    vec![f32::NAN; n]
                } else {
                    x0_prev.clone()
                };
                let t0 = ctx.upload(&x0_in, &shape).unwrap();
                let mut p = Program::new();
                let op = SamplerStepOp::record(&ctx, &mut p, &tm, &tz, &tx, &t0).unwrap();
                op.set(&ctx, &c);
                ctx.run(&p).unwrap();
                let got_prev = block_on(ctx.read(&tx)).unwrap();
                let got_x0 = block_on(ctx.read(&t0)).unwrap();
                let (want_prev, want_x0) = reference(&c, &m, &z, &xt, &x0_prev);
                let what = format!(
                    "clip {clip} noise {noise_scale} prev x0 {prev_from_prev_x0} \
                     threshold {threshold_ratio}/{threshold_max}"
                );
                if threshold_ratio > 0.0 {
                    let got = block_on(ctx.read(&op.scales)).unwrap();
                    let x0_raw: Vec<f64> = (0..n)
                        .map(|i| {
                            (c.x0_from_xt as f32 as f64) * xt[i] as f64
                                + (c.x0_from_model as f32 as f64) * m[i] as f64
                        })
                        .collect();
                    let want = threshold_reference(&x0_raw, 2, threshold_ratio, threshold_max);
                    assert_close(&got, &want, 1e-5, 1e-5, &format!("scales {what}"));
                    // The data make s differ from both bounds for ratio 0.9.
                    if threshold_max > 5.0 {
                        assert!(want.iter().all(|&s| s > 1.1 && s < 9.0), "{want:?}");
                    }
                }
                // A few f32 roundings of terms of magnitude <~ 6.
                assert_close(&got_x0, &want_x0, 1e-6, 1e-6, &format!("x0 {what}"));
                assert_close(&got_prev, &want_prev, 1e-6, 1e-6, &format!("x_prev {what}"));
                if clip > 0.0 && threshold_ratio == 0.0 {
                    assert!(got_x0.iter().all(|v| v.abs() <= 1.0));
                    checked_clip = want_x0.iter().filter(|v| v.abs() == 1.0).count() > 10;
                }
            }
        }
        assert!(checked_clip, "the test data should exercise clipping");
    }

    #[test]
    fn guidance_matches_reference() {
        let ctx = ctx();
        let (n, rest) = (3, [3usize, 5, 7]);
        let half = n * rest.iter().product::<usize>();
        let mo = random(2 * half, 60);
        let tm = ctx.upload(&mo, &[2 * n, 3, 5, 7]).unwrap();
        let out = ctx.zeros(&[n, 3, 5, 7]).unwrap();
        let mut p = Program::new();
        let op = GuidanceOp::record(&ctx, &mut p, &tm, &out).unwrap();
        for w in [1.0f32, 0.0, 3.5] {
            op.set(&ctx, w);
            ctx.run(&p).unwrap();
            let got = block_on(ctx.read(&out)).unwrap();
            let want: Vec<f64> = (0..half)
                .map(|i| {
                    let (c, u) = (mo[i] as f64, mo[half + i] as f64);
                    u + w as f64 * (c - u)
                })
                .collect();
            assert_close(&got, &want, 1e-6, 1e-6, &format!("guidance w={w}"));
        }
    }

    #[test]
    fn guidance_rescale_matches_reference() {
        let ctx = ctx();
        // 3 samples of 1×29×31 = 899 elements: more than one pass of 256 threads, not a
        // multiple of it. Different scales per sample so that every ratio differs.
        let (n, per) = (3usize, 29 * 31);
        let mut mo = random(2 * n * per, 70);
        for (i, v) in mo.iter_mut().enumerate() {
            *v = *v * (1.0 + (i / per) as f32 * 0.4) + 0.1;
        }
        let tm = ctx.upload(&mo, &[2 * n, 1, 29, 31]).unwrap();
        let out = ctx.zeros(&[n, 1, 29, 31]).unwrap();
        let mut p = Program::new();
        let g = GuidanceOp::record(&ctx, &mut p, &tm, &out).unwrap();
        let r = GuidanceRescaleOp::record(&ctx, &mut p, &tm, &out).unwrap();
        let w = 3.0f32;
        g.set(&ctx, w);
        let cond: Vec<f64> = mo[..n * per].iter().map(|&v| v as f64).collect();
        let cfg: Vec<f64> = (0..n * per)
            .map(|i| {
                let (c, u) = (mo[i] as f64, mo[n * per + i] as f64);
                u + w as f64 * (c - u)
            })
            .collect();
        for phi in [0.0f32, 0.7, 1.0] {
            r.set(&ctx, phi);
            ctx.run(&p).unwrap();
            let got = block_on(ctx.read(&out)).unwrap();
            let want = guidance_rescale_reference(&cond, &cfg, n, phi as f64);
            // f32 one-pass sums over 899 values of O(1): ~1e-6 relative in the ratio.
            assert_close(
                &got,
                &want,
                1e-5,
                1e-5,
                &format!("guidance rescale phi={phi}"),
            );
            if phi == 1.0 {
                // Fully rescaled: each sample's std equals the conditional one.
                let again = guidance_rescale_reference(&cond, &want, n, 1.0);
                assert!(want.iter().zip(&again).all(|(a, b)| (a - b).abs() < 1e-9));
                assert!(want.iter().zip(&cfg).any(|(a, b)| (a - b).abs() > 0.1));
            }
        }
        assert!(GuidanceRescaleOp::record(&ctx, &mut p, &out, &out).is_err());
    }

    #[test]
    fn sampler_bad_shapes_are_errors() {
        let ctx = ctx();
        let a = ctx.zeros(&[1, 3, 4, 4]).unwrap();
        let b = ctx.zeros(&[1, 3, 4, 5]).unwrap();
        let a2 = ctx.zeros(&[2, 3, 4, 4]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            SamplerStepOp::record(&ctx, &mut p, &a, &b, &a, &a),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            GuidanceOp::record(&ctx, &mut p, &a, &a),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            GuidanceOp::record(&ctx, &mut p, &a2, &b),
            Err(Error::Shape(_))
        ));
        assert!(GuidanceOp::record(&ctx, &mut p, &a2, &a).is_ok());
        assert_eq!(p.len(), 1);
    }
}
