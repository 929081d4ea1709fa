//! Interpolation's math, shared by `kakusan interpolate` and the page's toolbox: between two
//! seeds (spherical interpolation of x_T, then DDIM η = 0, Song et al. 2021 §5.3) or between
//! two images as in the DDPM paper's Fig. 8 (both diffused to step t with the same noise,
//! eq. 4, mixed linearly in x_t space, and the mix denoised from t).
//!
//! Nothing here prints, reads files or blocks: the callers run the sampler (natively with
//! `block_on`, in the page one step per animation frame).

use crate::diffusion::sampler::{SampleSettings, SamplingRun};
use crate::diffusion::schedule::{Sampler, Schedule, SchedulerConfig};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::config::UNetConfig;
use crate::model::weights::Weights;

/// Spherical interpolation (Shoemake 1985) of two flattened x_T; falls back to linear when
/// they are (anti)parallel. λ = 0 and 1 give `a` and `b` exactly.
pub fn slerp(a: &[f32], b: &[f32], lambda: f64) -> Vec<f32> {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = (dot / (na * nb).max(f64::MIN_POSITIVE)).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let (wa, wb) = if theta.sin().abs() < 1e-6 {
        (1.0 - lambda, lambda)
    } else {
        (
            ((1.0 - lambda) * theta).sin() / theta.sin(),
            (lambda * theta).sin() / theta.sin(),
        )
    };
    a.iter()
        .zip(b)
        .map(|(x, y)| (wa * *x as f64 + wb * *y as f64) as f32)
        .collect()
}

/// λ of frame i of K (both ends included): i / (K − 1).
pub fn frame_lambda(i: usize, k: usize) -> f64 {
    if k < 2 {
        0.0
    } else {
        i as f64 / (k - 1) as f64
    }
}

/// The K starting points x_T of a seed interpolation, one after another: slerp(a, b, λ_i).
pub fn seed_frames(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let mut frames = Vec::with_capacity(k * a.len());
    for i in 0..k {
        frames.extend(slerp(a, b, frame_lambda(i, k)));
    }
    frames
}

/// The K starting points x_t of an image interpolation (DDPM paper, Fig. 8): both images
/// noised with q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (eq. 4) with the same noise z, then
/// (1 − λ)·x_t^A + λ·x_t^B. `sqrt_ab` = √ᾱ_t, `sqrt_1mab` = √(1 − ᾱ_t).
pub fn image_frames(
    xa: &[f32],
    xb: &[f32],
    z: &[f32],
    sqrt_ab: f64,
    sqrt_1mab: f64,
    k: usize,
) -> Vec<f32> {
    let mut frames = Vec::with_capacity(k * xa.len());
    for i in 0..k {
        let l = frame_lambda(i, k);
        frames.extend((0..xa.len()).map(|j| {
            let ta = sqrt_ab * xa[j] as f64 + sqrt_1mab * z[j] as f64;
            let tb = sqrt_ab * xb[j] as f64 + sqrt_1mab * z[j] as f64;
            ((1.0 - l) * ta + l * tb) as f32
        }));
    }
    frames
}

/// The index of the first step of `timesteps` (noisiest first) at or below `t`: where an
/// image interpolation starts denoising.
pub fn start_index(timesteps: &[usize], t: usize) -> Result<usize> {
    timesteps.iter().position(|&s| s <= t).ok_or_else(|| {
        Error::Other(format!(
            "no step of this {}-step schedule is at or below t = {t}",
            timesteps.len()
        ))
    })
}

/// The image-interpolation starting points for the run's schedule: noised to the first
/// step at or below `t`. Returns (frames, start index, the timestep used).
pub fn image_start(
    scheduler: &SchedulerConfig,
    timesteps: &[usize],
    t: usize,
    xa: &[f32],
    xb: &[f32],
    z: &[f32],
    k: usize,
) -> Result<(Vec<f32>, usize, usize)> {
    if t >= scheduler.num_train_timesteps {
        return Err(Error::Other(format!(
            "t = {t} must be below num_train_timesteps = {}",
            scheduler.num_train_timesteps
        )));
    }
    if xa.len() != xb.len() || z.len() != xa.len() {
        return Err(Error::shape(format!(
            "the two images and the noise differ in size ({}, {}, {})",
            xa.len(),
            xb.len(),
            z.len()
        )));
    }
    let index = start_index(timesteps, t)?;
    let t_used = timesteps[index];
    let (sa, sb) = Schedule::new(scheduler)?.add_noise_coefficients(t_used);
    Ok((image_frames(xa, xb, z, sa, sb, k), index, t_used))
}

/// x_T of `sample --seed s -n 1` for each seed: the seeded noise of a one-image run.
pub async fn seed_noise(
    ctx: &GpuContext,
    config: &UNetConfig,
    weights: &Weights,
    scheduler: &SchedulerConfig,
    seeds: &[u64],
) -> Result<Vec<Vec<f32>>> {
    let mut run = SamplingRun::new(
        ctx,
        config,
        weights,
        scheduler,
        SampleSettings {
            sampler: Sampler::Ddim { eta: 0.0 },
            steps: 1,
            seed: seeds.first().copied().unwrap_or(0),
            batch: 1,
            class_labels: None,
            guidance: None,
        },
    )?;
    let mut out = Vec::new();
    for &s in seeds {
        run.restart(ctx, s)?;
        out.push(ctx.read(run.x_t()).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slerp_ends_are_exact_and_middle_keeps_the_norm() {
        let a: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0)
            .collect();
        let b: Vec<f32> = (0..64)
            .map(|i| ((i * 11 % 13) as f32 - 6.0) / 3.0)
            .collect();
        assert_eq!(slerp(&a, &b, 0.0), a);
        assert_eq!(slerp(&a, &b, 1.0), b);
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        // Equal norms stay equal along the arc (a linear mix would shrink it).
        let bn: Vec<f32> = b
            .iter()
            .map(|x| (*x as f64 * norm(&a) / norm(&b)) as f32)
            .collect();
        let mid = slerp(&a, &bn, 0.5);
        assert!((norm(&mid) - norm(&a)).abs() < 1e-4 * norm(&a));
        let lin: Vec<f32> = a.iter().zip(&bn).map(|(x, y)| 0.5 * (x + y)).collect();
        assert!(norm(&lin) < 0.99 * norm(&a));
    }

    #[test]
    fn image_frames_mix_the_noised_images() {
        let xa = [1.0f32, -1.0, 0.5];
        let xb = [-1.0f32, 1.0, 0.0];
        let z = [0.3f32, -0.2, 1.0];
        let f = image_frames(&xa, &xb, &z, 0.6, 0.8, 3);
        assert_eq!(f.len(), 9);
        for j in 0..3 {
            let ta = 0.6 * xa[j] as f64 + 0.8 * z[j] as f64;
            let tb = 0.6 * xb[j] as f64 + 0.8 * z[j] as f64;
            assert!((f[j] as f64 - ta).abs() < 1e-6);
            assert!((f[6 + j] as f64 - tb).abs() < 1e-6);
            assert!((f[3 + j] as f64 - 0.5 * (ta + tb)).abs() < 1e-6);
        }
    }

    #[test]
    fn start_index_is_first_step_at_or_below_t() {
        let ts = [900, 700, 500, 300, 100];
        assert_eq!(start_index(&ts, 999).unwrap(), 0);
        assert_eq!(start_index(&ts, 500).unwrap(), 2);
        assert_eq!(start_index(&ts, 499).unwrap(), 3);
        assert!(start_index(&ts, 50).is_err());
    }
}
