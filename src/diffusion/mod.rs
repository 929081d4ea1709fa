//! Noise schedules and samplers. Schedule values are computed in f64 on the CPU; each
//! sampler step reduces to a handful of scalar coefficients ([`StepCoefficients`]) that one
//! WGSL kernel applies to every element.

pub mod anomaly;
pub mod dpm_solver;
pub mod interpolate;
pub mod likelihood;
pub mod repaint;
pub mod sampler;
pub mod schedule;

/// One reverse-process step as a linear combination, applied elementwise by the sampler
/// kernel to the model output `m` and the current sample `x_t`:
///
/// ```text
/// x̂_0    = clamp(x0_from_xt · x_t + x0_from_model · m, -clip, clip)   (clamp only if clip > 0)
/// ε̂      = eps_from_xt · x_t + eps_from_model · m                      (unclipped, as diffusers)
/// x_prev = prev_from_x0 · x̂_0 + prev_from_xt · x_t + prev_from_eps · ε̂ + noise_scale · z
///          + prev_from_prev_x0 · x̂_0(previous step)
/// ```
///
/// Every prediction type (ε, v, x_0) and all samplers (DDPM eq. 7 posterior mean and
/// variance, DDIM eq. 12, DPM-Solver++(2M)) are special cases. The kernel reads the previous
/// x̂_0 from its x̂_0 buffer before overwriting it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepCoefficients {
    pub x0_from_xt: f64,
    pub x0_from_model: f64,
    pub eps_from_xt: f64,
    pub eps_from_model: f64,
    /// 0 means no clipping; otherwise x̂_0 is clamped to [-clip, clip].
    pub clip: f64,
    pub prev_from_x0: f64,
    pub prev_from_xt: f64,
    pub prev_from_eps: f64,
    /// σ_t: the standard deviation of the added noise z ~ N(0, I); 0 for deterministic steps.
    pub noise_scale: f64,
    /// Weight of the previous step's x̂_0 (multistep solvers); 0: not read.
    pub prev_from_prev_x0: f64,
    /// Dynamic thresholding (Saharia et al. 2022) instead of clipping: x̂_0 ←
    /// clamp(x̂_0, −s, s)/s with s = min(max(quantile_ratio(|x̂_0|), 1), threshold_max) per
    /// sample. 0: off.
    pub threshold_ratio: f64,
    pub threshold_max: f64,
}
