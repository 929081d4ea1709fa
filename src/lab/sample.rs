//! Particles x_T → x_0 on the GPU under the lab MLP. Every sampler used here is, per step,
//! x ← c_x·x + c_eps·ε_θ(x, t) + c_z·z with z ~ N(0, I), so one kernel (`sample_step` in
//! mlp.wgsl, one dispatch per step) runs all of them; it also writes Tweedie's x̂_0.
//!
//! With ᾱ = ᾱ_t and ᾱ' = ᾱ of the next (smaller) timestep (1 after the last):
//! - DDPM (Ho et al. 2020, eq. 11 and Algorithm 2, on the respaced schedule when steps < T):
//!   α = ᾱ/ᾱ', β = 1 − α, c_x = 1/√α, c_eps = −β/(√α·√(1−ᾱ)), c_z = σ = √β̃, β̃ = (1−ᾱ')/(1−ᾱ)·β.
//! - DDIM(η) (Song, Meng & Ermon 2021, eq. 12): σ = η·√((1−ᾱ')/(1−ᾱ))·√(1−ᾱ/ᾱ'),
//!   c_x = √ᾱ'/√ᾱ, c_eps = √(1−ᾱ'−σ²) − √ᾱ'·√(1−ᾱ)/√ᾱ, c_z = σ.
//! - Probability-flow ODE (Song et al. 2021, eq. 13 for the VP SDE): dx/dt = −½β(t)(x + ∇log q_t),
//!   ∇log q_t = −ε/√(1−ᾱ); one Euler step over ∫β = ln(ᾱ'/ᾱ) = B: c_x = 1 + B/2,
//!   c_eps = −B/(2√(1−ᾱ)), c_z = 0.

use crate::diffusion::schedule::Schedule;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::rng::SplitMix64;

use super::mlp::{check_params, record_mlp, MlpUniforms, TILE};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LabSampler {
    Ddpm,
    Ddim { eta: f64 },
    ProbabilityFlow,
}

impl LabSampler {
    pub fn name(self) -> String {
        match self {
            LabSampler::Ddpm => "ddpm".into(),
            LabSampler::Ddim { eta } => format!("ddim(eta={eta})"),
            LabSampler::ProbabilityFlow => "ode".into(),
        }
    }
}

/// The sampler of the default recipe (the page's particles and the CLI's fit figure).
pub const DEFAULT_SAMPLER: LabSampler = LabSampler::Ddpm;
/// Its number of steps (at most T).
pub const DEFAULT_SAMPLE_STEPS: usize = 50;

/// Tweedie's x̂_0 is clipped to ±this in DDPM and DDIM steps (as diffusers' `clip_sample`,
/// with a range that holds every preset and scaled drawing, which lie within about ±2.5):
/// without it, the first steps from ᾱ_T ≈ 0 (the cosine schedule ends at 2.4e-7)
/// multiply the network's error by up to 1/√ᾱ_T, and few-step sampling blows up.
pub const CLIP_X0: f64 = 3.0;

/// One sampler step: from timestep `t` with x ← c_x·x + c_eps·ε + c_z·z, where x̂_0 (the
/// Tweedie estimate inside that linear form) enters with weight `c_x0`; the kernel replaces
/// it by its clip to ±[`CLIP_X0`], i.e. adds c_x0·(clip(x̂_0) − x̂_0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCoef {
    pub t: usize,
    pub c_x: f64,
    pub c_eps: f64,
    pub c_z: f64,
    /// Weight of x̂_0 in the step (DDPM: the posterior mean's √ᾱ_prev·β/(1−ᾱ), eq. 7;
    /// DDIM: √ᾱ_prev, eq. 12; the probability-flow ODE: 0, not clipped).
    pub c_x0: f64,
    pub sqrt_ab: f64,
    pub sqrt_one_minus_ab: f64,
}

/// `steps` timesteps spread evenly from T−1 down to 0 (distinct, descending).
pub fn timesteps(num_t: usize, steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > num_t {
        return Err(Error::config(format!(
            "sampling steps must be 1 to T = {num_t}, got {steps}"
        )));
    }
    if steps == 1 {
        return Ok(vec![num_t - 1]);
    }
    Ok((0..steps)
        .map(|i| ((num_t - 1) as f64 * (1.0 - i as f64 / (steps - 1) as f64)).round() as usize)
        .collect())
}

/// The per-step coefficients of `sampler` over `steps` timesteps.
pub fn plan(schedule: &Schedule, sampler: LabSampler, steps: usize) -> Result<Vec<StepCoef>> {
    if let LabSampler::Ddim { eta } = sampler {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::config(format!("DDIM eta must be >= 0, got {eta}")));
        }
    }
    let ts = timesteps(schedule.num_train_timesteps(), steps)?;
    let ac = &schedule.alphas_cumprod;
    Ok(ts
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let ab = ac[t];
            let ab_prev = ts.get(i + 1).map_or(1.0, |&p| ac[p]);
            let (c_x, c_eps, c_z, c_x0) = match sampler {
                LabSampler::Ddpm => {
                    let alpha = ab / ab_prev;
                    let beta = 1.0 - alpha;
                    let var = (1.0 - ab_prev) / (1.0 - ab) * beta;
                    (
                        1.0 / alpha.sqrt(),
                        -beta / (alpha.sqrt() * (1.0 - ab).sqrt()),
                        var.max(0.0).sqrt(),
                        ab_prev.sqrt() * beta / (1.0 - ab),
                    )
                }
                LabSampler::Ddim { eta } => {
                    let sigma = eta
                        * ((1.0 - ab_prev) / (1.0 - ab)).sqrt()
                        * (1.0 - ab / ab_prev).max(0.0).sqrt();
                    let dir = (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
                    (
                        (ab_prev / ab).sqrt(),
                        dir - (ab_prev / ab).sqrt() * (1.0 - ab).sqrt(),
                        sigma,
                        ab_prev.sqrt(),
                    )
                }
                LabSampler::ProbabilityFlow => {
                    let b = (ab_prev / ab).ln();
                    (1.0 + 0.5 * b, -0.5 * b / (1.0 - ab).sqrt(), 0.0, 0.0)
                }
            };
            StepCoef {
                t,
                c_x,
                c_eps,
                c_z,
                c_x0,
                sqrt_ab: ab.sqrt(),
                sqrt_one_minus_ab: (1.0 - ab).sqrt(),
            }
        })
        .collect())
}

/// N particles and their recorded steps (one dispatch each): the page can run them one at a
/// time (to animate) and the CLI all at once.
pub struct Particles {
    pub n: usize,
    /// (n, 4) = (x, y, class, unused); class ≥ num_classes means unconditional.
    pub state: Tensor,
    /// (n, 2) Tweedie's x̂_0 at the last step run.
    pub x0_hat: Tensor,
    /// (4) u32: the rows [first, end) that `sample_step` updates (all of them unless a step is
    /// being run in chunks, see [`Particles::encode_chunk`]).
    range: Tensor,
    pub steps: Vec<Program>,
}

impl Particles {
    /// Particles starting at seeded x_T ~ N(0, I) with classes `classes` (empty: all
    /// unconditional), sampled with the weights in `params` and guidance scale `guidance`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        params: &Tensor,
        num_classes: usize,
        plan: &[StepCoef],
        n: usize,
        classes: &[u32],
        guidance: f32,
        seed: u64,
    ) -> Result<Particles> {
        check_params(params, num_classes)?;
        if n == 0 {
            return Err(Error::config("sampling needs at least one particle"));
        }
        if !classes.is_empty() && classes.len() != n {
            return Err(Error::shape(format!(
                "{} classes for {n} particles",
                classes.len()
            )));
        }
        if !guidance.is_finite() {
            return Err(Error::config("the guidance scale must be finite"));
        }
        let mut rng = SplitMix64(seed ^ 0x7061_7274_6963_6c65);
        let mut gauss = || {
            let u1 = 1.0 - rng.next_f64();
            let u2 = rng.next_f64();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let mut init = Vec::with_capacity(n * 4);
        for i in 0..n {
            let c = classes
                .get(i)
                .map_or(num_classes as u32, |&c| c.min(num_classes as u32));
            init.extend([gauss(), gauss(), c as f32, 0.0]);
        }
        let state = ctx.upload(&init, &[n, 4])?;
        let x0_hat = ctx.zeros(&[n, 2])?;
        let dummy = ctx.zeros(&[4])?;
        let dummy_c = ctx.zeros(&[1])?;
        let range = ctx.upload_u32(&[0, n as u32, 0, 0], &[4])?;
        let mut steps = Vec::with_capacity(plan.len());
        for (k, s) in plan.iter().enumerate() {
            let uni = MlpUniforms {
                batch: n as u32,
                null_class: num_classes as u32,
                seed: (seed ^ (seed >> 32)) as u32,
                sample_step: k as u32,
                guidance,
                t: s.t as f32,
                c_x: s.c_x as f32,
                c_eps: s.c_eps as f32,
                c_z: s.c_z as f32,
                c_x0: s.c_x0 as f32,
                clip_x0: CLIP_X0 as f32,
                sqrt_ab: s.sqrt_ab as f32,
                sqrt_one_minus_ab: s.sqrt_one_minus_ab as f32,
                ..Default::default()
            };
            let mut p = Program::new();
            record_mlp(
                ctx,
                &mut p,
                ("lab sample_step", "sample_step"),
                &uni,
                [&params.buffer, &dummy.buffer, &dummy.buffer, &range.buffer],
                [&state.buffer, &x0_hat.buffer, &dummy_c.buffer],
                n,
            )?;
            steps.push(p);
        }
        Ok(Particles {
            n,
            state,
            x0_hat,
            range,
            steps,
        })
    }

    /// Submit every step in one command buffer.
    pub fn run_all(&self, ctx: &GpuContext) -> Result<()> {
        self.set_range(ctx, 0, self.n);
        let mut all = Program::new();
        for s in &self.steps {
            all.extend(s);
        }
        ctx.run(&all)
    }

    /// Rows per chunk are rounded to this (the kernel's tile).
    pub const CHUNK_ALIGN: usize = TILE;

    fn set_range(&self, ctx: &GpuContext, first: usize, end: usize) {
        ctx.queue.write_buffer(
            &self.range.buffer,
            0,
            bytemuck::cast_slice(&[first as u32, end as u32, 0, 0]),
        );
    }

    /// Encode step `k` over all particles. The row range lives in a buffer that
    /// `queue.write_buffer` sets for the next submission, so a submission holds either whole
    /// steps ([`Particles::encode_whole`], any number) or one chunk ([`Particles::encode_chunk`]).
    pub fn encode_whole(&self, ctx: &GpuContext, enc: &mut wgpu::CommandEncoder, k: usize) {
        self.set_range(ctx, 0, self.n);
        self.steps[k].encode(enc);
    }

    /// Encode step `k` over particles [first, end) only (`first` a multiple of
    /// [`Particles::CHUNK_ALIGN`]): one dispatch of ⌈(end − first)/16⌉ workgroups. At most
    /// one chunk per submission (see [`Particles::encode_whole`]). A step run chunk by chunk
    /// gives the same particles as the whole step (the noise depends on the row, not the
    /// chunk).
    pub fn encode_chunk(
        &self,
        ctx: &GpuContext,
        enc: &mut wgpu::CommandEncoder,
        k: usize,
        first: usize,
        end: usize,
    ) -> Result<()> {
        let end = end.min(self.n);
        if !first.is_multiple_of(Self::CHUNK_ALIGN) || first >= end {
            return Err(Error::shape(format!(
                "lab particles: chunk [{first}, {end}) of {} particles",
                self.n
            )));
        }
        self.set_range(ctx, first, end);
        let tiles = (end - first).div_ceil(TILE) as u32;
        let mut p = Program::new();
        for d in &self.steps[k].steps {
            p.steps.push(d.clone().with_workgroups([tiles, 1, 1]));
        }
        p.encode(enc);
        Ok(())
    }

    /// Current positions.
    pub async fn positions(&self, ctx: &GpuContext) -> Result<Vec<[f32; 2]>> {
        let v = ctx.read(&self.state).await?;
        Ok(v.chunks(4).map(|c| [c[0], c[1]]).collect())
    }
}

/// Draw `n` samples with the whole plan (convenience for the CLI and tests).
#[allow(clippy::too_many_arguments)]
pub async fn sample(
    ctx: &GpuContext,
    params: &Tensor,
    num_classes: usize,
    plan: &[StepCoef],
    n: usize,
    classes: &[u32],
    guidance: f32,
    seed: u64,
) -> Result<Vec<[f32; 2]>> {
    let p = Particles::new(ctx, params, num_classes, plan, n, classes, guidance, seed)?;
    p.run_all(ctx)?;
    p.positions(ctx).await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::diffusion::schedule::SchedulerConfig;
    use crate::gpu::block_on;
    use crate::gpu::test_util::ctx;
    use crate::lab::mlp::{forward_ref, init_params};

    /// `sample_step` against the f64 MLP: deterministic DDIM (c_z = 0) with guidance on
    /// class-conditional particles (some unconditional), 61 particles (not a tile multiple);
    /// then the same steps run in chunks of 32 rows, one submission each, give the same bits
    /// as whole steps.
    #[test]
    fn sample_step_matches_reference_and_chunks_match_whole_steps() {
        let ctx = ctx();
        let (nc, n, w) = (2, 61, 2.5f32);
        let p32 = init_params(nc, 7);
        let p: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
        let params = ctx.upload(&p32, &[p32.len()]).unwrap();
        let classes: Vec<u32> = (0..n as u32).map(|i| i % 3).collect(); // 2 = unconditional
        let s = schedule();
        let plan = plan(&s, LabSampler::Ddim { eta: 0.0 }, 3).unwrap();
        let whole = Particles::new(&ctx, &params, nc, &plan, n, &classes, w, 5).unwrap();
        let start = block_on(whole.positions(&ctx)).unwrap();
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        whole.encode_whole(&ctx, &mut enc, 0);
        ctx.queue.submit([enc.finish()]);
        let got = block_on(whole.positions(&ctx)).unwrap();
        let c = plan[0];
        for (i, (x, g)) in start.iter().zip(&got).enumerate() {
            let x = [x[0] as f64, x[1] as f64];
            let y = classes[i] as usize;
            let null = forward_ref(&p, x, c.t as f64, nc);
            let eps = if y < nc {
                let cond = forward_ref(&p, x, c.t as f64, y);
                [0, 1].map(|o| null[o] + w as f64 * (cond[o] - null[o]))
            } else {
                null
            };
            for o in 0..2 {
                let x0 = (x[o] - c.sqrt_one_minus_ab * eps[o]) / c.sqrt_ab;
                let want =
                    c.c_x * x[o] + c.c_eps * eps[o] + c.c_x0 * (x0.clamp(-CLIP_X0, CLIP_X0) - x0);
                assert!(
                    (g[o] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "particle {i}: {} vs {want}",
                    g[o]
                );
            }
        }
        for k in 1..plan.len() {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            whole.encode_whole(&ctx, &mut enc, k);
            ctx.queue.submit([enc.finish()]);
        }
        let want = block_on(whole.positions(&ctx)).unwrap();
        let chunked = Particles::new(&ctx, &params, nc, &plan, n, &classes, w, 5).unwrap();
        for k in 0..plan.len() {
            for first in (0..n).step_by(32) {
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                chunked
                    .encode_chunk(&ctx, &mut enc, k, first, first + 32)
                    .unwrap();
                ctx.queue.submit([enc.finish()]);
            }
        }
        assert_eq!(block_on(chunked.positions(&ctx)).unwrap(), want);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        assert!(chunked.encode_chunk(&ctx, &mut enc, 0, 8, 20).is_err());
    }

    /// The small schedule (T = 100) of the lab's unit tests.
    pub(crate) fn schedule() -> Schedule {
        Schedule::new(&SchedulerConfig {
            num_train_timesteps: 100,
            beta_start: 1e-3,
            beta_end: 0.2,
            ..Default::default()
        })
        .unwrap()
    }

    /// With the exact ε of a point mass at x_0 = a (ε = (x − √ᾱ a)/√(1−ᾱ)), every
    /// deterministic sampler lands exactly on a, and DDPM with all steps too (its noise is
    /// then off the data: check its mean path with z = 0).
    #[test]
    fn samplers_recover_a_point_mass_with_its_exact_epsilon() {
        let s = schedule();
        let a = 0.7;
        for (sampler, steps, tol) in [
            (LabSampler::Ddim { eta: 0.0 }, 10, 1e-9),
            (LabSampler::Ddim { eta: 0.0 }, 100, 1e-9),
            (LabSampler::Ddpm, 100, 1e-9),
            (LabSampler::Ddpm, 7, 1e-9),
            (LabSampler::ProbabilityFlow, 100, 0.05),
        ] {
            let mut x = 1.3f64;
            for c in plan(&s, sampler, steps).unwrap() {
                let eps = (x - c.sqrt_ab * a) / c.sqrt_one_minus_ab;
                x = c.c_x * x + c.c_eps * eps; // z = 0
            }
            assert!(
                (x - a).abs() < tol,
                "{}: {steps} steps end at {x}, want {a}",
                sampler.name()
            );
        }
        assert_eq!(timesteps(100, 4).unwrap(), vec![99, 66, 33, 0]);
        assert!(timesteps(100, 101).is_err() && timesteps(100, 0).is_err());
        assert!(plan(&s, LabSampler::Ddim { eta: -1.0 }, 10).is_err());
        // DDIM with eta = 1 is DDPM on the same timesteps.
        let (d, p) = (
            plan(&s, LabSampler::Ddim { eta: 1.0 }, 10).unwrap(),
            plan(&s, LabSampler::Ddpm, 10).unwrap(),
        );
        for (a, b) in d.iter().zip(&p) {
            assert!((a.c_x - b.c_x).abs() < 1e-12 && (a.c_eps - b.c_eps).abs() < 1e-12);
            assert!((a.c_z - b.c_z).abs() < 1e-12);
        }
    }
}
