//! Anomaly scores by reconstruction: noise each image to timestep t with q(x_t | x_0)
//! (Ho et al. 2020, eq. 4), run deterministic DDIM (Song et al. 2021, eq. 12, η = 0) from t
//! back to x_0, and score the image by the mean squared error between the reconstruction and
//! the input, averaged over independent noise draws. Images the model has learned to
//! generate come back close; others are pulled toward the data manifold and come back
//! changed. AUROC summarises how well the score separates two sets.
//!
//! The U-Net runs on the GPU over all N·K copies (N images × K repeats) in one batch; the
//! DDIM update is a few scalar coefficients applied on the CPU in f64. Nothing here prints,
//! reads files or blocks.

use crate::diffusion::likelihood::ImageBatch;
use crate::diffusion::schedule::{step_coefficients, Sampler, Schedule, SchedulerConfig};
use crate::diffusion::StepCoefficients;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::Model;
use crate::ops::noise::gaussian_noise_cpu;
use crate::unet::UNet;

/// What to reconstruct from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReconstructionSettings {
    /// The timestep the images are noised to (index into the training schedule, < T).
    pub t: usize,
    /// DDIM steps from t down to 0 (at most t; at least 1).
    pub steps: usize,
    /// Independent noise draws per image (K ≥ 1); repeat r uses Philox stream r.
    pub repeats: usize,
    pub seed: u64,
}

/// The DDIM timesteps from `t` down: t·(S−k)/S rounded, k = 0..S (distinct for S ≤ t).
pub fn reconstruction_timesteps(t: usize, steps: usize) -> Vec<usize> {
    let s = steps.clamp(1, t.max(1));
    (0..s)
        .map(|k| (t as f64 * (s - k) as f64 / s as f64).round() as usize)
        .collect()
}

/// A reconstruction run in progress.
pub struct ReconstructionRun {
    unet: UNet,
    schedule: Schedule,
    scheduler: SchedulerConfig,
    timesteps: Vec<usize>,
    next: usize,
    n: usize,
    repeats: usize,
    dims: usize,
    /// The inputs, f64, (N, C, H, W).
    x0: Vec<f64>,
    /// The current x_t of every copy, (K·N, C, H, W), repeat-major.
    x: Vec<f64>,
}

impl ReconstructionRun {
    /// `images`: N images in [−1, 1]; the run reconstructs K = `settings.repeats` noisings
    /// of each.
    pub fn new(
        ctx: &GpuContext,
        model: &Model,
        images: ImageBatch<'_>,
        settings: ReconstructionSettings,
    ) -> Result<Self> {
        let (n, dims) = images.check(&model.config)?;
        let scheduler = &model.scheduler;
        let schedule = Schedule::new(scheduler)?;
        let t_max = schedule.num_train_timesteps();
        if settings.t >= t_max {
            return Err(Error::config(format!(
                "timestep {} is outside the model's schedule 0..{t_max}",
                settings.t
            )));
        }
        if settings.repeats == 0 || settings.steps == 0 {
            return Err(Error::config("steps and repeats must be at least 1"));
        }
        let k = settings.repeats;
        let unet = images.unet_for_copies(ctx, model, k)?;
        let x0: Vec<f64> = images.data.iter().map(|&v| v as f64).collect();
        // x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4), one ε per repeat.
        let (a, b) = schedule.add_noise_coefficients(settings.t);
        let mut x = Vec::with_capacity(k * n * dims);
        for r in 0..k {
            let eps = gaussian_noise_cpu(settings.seed, r as u32, n * dims);
            x.extend(x0.iter().zip(&eps).map(|(&v, &e)| a * v + b * e as f64));
        }
        Ok(ReconstructionRun {
            unet,
            schedule,
            scheduler: scheduler.clone(),
            timesteps: reconstruction_timesteps(settings.t, settings.steps),
            next: 0,
            n,
            repeats: k,
            dims,
            x0,
            x,
        })
    }

    /// The DDIM timesteps this run visits.
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.timesteps.len()
    }

    /// One DDIM step (a U-Net call and a readback). Returns the timestep just done, or None
    /// when the reconstruction is finished.
    pub async fn step(&mut self, ctx: &GpuContext) -> Result<Option<usize>> {
        let Some(&t) = self.timesteps.get(self.next) else {
            return Ok(None);
        };
        let prev = self.timesteps.get(self.next + 1).copied();
        let c: StepCoefficients = step_coefficients(
            &self.schedule,
            &self.scheduler,
            Sampler::Ddim { eta: 0.0 },
            t,
            prev,
        );
        let xf: Vec<f32> = self.x.iter().map(|&v| v as f32).collect();
        ctx.write(&self.unet.sample, &xf)?;
        ctx.write(&self.unet.timesteps, &vec![t as f32; self.unet.batch])?;
        ctx.run(self.unet.program())?;
        let m = ctx.read(&self.unet.output).await?;
        if m.iter().any(|v| !v.is_finite()) {
            return Err(Error::Other(format!(
                "the model's output at timestep {t} contains NaN or Inf"
            )));
        }
        for (x, &m) in self.x.iter_mut().zip(&m) {
            let m = m as f64;
            let mut x0 = c.x0_from_xt * *x + c.x0_from_model * m;
            if c.clip > 0.0 {
                x0 = x0.clamp(-c.clip, c.clip);
            }
            let eps = c.eps_from_xt * *x + c.eps_from_model * m;
            *x = c.prev_from_x0 * x0 + c.prev_from_xt * *x + c.prev_from_eps * eps;
        }
        self.next += 1;
        Ok(Some(t))
    }

    /// The reconstructions, (K·N, C, H, W), repeat-major (valid once done).
    pub fn reconstructions(&self) -> &[f64] {
        &self.x
    }

    /// Per image: the mean squared error of its reconstructions, averaged over the repeats.
    pub fn scores(&self) -> Vec<f64> {
        let (n, d) = (self.n, self.dims);
        (0..n)
            .map(|i| {
                let x0 = &self.x0[i * d..(i + 1) * d];
                (0..self.repeats)
                    .map(|r| {
                        let rec = &self.x[(r * n + i) * d..(r * n + i + 1) * d];
                        rec.iter()
                            .zip(x0)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f64>()
                            / d as f64
                    })
                    .sum::<f64>()
                    / self.repeats as f64
            })
            .collect()
    }
}

/// Area under the ROC curve for "higher score = anomalous": the probability that a random
/// anomalous image scores above a random normal one (ties count half). NaN if a set is
/// empty.
pub fn auroc(normal: &[f64], anomalous: &[f64]) -> f64 {
    if normal.is_empty() || anomalous.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0.0;
    for &a in anomalous {
        for &b in normal {
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (normal.len() * anomalous.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ordered_pairs() {
        assert_eq!(auroc(&[0.1, 0.2], &[0.3, 0.4]), 1.0);
        assert_eq!(auroc(&[0.3, 0.4], &[0.1, 0.2]), 0.0);
        assert_eq!(
            auroc(&[0.1, 0.3], &[0.2, 0.3]),
            (1.0 + 0.0 + 1.0 + 0.5) / 4.0
        );
        assert!(auroc(&[], &[1.0]).is_nan());
    }

    #[test]
    fn timesteps_descend_from_t() {
        assert_eq!(reconstruction_timesteps(300, 3), vec![300, 200, 100]);
        assert_eq!(reconstruction_timesteps(10, 4), vec![10, 8, 5, 3]);
        assert_eq!(reconstruction_timesteps(2, 10), vec![2, 1]);
        assert_eq!(reconstruction_timesteps(0, 5), vec![0]);
    }
}
