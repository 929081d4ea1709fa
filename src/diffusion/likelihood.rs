//! The variational bound on the negative log-likelihood of discrete images (Ho et al. 2020,
//! eq. 5), in bits per dimension:
//!
//! ```text
//! L = L_T + Σ_{t>1} L_{t−1} + L_0
//! L_T     = KL(q(x_T | x_0) ‖ N(0, I))                     (prior term, no network)
//! L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))  (eq. 6–7 vs. the model)
//! L_0     = −log p_θ(x_0 | x_1), discretized Gaussian      (eq. 13)
//! ```
//!
//! Each term is estimated with one x_t ~ q(x_t | x_0) (eq. 4) per timestep, as in the DDPM
//! paper's evaluation and improved-diffusion's `calc_bpd_loop`. Timesteps are diffusers'
//! indices 0..T−1 (index 0 is the paper's t = 1, where the decoder term L_0 is taken).
//!
//! The model's variance follows the scheduler's `variance_type`: `fixed_small` uses the
//! posterior variance β̃_t (eq. 7), whose log at index 0 (where β̃ = 0) is clipped to β̃ at
//! index 1; `fixed_large` uses β_t, with β̃ at index 1 in place of β at index 0.
//!
//! The U-Net runs on the GPU (all N images in one batch, one call per timestep); the KL terms
//! are computed on the CPU in f64. Nothing here prints, reads files or blocks.

use crate::diffusion::schedule::{
    step_coefficients, Sampler, Schedule, SchedulerConfig, VarianceType,
};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::config::UNetConfig;
use crate::model::Model;
use crate::ops::noise::gaussian_noise_cpu;
use crate::unet::UNet;

/// Half a bin of the 256-level grid on [−1, 1]: bins are 2/255 wide.
const HALF_BIN: f64 = 1.0 / 255.0;

/// erfc(x) in f64 (relative error ~1e-14): the Maclaurin series of erf for |x| < 2, the
/// continued fraction erfc x = e^{−x²}/√π · 1/(x + ½/(x + 1/(x + 3/2/(x + …)))) above.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf x = 2/√π Σ (−1)^n x^{2n+1} / (n! (2n+1))
        let x2 = x * x;
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return 1.0 - sum * std::f64::consts::FRAC_2_SQRT_PI;
    }
    if x > 27.0 {
        return 0.0;
    }
    // Evaluate the continued fraction from the tail (a_k = k/2); 300 levels are plenty for
    // x ≥ 2.
    let mut f = x;
    for k in (1..300).rev() {
        f = x + (k as f64 / 2.0) / f;
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// Standard normal CDF Φ(z).
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// Φ(b) − Φ(a) for a ≤ b, without cancellation in the upper tail.
fn normal_cdf_diff(a: f64, b: f64) -> f64 {
    if a > 0.0 {
        0.5 * (erfc(a * std::f64::consts::FRAC_1_SQRT_2)
            - erfc(b * std::f64::consts::FRAC_1_SQRT_2))
    } else {
        normal_cdf(b) - normal_cdf(a)
    }
}

/// log p(x) of a pixel value x on the 256-level grid in [−1, 1] under a Gaussian (mean,
/// exp(log_scale)) discretized to the grid's bins, the edge bins extended to ±∞ (eq. 13).
/// Probabilities are clamped at 1e-12 (as the paper's code) so a hopeless prediction costs
/// at most ~40 bits per pixel instead of infinity.
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let inv_std = (-log_scale).exp();
    let lo = (x - mean - HALF_BIN) * inv_std;
    let hi = (x - mean + HALF_BIN) * inv_std;
    let p = if x < -0.999 {
        normal_cdf(hi)
    } else if x > 0.999 {
        1.0 - normal_cdf(lo)
    } else {
        normal_cdf_diff(lo, hi)
    };
    p.max(1e-12).ln()
}

/// KL(N(m1, e^{lv1}) ‖ N(m2, e^{lv2})) of one dimension, in nats.
pub fn normal_kl(m1: f64, lv1: f64, m2: f64, lv2: f64) -> f64 {
    0.5 * (-1.0 + lv2 - lv1 + (lv1 - lv2).exp() + (m1 - m2) * (m1 - m2) * (-lv2).exp())
}

/// Snap pixel values to the 256-level grid k/127.5 − 1 (k = 0..255). A value more than 1e-3
/// of a bin away from a grid point is an error naming its index: the bound is defined for
/// discrete data only.
pub fn snap_to_grid(x: &[f32]) -> Result<Vec<f64>> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let k = ((v as f64 + 1.0) * 127.5).round();
            let on_grid = (0.0..=255.0).contains(&k) && ((v as f64 + 1.0) * 127.5 - k).abs() < 1e-3;
            if on_grid {
                Ok(k / 127.5 - 1.0)
            } else {
                Err(Error::shape(format!(
                    "value {v} at index {i} is not on the 256-level grid k/127.5 − 1 in [−1, 1] \
                     (the bound needs 8-bit images)"
                )))
            }
        })
        .collect()
}

/// The per-timestep constants of the bound.
#[derive(Clone, Debug)]
struct TermCoefficients {
    /// x̂_0 = clip(x0_from_xt · x_t + x0_from_model · m)  (m = model output)
    x0_from_xt: f64,
    x0_from_model: f64,
    /// 0 = no clipping.
    clip: f64,
    /// Posterior mean μ̃_t(x_t, x_0) = mean_from_x0 · x_0 + mean_from_xt · x_t (eq. 7).
    mean_from_x0: f64,
    mean_from_xt: f64,
    /// log β̃_t (true posterior; unused at index 0).
    posterior_log_var: f64,
    /// log of the model's variance σ_t².
    model_log_var: f64,
}

/// The bound's schedule-dependent parts (no network).
#[derive(Clone, Debug)]
pub struct Vlb {
    sqrt_acp: Vec<f64>,
    sqrt_one_minus_acp: Vec<f64>,
    terms: Vec<TermCoefficients>,
}

impl Vlb {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        let sched = Schedule::new(cfg)?;
        let t_max = sched.num_train_timesteps();
        if t_max < 2 {
            return Err(Error::config(
                "scheduler_config.json: the bound needs num_train_timesteps ≥ 2",
            ));
        }
        let acp = &sched.alphas_cumprod;
        // β̃ at index t ≥ 1: (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t.
        let posterior_var = |t: usize| (1.0 - acp[t - 1]) / (1.0 - acp[t]) * sched.betas[t];
        let terms = (0..t_max)
            .map(|t| {
                let c = step_coefficients(&sched, cfg, Sampler::Ddpm, t, t.checked_sub(1));
                let posterior_log_var = if t == 0 {
                    posterior_var(1).ln()
                } else {
                    posterior_var(t).ln()
                };
                let model_log_var = match (cfg.variance_type, t) {
                    (_, 0) => posterior_var(1).ln(),
                    (VarianceType::FixedSmall, _) => posterior_var(t).ln(),
                    (VarianceType::FixedLarge, _) => sched.betas[t].ln(),
                };
                TermCoefficients {
                    x0_from_xt: c.x0_from_xt,
                    x0_from_model: c.x0_from_model,
                    clip: c.clip,
                    mean_from_x0: c.prev_from_x0,
                    mean_from_xt: c.prev_from_xt,
                    posterior_log_var,
                    model_log_var,
                }
            })
            .collect();
        Ok(Vlb {
            sqrt_acp: acp.iter().map(|a| a.sqrt()).collect(),
            sqrt_one_minus_acp: acp.iter().map(|a| (1.0 - a).sqrt()).collect(),
            terms,
        })
    }

    pub fn num_timesteps(&self) -> usize {
        self.terms.len()
    }

    /// x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (eq. 4).
    pub fn noisy(&self, t: usize, x0: &[f64], eps: &[f32]) -> Vec<f64> {
        let (a, b) = (self.sqrt_acp[t], self.sqrt_one_minus_acp[t]);
        x0.iter()
            .zip(eps)
            .map(|(&x, &e)| a * x + b * e as f64)
            .collect()
    }

    /// L_T per image in bits/dim: KL(N(√ᾱ_T x_0, 1 − ᾱ_T) ‖ N(0, 1)), mean over dims.
    pub fn prior_bits(&self, x0: &[f64], dims: usize) -> Vec<f64> {
        let last = self.terms.len() - 1;
        let (a, b) = (self.sqrt_acp[last], self.sqrt_one_minus_acp[last]);
        let lv = (b * b).ln();
        x0.chunks_exact(dims.max(1))
            .map(|img| {
                let nats: f64 = img.iter().map(|&x| normal_kl(a * x, lv, 0.0, 0.0)).sum();
                nats / dims as f64 / std::f64::consts::LN_2
            })
            .collect()
    }

    /// The term at index t per image in bits/dim (mean over dims): the KL L_{t} for t ≥ 1,
    /// the decoder NLL L_0 at t = 0. `model_out` is the U-Net's output at (x_t, t).
    pub fn term_bits(
        &self,
        t: usize,
        x0: &[f64],
        xt: &[f64],
        model_out: &[f32],
        dims: usize,
    ) -> Vec<f64> {
        let c = &self.terms[t];
        let dims = dims.max(1);
        x0.chunks_exact(dims)
            .zip(xt.chunks_exact(dims))
            .zip(model_out.chunks_exact(dims))
            .map(|((x0, xt), m)| {
                let mut nats = 0.0;
                for ((&x0, &xt), &m) in x0.iter().zip(xt).zip(m) {
                    let mut pred_x0 = c.x0_from_xt * xt + c.x0_from_model * m as f64;
                    if c.clip > 0.0 {
                        pred_x0 = pred_x0.clamp(-c.clip, c.clip);
                    }
                    let model_mean = c.mean_from_x0 * pred_x0 + c.mean_from_xt * xt;
                    nats += if t == 0 {
                        -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * c.model_log_var)
                    } else {
                        let true_mean = c.mean_from_x0 * x0 + c.mean_from_xt * xt;
                        normal_kl(true_mean, c.posterior_log_var, model_mean, c.model_log_var)
                    };
                }
                nats / dims as f64 / std::f64::consts::LN_2
            })
            .collect()
    }
}

/// The bound's terms, all in bits/dim.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VlbReport {
    /// Total per image: prior + Σ_t terms.
    pub bits_per_dim: Vec<f64>,
    /// L_T per image.
    pub prior: Vec<f64>,
    /// `terms[t][i]`: the term at timestep index t for image i (t = 0 is the decoder L_0);
    /// empty for timesteps a strided plan skipped.
    pub terms: Vec<Vec<f64>>,
    /// `weights[t]`: the weight of timestep t's term in the total (1 for every t in the
    /// bound itself; the block length or 0 for a strided estimate).
    pub weights: Vec<f64>,
}

impl VlbReport {
    /// The mean over images of each timestep's term.
    pub fn mean_terms(&self) -> Vec<f64> {
        self.terms.iter().map(|v| mean(v)).collect()
    }
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Where the ε of each timestep comes from.
pub enum TermNoise {
    /// Philox N(0, 1) under a seed: timestep t uses stream t (the engine's noise algorithm,
    /// [`gaussian_noise_cpu`]).
    Seeded(u64),
    /// Given noise, `[T, N, C, H, W]` flattened (e.g. a reference implementation's).
    Given(Vec<f32>),
}

/// Which timesteps a run evaluates, and how many share one U-Net call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TermPlan {
    /// Timesteps evaluated together in one U-Net call: the network takes one timestep per
    /// sample, so the batch is N · `per_call` (x_t of every image at each of those t's).
    /// 1 = one call per timestep. The terms do not depend on it.
    pub per_call: usize,
    /// 1: every timestep (the bound itself). k > 1: an estimate — the decoder L_0 (index 0)
    /// exactly, and of the KL terms at indices 1…T−1 one per block of k consecutive
    /// indices, at a position drawn from `seed` (stratified sampling), weighted by the
    /// block's length (so the sum is scaled by k): an unbiased estimate of Σ KL with
    /// ~T/k U-Net evaluations per image instead of T.
    pub stride: usize,
    /// Seed of the positions within the blocks (stride > 1 only).
    pub seed: u64,
}

impl Default for TermPlan {
    fn default() -> Self {
        TermPlan {
            per_call: 1,
            stride: 1,
            seed: 0,
        }
    }
}

/// The timesteps a plan evaluates with their weights in the sum, from T−1 down to 0.
/// Stride 1: every index with weight 1. Stride k: index 0 (weight 1) and one index per block
/// [1 + b·k, min(1 + (b+1)·k, T)) with the block's length as its weight.
pub fn planned_timesteps(t_max: usize, stride: usize, seed: u64) -> Vec<(usize, f64)> {
    let k = stride.max(1);
    if k == 1 {
        return (0..t_max).rev().map(|t| (t, 1.0)).collect();
    }
    let mut out = Vec::new();
    let mut start = 1;
    let mut block = 0u64;
    while start < t_max {
        let end = (start + k).min(t_max);
        let offset =
            splitmix64(seed ^ block.wrapping_mul(0x9e37_79b9_7f4a_7c15)) % (end - start) as u64;
        out.push((start + offset as usize, (end - start) as f64));
        start = end;
        block += 1;
    }
    out.reverse();
    if t_max > 0 {
        out.push((0, 1.0));
    }
    out
}

/// SplitMix64 (Steele et al. 2014): a small, well-mixed hash for the block positions.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A bits/dim evaluation of N images in progress: U-Net calls from timestep T−1 down to 0,
/// `per_call` timesteps per call (see [`TermPlan`]).
pub struct LikelihoodRun {
    unet: UNet,
    vlb: Vlb,
    x0: Vec<f64>,
    n: usize,
    dims: usize,
    noise: TermNoise,
    per_call: usize,
    /// (timestep index, weight in the sum), in evaluation order (descending t).
    plan: Vec<(usize, f64)>,
    /// How many entries of `plan` are done.
    done: usize,
    /// `terms[t]`: per image; empty until t is evaluated (and for t's the plan skips).
    terms: Vec<Vec<f64>>,
}

/// The images a likelihood or reconstruction run scores: `data` of `shape` (N, C, H, W), with
/// one class label per image for class-conditional models.
#[derive(Clone, Copy, Debug)]
pub struct ImageBatch<'a> {
    pub data: &'a [f32],
    pub shape: &'a [usize],
    pub class_labels: Option<&'a [u32]>,
}

impl ImageBatch<'_> {
    /// Checks the batch against the model's input (N ≥ 1 images of its channels and size, N
    /// labels if any); returns (N, C·H·W).
    pub fn check(&self, config: &UNetConfig) -> Result<(usize, usize)> {
        let [h, w] = config.sample_size;
        let n = self.shape.first().copied().unwrap_or(0);
        if self.shape != [n, config.in_channels, h, w] || n == 0 {
            return Err(Error::shape(format!(
                "images have shape {:?} but this model takes [N, {}, {h}, {w}] (N ≥ 1)",
                self.shape, config.in_channels
            )));
        }
        let dims = config.in_channels * h * w;
        if self.data.len() != n * dims {
            return Err(Error::shape(format!(
                "{} values for images of shape {:?}",
                self.data.len(),
                self.shape
            )));
        }
        if let Some(l) = self.class_labels {
            if l.len() != n {
                return Err(Error::shape(format!(
                    "{} class labels for {n} images",
                    l.len()
                )));
            }
        }
        Ok((n, dims))
    }

    /// A U-Net over `copies` copies of the batch, copy-major, its class labels set. It checks
    /// the batch itself (a few comparisons, repeated after the runs' own check) so that no
    /// caller can build a U-Net for a batch that does not fit the model.
    pub(crate) fn unet_for_copies(
        &self,
        ctx: &GpuContext,
        model: &Model,
        copies: usize,
    ) -> Result<UNet> {
        let (n, _) = self.check(&model.config)?;
        let unet = UNet::new(ctx, &model.config, &model.weights, n * copies)?;
        let labels: Option<Vec<u32>> = self
            .class_labels
            .map(|l| (0..copies).flat_map(|_| l.iter().copied()).collect());
        unet.set_class_labels(ctx, labels.as_deref())?;
        Ok(unet)
    }
}

impl LikelihoodRun {
    /// `images`: N images on the 256-level grid in [−1, 1] (checked). Every timestep, one per
    /// U-Net call.
    pub fn new(
        ctx: &GpuContext,
        model: &Model,
        images: ImageBatch<'_>,
        noise: TermNoise,
    ) -> Result<Self> {
        Self::with_plan(ctx, model, images, noise, TermPlan::default())
    }

    /// As [`LikelihoodRun::new`], with the timesteps and batching of `plan`.
    pub fn with_plan(
        ctx: &GpuContext,
        model: &Model,
        images: ImageBatch<'_>,
        noise: TermNoise,
        plan: TermPlan,
    ) -> Result<Self> {
        let (n, dims) = images.check(&model.config)?;
        if model.config.out_channels != model.config.in_channels {
            return Err(Error::config(
                "the bound needs a model whose output has the input's channels (learned \
                 variances are not supported)",
            ));
        }
        if plan.per_call == 0 || plan.stride == 0 {
            return Err(Error::config(
                "timesteps per call and the stride must be at least 1",
            ));
        }
        let vlb = Vlb::new(&model.scheduler)?;
        let x0 = images.data;
        if let TermNoise::Given(v) = &noise {
            if v.len() != vlb.num_timesteps() * x0.len() {
                return Err(Error::shape(format!(
                    "given noise has {} values; {} timesteps × {} need {}",
                    v.len(),
                    vlb.num_timesteps(),
                    x0.len(),
                    vlb.num_timesteps() * x0.len()
                )));
            }
        }
        let x0 = snap_to_grid(x0)?;
        let t_max = vlb.num_timesteps();
        let order = planned_timesteps(t_max, plan.stride, plan.seed);
        let per_call = plan.per_call.min(order.len());
        let unet = images.unet_for_copies(ctx, model, per_call)?;
        Ok(LikelihoodRun {
            unet,
            dims,
            x0,
            n,
            noise,
            per_call,
            plan: order,
            done: 0,
            terms: vec![Vec::new(); t_max],
            vlb,
        })
    }

    pub fn num_timesteps(&self) -> usize {
        self.vlb.num_timesteps()
    }

    /// (timestep index, weight in the sum) of every term the run evaluates, in order.
    pub fn plan(&self) -> &[(usize, f64)] {
        &self.plan
    }

    /// How many of [`LikelihoodRun::plan`]'s terms are done.
    pub fn terms_done(&self) -> usize {
        self.done
    }

    /// `terms()[t][i]`: the term at timestep index t of image i in bits/dim, as far as
    /// computed (empty for t's not evaluated yet or skipped by the plan).
    pub fn terms(&self) -> &[Vec<f64>] {
        &self.terms
    }

    /// L_T per image in bits/dim (no network).
    pub fn prior_bits(&self) -> Vec<f64> {
        self.vlb.prior_bits(&self.x0, self.dims)
    }

    /// Evaluate the next `per_call` timesteps' terms (one U-Net call and a readback).
    /// Returns the last (smallest) timestep index just done, or None when every term is in.
    pub async fn step(&mut self, ctx: &GpuContext) -> Result<Option<usize>> {
        if self.done >= self.plan.len() {
            return Ok(None);
        }
        let chunk: Vec<usize> = self.plan[self.done..]
            .iter()
            .take(self.per_call)
            .map(|&(t, _)| t)
            .collect();
        let numel = self.x0.len();
        // x_t of every image at every timestep of the chunk; a short last chunk repeats its
        // last timestep to fill the planned batch (those outputs are ignored).
        let mut xts: Vec<Vec<f64>> = Vec::with_capacity(chunk.len());
        let mut xt32: Vec<f32> = Vec::with_capacity(numel * self.per_call);
        let mut ts: Vec<f32> = Vec::with_capacity(self.unet.batch);
        for j in 0..self.per_call {
            let t = chunk[j.min(chunk.len() - 1)];
            if j < chunk.len() {
                let eps = match &self.noise {
                    TermNoise::Seeded(seed) => gaussian_noise_cpu(*seed, t as u32, numel),
                    TermNoise::Given(v) => v[t * numel..(t + 1) * numel].to_vec(),
                };
                xts.push(self.vlb.noisy(t, &self.x0, &eps));
            }
            let xt = &xts[j.min(chunk.len() - 1)];
            xt32.extend(xt.iter().map(|&v| v as f32));
            ts.extend(std::iter::repeat_n(t as f32, self.n));
        }
        ctx.write(&self.unet.sample, &xt32)?;
        ctx.write(&self.unet.timesteps, &ts)?;
        ctx.run(self.unet.program())?;
        let out = ctx.read(&self.unet.output).await?;
        for (j, &t) in chunk.iter().enumerate() {
            let m = &out[j * numel..(j + 1) * numel];
            if m.iter().any(|v| !v.is_finite()) {
                return Err(Error::Other(format!(
                    "the model's output at timestep {t} contains NaN or Inf"
                )));
            }
            self.terms[t] = self.vlb.term_bits(t, &self.x0, &xts[j], m, self.dims);
        }
        self.done += chunk.len();
        Ok(chunk.last().copied())
    }

    /// The result, once every step is done. With a stride > 1 the total is the estimate of
    /// [`TermPlan::stride`] (each evaluated term times its weight).
    pub fn report(&self) -> Option<VlbReport> {
        if self.done < self.plan.len() {
            return None;
        }
        let prior = self.vlb.prior_bits(&self.x0, self.dims);
        let mut weights = vec![0.0; self.terms.len()];
        for &(t, w) in &self.plan {
            weights[t] = w;
        }
        let bits_per_dim = (0..prior.len())
            .map(|i| {
                prior[i]
                    + self
                        .plan
                        .iter()
                        .rev()
                        .map(|&(t, w)| w * self.terms[t][i])
                        .sum::<f64>()
            })
            .collect();
        Some(VlbReport {
            bits_per_dim,
            prior,
            terms: self.terms.clone(),
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch check names what is wrong: the shape (N = 0 included), the number of
    /// values, the number of labels; a right batch gives (N, C·H·W).
    #[test]
    fn image_batch_check_refuses_wrong_shapes_and_labels() {
        let config = crate::train::presets::preset("mnist").unwrap();
        let data = vec![0.0f32; 2 * 28 * 28];
        let batch = |shape: &'static [usize], n_values: usize, labels: Option<&'static [u32]>| {
            ImageBatch {
                data: &data[..n_values],
                shape,
                class_labels: labels,
            }
            .check(&config)
        };
        assert_eq!(
            batch(&[2, 1, 28, 28], 2 * 784, Some(&[3, 4])).unwrap(),
            (2, 784)
        );
        assert_eq!(batch(&[1, 1, 28, 28], 784, None).unwrap(), (1, 784));
        for (shape, n_values, labels, want) in [
            (
                &[2, 1, 28, 27][..],
                2 * 756,
                None,
                "images have shape [2, 1, 28, 27]",
            ),
            (
                &[2, 3, 28, 28][..],
                2 * 784,
                None,
                "this model takes [N, 1, 28, 28]",
            ),
            (&[0, 1, 28, 28][..], 0, None, "(N ≥ 1)"),
            (
                &[2, 1, 28, 28][..],
                784,
                None,
                "784 values for images of shape",
            ),
            (
                &[2, 1, 28, 28][..],
                2 * 784,
                Some(&[3][..]),
                "1 class labels for 2 images",
            ),
        ] {
            let e = batch(shape, n_values, labels).unwrap_err();
            assert!(matches!(e, Error::Shape(_)), "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn erfc_matches_known_values() {
        // Reference values: Python's math.erfc.
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (1.9, 0.0072095707647425325),
            (2.0, 0.004677734981047265),
            (3.0, 2.2090496998585438e-05),
            (5.0, 1.5374597944280351e-12),
            (10.0, 2.088487583762545e-45),
            (-1.0, 1.842700792949715),
        ] {
            let got = erfc(x);
            assert!(
                (got - want).abs() <= 1e-13 * want.abs(),
                "erfc({x}) = {got:e}, want {want:e}"
            );
        }
    }

    #[test]
    fn discretized_gaussian_sums_to_one_and_matches_integrals() {
        // Over the 256 bins the probabilities sum to 1 for any mean and scale.
        for (mean, log_scale) in [(0.1, -3.0), (-0.97, -1.0), (0.5, 0.3), (1.2, -5.0)] {
            let total: f64 = (0..256)
                .map(|k| {
                    discretized_gaussian_log_likelihood(k as f64 / 127.5 - 1.0, mean, log_scale)
                        .exp()
                })
                .sum();
            // Up to 256 clamped bins add 1e-12 each.
            assert!((total - 1.0).abs() < 3e-10, "{mean} {log_scale}: {total}");
        }
        // A wide Gaussian: a bin's mass ≈ density · width.
        let (x, mean, s) = (0.2, 0.0, 1.0f64);
        let density = (-(x - mean) * (x - mean) / (2.0 * s * s)).exp()
            / (s * (2.0 * std::f64::consts::PI).sqrt());
        let got = discretized_gaussian_log_likelihood(x, mean, s.ln()).exp();
        assert!((got / (density * 2.0 / 255.0) - 1.0).abs() < 1e-4);
        // The clamp at 1e-12.
        let far = discretized_gaussian_log_likelihood(0.0, 0.9, -6.0);
        assert!((far - 1e-12f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn normal_kl_is_zero_only_for_equal_gaussians() {
        assert_eq!(normal_kl(0.3, -1.0, 0.3, -1.0), 0.0);
        // KL(N(0,1) ‖ N(1,4)) = ln 2 + (1 + 1)/8 − 1/2
        let want = 2f64.ln() + 2.0 / 8.0 - 0.5;
        assert!((normal_kl(0.0, 0.0, 1.0, 4f64.ln()) - want).abs() < 1e-15);
    }

    #[test]
    fn snap_to_grid_rejects_off_grid_values() {
        let v = snap_to_grid(&[-1.0, 1.0, 3.0 / 127.5 - 1.0]).unwrap();
        assert_eq!(v, vec![-1.0, 1.0, 3.0 / 127.5 - 1.0]);
        assert!(snap_to_grid(&[0.5]).is_err());
        assert!(snap_to_grid(&[1.01]).is_err());
        assert!(snap_to_grid(&[f32::NAN]).is_err());
    }

    /// With the perfect ε (the noise actually used) every KL term at t ≥ 1 is 0 for
    /// fixed_small, and the bound reduces to prior + decoder; with a wrong ε it is larger.
    #[test]
    fn perfect_prediction_zeroes_the_kl_terms() {
        let cfg = SchedulerConfig {
            num_train_timesteps: 20,
            clip_sample: false,
            ..Default::default()
        };
        let vlb = Vlb::new(&cfg).unwrap();
        let x0: Vec<f64> = (0..8).map(|k| (k * 30) as f64 / 127.5 - 1.0).collect();
        let eps: Vec<f32> = gaussian_noise_cpu(3, 0, 8);
        for t in [1, 7, 19] {
            let xt = vlb.noisy(t, &x0, &eps);
            let zero = vlb.term_bits(t, &x0, &xt, &eps, 4);
            assert!(zero.iter().all(|v| v.abs() < 1e-9), "{t}: {zero:?}");
            let wrong: Vec<f32> = eps.iter().map(|e| e + 0.1).collect();
            let pos = vlb.term_bits(t, &x0, &xt, &wrong, 4);
            assert!(pos.iter().all(|&v| v > 1e-6), "{t}: {pos:?}");
        }
    }
    /// Stride 1 is every index once; stride k covers 1..T−1 with disjoint blocks whose
    /// weights add up to T − 1, one index inside each block, plus the decoder at 0.
    #[test]
    fn planned_timesteps_cover_the_schedule() {
        let all = planned_timesteps(20, 1, 5);
        assert_eq!(all.len(), 20);
        assert_eq!(all[0], (19, 1.0));
        assert_eq!(all[19], (0, 1.0));
        for (t_max, k) in [(20, 3), (1000, 10), (1000, 7), (5, 10)] {
            for seed in 0..4 {
                let p = planned_timesteps(t_max, k, seed);
                assert_eq!(p.last(), Some(&(0, 1.0)));
                let kl = &p[..p.len() - 1];
                let total: f64 = kl.iter().map(|&(_, w)| w).sum();
                assert_eq!(total, (t_max - 1) as f64, "{t_max} {k}");
                assert_eq!(kl.len(), (t_max - 1).div_ceil(k));
                // Descending, each index inside its own block.
                for (b, &(t, w)) in kl.iter().rev().enumerate() {
                    let start = 1 + b * k;
                    assert!(t >= start && t < start + w as usize, "{t} in block {b}");
                }
            }
        }
        // The positions depend on the seed.
        assert_ne!(
            planned_timesteps(1000, 10, 0),
            planned_timesteps(1000, 10, 1)
        );
    }
}
