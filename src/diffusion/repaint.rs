//! Inpainting with RePaint (Lugmayr et al. 2022): sample the unknown pixels with DDPM
//! ancestral steps (Ho et al. 2020, Algorithm 2) while, at every step, the known pixels are
//! replaced by the input noised to the same level with q(x_{t−1} | x_0) (eq. 4); and
//! "resample": every `jump_length` steps go back up `jump_length` levels with the forward
//! process q(x_t | x_{t−1}) (eq. 2) and come down again, `jump_n_sample − 1` extra times, so
//! that the generated part harmonises with the known part (RePaint §4.2, Algorithm 1).
//!
//! Levels: with S inference timesteps τ_0 > τ_1 > … > τ_{S−1}, level u (u = S…0) counts the
//! reverse steps still to take; at level u ≥ 1 the sample is x_{τ_{S−u}}, at level 0 it is
//! x_0. Going down from u is one reverse step at τ_{S−u}; going up from u to u + 1 is the
//! forward process from ᾱ(level u) to ᾱ(level u + 1) (ᾱ = 1 at level 0). Jumps happen on
//! arrival at levels k = j, 2j, … with k + j ≤ S. The result is
//! x_0 = mask · image + (1 − mask) · generated, so known pixels come back exactly.
//!
//! The U-Net runs on the GPU (N images, or 2N with classifier-free guidance); the per-step
//! update is a few scalar coefficients applied on the CPU in f64. Nothing here prints, reads
//! files or blocks.

use crate::diffusion::schedule::{
    inference_timesteps, step_coefficients, Sampler, Schedule, SchedulerConfig,
};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::config::UNetConfig;
use crate::model::weights::Weights;
use crate::ops::noise::gaussian_noise_cpu;
use crate::unet::UNet;

/// RePaint's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RepaintSettings {
    /// Inference timesteps S (≤ num_train_timesteps), spread as the scheduler says.
    pub steps: usize,
    /// j: how many levels each jump goes back up (≥ 1).
    pub jump_length: usize,
    /// r: how many times each jump point is passed (1 = plain DDPM with the known part
    /// replaced, no resampling).
    pub jump_n_sample: usize,
    /// Class labels (class-conditional models), one per image.
    pub class_labels: Option<Vec<u32>>,
    /// Classifier-free guidance scale w (1 or None = no guidance).
    pub guidance: Option<f32>,
    pub seed: u64,
}

/// One move of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// A reverse step from level u to u − 1.
    Down(usize),
    /// The forward process from level u to u + 1.
    Up(usize),
}

/// The moves from level S down to 0 with jumps (see the module doc).
pub fn repaint_schedule(steps: usize, jump_length: usize, jump_n_sample: usize) -> Vec<Move> {
    let j = jump_length.max(1);
    let mut left: Vec<usize> = (0..=steps)
        .map(|k| {
            if k > 0 && k % j == 0 && k + j <= steps {
                jump_n_sample.saturating_sub(1)
            } else {
                0
            }
        })
        .collect();
    let mut moves = Vec::new();
    let mut u = steps;
    while u > 0 {
        moves.push(Move::Down(u));
        u -= 1;
        if left[u] > 0 {
            left[u] -= 1;
            for _ in 0..j {
                moves.push(Move::Up(u));
                u += 1;
            }
        }
    }
    moves
}

/// An inpainting run in progress.
pub struct RepaintRun {
    unet: UNet,
    schedule: Schedule,
    scheduler: SchedulerConfig,
    timesteps: Vec<usize>,
    moves: Vec<Move>,
    next: usize,
    n: usize,
    guidance: Option<f64>,
    seed: u64,
    image: Vec<f32>,
    mask: Vec<f32>,
    image64: Vec<f64>,
    /// The current sample, (N, C, H, W).
    x: Vec<f64>,
    /// The last reverse step's x̂_0 (clipped as the step used it; zeros before the first).
    x0: Vec<f64>,
}

impl RepaintRun {
    /// `image`: (N, C, H, W) in [−1, 1]; `mask`: (N, 1, H, W), 1 = keep, 0 = fill (values
    /// in between blend).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        config: &UNetConfig,
        weights: &Weights,
        scheduler: &SchedulerConfig,
        image: &[f32],
        mask: &[f32],
        shape: &[usize],
        settings: RepaintSettings,
    ) -> Result<Self> {
        let [h, w] = config.sample_size;
        let c = config.in_channels;
        let n = shape.first().copied().unwrap_or(0);
        if shape != [n, c, h, w] || n == 0 {
            return Err(Error::shape(format!(
                "image has shape {shape:?} but this model takes [N, {c}, {h}, {w}] (N ≥ 1)"
            )));
        }
        if image.len() != n * c * h * w {
            return Err(Error::shape(format!(
                "{} values for an image of shape {shape:?}",
                image.len()
            )));
        }
        if mask.len() != n * h * w {
            return Err(Error::shape(format!(
                "the mask holds {} values; [N, 1, H, W] = [{n}, 1, {h}, {w}] needs {}",
                mask.len(),
                n * h * w
            )));
        }
        if let Some(i) = mask.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(Error::shape(format!(
                "mask value {} at index {i} is outside [0, 1]",
                mask[i]
            )));
        }
        if settings.steps == 0 || settings.jump_length == 0 || settings.jump_n_sample == 0 {
            return Err(Error::config(
                "steps, jump length and jump samples must be at least 1",
            ));
        }
        let schedule = Schedule::new(scheduler)?;
        let timesteps = inference_timesteps(scheduler, settings.steps)?;
        let guided =
            match (settings.guidance, config.num_class_embeds) {
                (Some(w), Some(_)) => w != 1.0,
                (Some(_), None) => return Err(Error::config(
                    "guidance needs a class-conditional model (num_class_embeds in config.json)",
                )),
                _ => false,
            };
        let unet = UNet::new(ctx, config, weights, if guided { 2 * n } else { n })?;
        match (&settings.class_labels, config.num_class_embeds) {
            (Some(l), Some(k)) => {
                if l.len() != n {
                    return Err(Error::shape(format!(
                        "{} class labels for {n} images",
                        l.len()
                    )));
                }
                let mut all = l.clone();
                if guided {
                    all.extend(std::iter::repeat_n((k - 1) as u32, n));
                }
                unet.set_class_labels(ctx, Some(&all))?;
            }
            (None, Some(k)) => {
                // No label: the null class (unconditional), also for the guided half.
                unet.set_class_labels(ctx, Some(&vec![(k - 1) as u32; unet.batch]))?;
            }
            (l, None) => unet.set_class_labels(ctx, l.as_deref())?,
        }
        // Broadcast the mask over channels.
        let hw = h * w;
        let mask_full: Vec<f32> = (0..n * c * hw)
            .map(|i| mask[(i / (c * hw)) * hw + i % hw])
            .collect();
        let x: Vec<f64> = gaussian_noise_cpu(settings.seed, 0, n * c * hw)
            .into_iter()
            .map(|v| v as f64)
            .collect();
        Ok(RepaintRun {
            unet,
            schedule,
            scheduler: scheduler.clone(),
            moves: repaint_schedule(
                timesteps.len(),
                settings.jump_length,
                settings.jump_n_sample,
            ),
            timesteps,
            next: 0,
            n,
            guidance: if guided {
                settings.guidance.map(|w| w as f64)
            } else {
                None
            },
            seed: settings.seed,
            image64: image.iter().map(|&v| v as f64).collect(),
            image: image.to_vec(),
            mask: mask_full,
            x0: vec![0.0; x.len()],
            x,
        })
    }

    /// All moves of the schedule (U-Net calls = the number of `Down`s).
    pub fn moves(&self) -> &[Move] {
        &self.moves
    }

    pub fn is_done(&self) -> bool {
        self.next >= self.moves.len()
    }

    /// How many moves have been taken.
    pub fn moves_done(&self) -> usize {
        self.next
    }

    /// The current sample x_t (known part included), (N, C, H, W); for watching a run.
    pub fn sample(&self) -> &[f64] {
        &self.x
    }

    /// The network's x̂_0 at the last reverse step, (N, C, H, W); zeros before the first.
    pub fn x0_estimate(&self) -> &[f64] {
        &self.x0
    }

    /// ᾱ at level u (1 at level 0).
    fn alpha_bar(&self, u: usize) -> f64 {
        let s = self.timesteps.len();
        if u == 0 {
            1.0
        } else {
            self.schedule.alphas_cumprod[self.timesteps[s - u]]
        }
    }

    /// Take the next move (a reverse step is one U-Net call and a readback). Returns the
    /// move, or None when finished.
    pub async fn step(&mut self, ctx: &GpuContext) -> Result<Option<Move>> {
        let Some(&mv) = self.moves.get(self.next) else {
            return Ok(None);
        };
        // Noise streams: 1 + 2·move for the step's z, 2 + 2·move for the known part's ε.
        let stream = 1 + 2 * self.next as u32;
        let numel = self.x.len();
        match mv {
            Move::Up(u) => {
                // q(x_high | x_low) = N(√(ᾱ_high/ᾱ_low) x_low, (1 − ᾱ_high/ᾱ_low) I)
                let ratio = self.alpha_bar(u + 1) / self.alpha_bar(u);
                let (a, b) = (ratio.sqrt(), (1.0 - ratio).max(0.0).sqrt());
                let z = gaussian_noise_cpu(self.seed, stream, numel);
                for (x, &z) in self.x.iter_mut().zip(&z) {
                    *x = a * *x + b * z as f64;
                }
            }
            Move::Down(u) => {
                let s = self.timesteps.len();
                let t = self.timesteps[s - u];
                let prev = (u > 1).then(|| self.timesteps[s - u + 1]);
                let c = step_coefficients(&self.schedule, &self.scheduler, Sampler::Ddpm, t, prev);
                let xf: Vec<f32> = self.x.iter().map(|&v| v as f32).collect();
                let batch = self.unet.batch;
                let input: Vec<f32> = if batch == 2 * self.n {
                    [xf.as_slice(), xf.as_slice()].concat()
                } else {
                    xf
                };
                ctx.write(&self.unet.sample, &input)?;
                ctx.write(&self.unet.timesteps, &vec![t as f32; batch])?;
                ctx.run(self.unet.program())?;
                let out = ctx.read(&self.unet.output).await?;
                if out.iter().any(|v| !v.is_finite()) {
                    return Err(Error::Other(format!(
                        "the model's output at timestep {t} contains NaN or Inf"
                    )));
                }
                let model: Vec<f64> = match self.guidance {
                    // ε = ε_∅ + w (ε_c − ε_∅) (classifier-free guidance)
                    Some(w) => out[..numel]
                        .iter()
                        .zip(&out[numel..])
                        .map(|(&cond, &uncond)| uncond as f64 + w * (cond as f64 - uncond as f64))
                        .collect(),
                    None => out.iter().map(|&v| v as f64).collect(),
                };
                let z = gaussian_noise_cpu(self.seed, stream, numel);
                let eps_known = gaussian_noise_cpu(self.seed, stream + 1, numel);
                let a_prev = self.alpha_bar(u - 1);
                let (ka, kb) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
                for i in 0..numel {
                    let (x, m) = (self.x[i], model[i]);
                    let mut x0 = c.x0_from_xt * x + c.x0_from_model * m;
                    if c.clip > 0.0 {
                        x0 = x0.clamp(-c.clip, c.clip);
                    }
                    self.x0[i] = x0;
                    let eps = c.eps_from_xt * x + c.eps_from_model * m;
                    let unknown = c.prev_from_x0 * x0
                        + c.prev_from_xt * x
                        + c.prev_from_eps * eps
                        + c.noise_scale * z[i] as f64;
                    let known = ka * self.image64[i] + kb * eps_known[i] as f64;
                    let k = self.mask[i] as f64;
                    self.x[i] = k * known + (1.0 - k) * unknown;
                }
            }
        }
        self.next += 1;
        Ok(Some(mv))
    }

    /// The result, (N, C, H, W): mask · image + (1 − mask) · generated, composed in f32 so
    /// the known pixels are the input's values exactly.
    pub fn result(&self) -> Vec<f32> {
        self.x
            .iter()
            .zip(&self.image)
            .zip(&self.mask)
            .map(|((&x, &img), &m)| {
                if m == 1.0 {
                    img
                } else if m == 0.0 {
                    x as f32
                } else {
                    m * img + (1.0 - m) * x as f32
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(moves: &[Move], s: usize) -> Vec<usize> {
        let mut u = s;
        let mut out = vec![u];
        for m in moves {
            match *m {
                Move::Down(v) => {
                    assert_eq!(v, u);
                    u -= 1;
                }
                Move::Up(v) => {
                    assert_eq!(v, u);
                    u += 1;
                }
            }
            out.push(u);
        }
        out
    }

    #[test]
    fn schedule_without_jumps_is_plain_descent() {
        let m = repaint_schedule(5, 10, 1);
        assert_eq!(levels(&m, 5), vec![5, 4, 3, 2, 1, 0]);
    }

    #[test]
    fn schedule_jumps_back_up_and_ends_at_zero() {
        // S = 6, j = 2, r = 3: jump points at levels 2 and 4, each passed 3 times.
        let m = repaint_schedule(6, 2, 3);
        let l = levels(&m, 6);
        assert_eq!(*l.last().unwrap(), 0);
        assert!(l.iter().all(|&u| u <= 6));
        let downs = m.iter().filter(|m| matches!(m, Move::Down(_))).count();
        let ups = m.len() - downs;
        // 2 jump points × 2 extra passes × 2 levels up.
        assert_eq!(ups, 8);
        assert_eq!(downs, 6 + ups);
        assert_eq!(
            l,
            vec![6, 5, 4, 5, 6, 5, 4, 5, 6, 5, 4, 3, 2, 3, 4, 3, 2, 3, 4, 3, 2, 1, 0]
        );
    }
}
