//! Noise schedules (β_t, ᾱ_t), inference timesteps and per-step sampler coefficients,
//! reproducing diffusers' `DDPMScheduler` and `DDIMScheduler` (computed here in f64).

use super::StepCoefficients;
use crate::{Error, Result};
use serde_json::{json, Map, Value};

/// How β_t is laid out over the training timesteps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// β linear from `beta_start` to `beta_end` (Ho et al. 2020).
    Linear,
    /// √β linear from √`beta_start` to √`beta_end` (latent diffusion).
    ScaledLinear,
    /// Nichol & Dhariwal's cosine ᾱ(t), β capped at 0.999 (diffusers `betas_for_alpha_bar`).
    SquaredcosCapV2,
}

/// DDPM posterior variance choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarianceType {
    /// β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t.
    FixedSmall,
    /// β_t.
    FixedLarge,
}

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

/// How inference timesteps are spread (Lin et al. 2023, Table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl BetaSchedule {
    pub fn name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::SquaredcosCapV2 => "squaredcos_cap_v2",
        }
    }
}
impl VarianceType {
    pub fn name(self) -> &'static str {
        match self {
            VarianceType::FixedSmall => "fixed_small",
            VarianceType::FixedLarge => "fixed_large",
        }
    }
}
impl PredictionType {
    pub fn name(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }
}
impl TimestepSpacing {
    pub fn name(self) -> &'static str {
        match self {
            TimestepSpacing::Leading => "leading",
            TimestepSpacing::Trailing => "trailing",
            TimestepSpacing::Linspace => "linspace",
        }
    }
}

/// `scheduler_config.json` of a `DDPMScheduler` or `DDIMScheduler` (the supported subset).
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// DDPM only.
    pub variance_type: VarianceType,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// DDIM only: ᾱ used past the last step is 1 (true) or ᾱ_0 (false).
    pub set_alpha_to_one: bool,
    /// Dynamic thresholding of x̂_0 (Saharia et al. 2022) instead of clipping.
    pub thresholding: bool,
    /// Its quantile of |x̂_0| (diffusers default 0.995).
    pub dynamic_thresholding_ratio: f64,
    /// Its largest threshold s (diffusers default 1.0, which makes it plain clipping).
    pub sample_max_value: f64,
}

impl Default for SchedulerConfig {
    /// `DDPMScheduler()` defaults (and DDIM's `set_alpha_to_one = true`).
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            variance_type: VarianceType::FixedSmall,
            clip_sample: true,
            clip_sample_range: 1.0,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            set_alpha_to_one: true,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
        }
    }
}

fn unsupported(key: &str, v: &Value, supported: &str) -> Error {
    Error::config(format!(
        "scheduler_config.json: `{key}` = {v} is not supported (supported: {supported})"
    ))
}

fn num(key: &str, v: &Value) -> Result<f64> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| unsupported(key, v, "a number"))
}

fn uint(key: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| unsupported(key, v, "a non-negative integer"))
}

fn boolean(key: &str, v: &Value) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| unsupported(key, v, "true, false"))
}

impl SchedulerConfig {
    /// Parses a `DDPMScheduler`/`DDIMScheduler` `scheduler_config.json`. Keys starting with
    /// `_`, and keys of those classes that do not change sampling here, are ignored; anything
    /// else is an [`Error::Config`] naming the key.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::config(format!("scheduler_config.json is not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::config("scheduler_config.json must hold a JSON object"))?;
        let mut c = SchedulerConfig::default();
        for (key, v) in obj {
            let k = key.as_str();
            if k.starts_with('_') {
                continue;
            }
            let s = v.as_str();
            match k {
                "num_train_timesteps" => c.num_train_timesteps = uint(k, v)?,
                "beta_start" => c.beta_start = num(k, v)?,
                "beta_end" => c.beta_end = num(k, v)?,
                "beta_schedule" => {
                    c.beta_schedule = match s {
                        Some("linear") => BetaSchedule::Linear,
                        Some("scaled_linear") => BetaSchedule::ScaledLinear,
                        Some("squaredcos_cap_v2") => BetaSchedule::SquaredcosCapV2,
                        _ => {
                            return Err(unsupported(
                                k,
                                v,
                                "\"linear\", \"scaled_linear\", \"squaredcos_cap_v2\"",
                            ))
                        }
                    }
                }
                "variance_type" => {
                    c.variance_type = match s {
                        Some("fixed_small") => VarianceType::FixedSmall,
                        Some("fixed_large") => VarianceType::FixedLarge,
                        _ if v.is_null() => VarianceType::FixedSmall,
                        _ => return Err(unsupported(k, v, "\"fixed_small\", \"fixed_large\"")),
                    }
                }
                "clip_sample" => c.clip_sample = boolean(k, v)?,
                "clip_sample_range" => c.clip_sample_range = num(k, v)?,
                "prediction_type" => {
                    c.prediction_type = match s {
                        Some("epsilon") => PredictionType::Epsilon,
                        Some("v_prediction") => PredictionType::VPrediction,
                        Some("sample") => PredictionType::Sample,
                        _ => {
                            return Err(unsupported(
                                k,
                                v,
                                "\"epsilon\", \"v_prediction\", \"sample\"",
                            ))
                        }
                    }
                }
                "timestep_spacing" => {
                    c.timestep_spacing = match s {
                        Some("leading") => TimestepSpacing::Leading,
                        Some("trailing") => TimestepSpacing::Trailing,
                        Some("linspace") => TimestepSpacing::Linspace,
                        _ => {
                            return Err(unsupported(
                                k,
                                v,
                                "\"leading\", \"trailing\", \"linspace\"",
                            ))
                        }
                    }
                }
                "steps_offset" => c.steps_offset = uint(k, v)?,
                "set_alpha_to_one" => c.set_alpha_to_one = boolean(k, v)?,
                "trained_betas" if !v.is_null() => {
                    return Err(unsupported(k, &json!("[…]"), "null"));
                }
                "thresholding" => c.thresholding = boolean(k, v)?,
                "dynamic_thresholding_ratio" => c.dynamic_thresholding_ratio = num(k, v)?,
                "sample_max_value" => c.sample_max_value = num(k, v)?,
                "rescale_betas_zero_snr" if v != &Value::Bool(false) => {
                    return Err(unsupported(k, v, "false"));
                }
                // Harmless: null/false forms of the above, thresholding parameters (unused
                // without thresholding) and keys of early (0.1-era) diffusers configs.
                "trained_betas"
                | "rescale_betas_zero_snr"
                | "tensor_format"
                | "timestep_values" => {}
                _ => {
                    return Err(Error::config(format!(
                        "scheduler_config.json: unknown key `{key}` (= {v}); only DDPMScheduler \
                         and DDIMScheduler configs are supported"
                    )))
                }
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        if self.num_train_timesteps == 0 {
            return Err(Error::config(
                "scheduler_config.json: `num_train_timesteps` must be > 0",
            ));
        }
        if self.beta_schedule != BetaSchedule::SquaredcosCapV2
            && !(self.beta_start > 0.0 && self.beta_end < 1.0 && self.beta_start <= self.beta_end)
        {
            return Err(Error::config(format!(
                "scheduler_config.json: need 0 < beta_start ({}) <= beta_end ({}) < 1",
                self.beta_start, self.beta_end
            )));
        }
        if self.thresholding
            && !(self.dynamic_thresholding_ratio > 0.0
                && self.dynamic_thresholding_ratio <= 1.0
                && self.sample_max_value > 0.0)
        {
            return Err(Error::config(format!(
                "scheduler_config.json: thresholding needs 0 < dynamic_thresholding_ratio ({}) <= 1 \
                 and sample_max_value ({}) > 0",
                self.dynamic_thresholding_ratio, self.sample_max_value
            )));
        }
        if self.clip_sample && self.clip_sample_range <= 0.0 {
            return Err(Error::config(format!(
                "scheduler_config.json: `clip_sample_range` = {} must be > 0",
                self.clip_sample_range
            )));
        }
        Ok(())
    }

    /// A `scheduler_config.json` that diffusers' `DDPMScheduler` (and `DDIMScheduler`) loads.
    pub fn to_json(&self) -> String {
        let mut m = Map::new();
        m.insert("_class_name".into(), json!("DDPMScheduler"));
        m.insert("_diffusers_version".into(), json!("0.42.1"));
        m.insert(
            "num_train_timesteps".into(),
            json!(self.num_train_timesteps),
        );
        m.insert("beta_start".into(), json!(self.beta_start));
        m.insert("beta_end".into(), json!(self.beta_end));
        m.insert("beta_schedule".into(), json!(self.beta_schedule.name()));
        m.insert("trained_betas".into(), Value::Null);
        m.insert("variance_type".into(), json!(self.variance_type.name()));
        m.insert("clip_sample".into(), json!(self.clip_sample));
        m.insert("clip_sample_range".into(), json!(self.clip_sample_range));
        m.insert("prediction_type".into(), json!(self.prediction_type.name()));
        m.insert("thresholding".into(), json!(self.thresholding));
        m.insert(
            "dynamic_thresholding_ratio".into(),
            json!(self.dynamic_thresholding_ratio),
        );
        m.insert("sample_max_value".into(), json!(self.sample_max_value));
        m.insert(
            "timestep_spacing".into(),
            json!(self.timestep_spacing.name()),
        );
        m.insert("steps_offset".into(), json!(self.steps_offset));
        m.insert("set_alpha_to_one".into(), json!(self.set_alpha_to_one));
        serde_json::to_string_pretty(&Value::Object(m)).unwrap_or_default()
    }
}

/// The training noise schedule, in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// β_t, t = 0..T.
    pub betas: Vec<f64>,
    /// α_t = 1 − β_t.
    pub alphas: Vec<f64>,
    /// ᾱ_t = ∏_{s≤t} α_s.
    pub alphas_cumprod: Vec<f64>,
    /// DDIM's ᾱ "before" step 0: 1 if `set_alpha_to_one`, else ᾱ_0.
    pub final_alpha_cumprod: f64,
}

/// numpy/torch `linspace(a, b, n)`: a + i·(b − a)/(n − 1), with the end point exact.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
    v[n - 1] = b;
    v
}

impl Schedule {
    pub fn new(cfg: &SchedulerConfig) -> Result<Self> {
        cfg.validate()?;
        let t = cfg.num_train_timesteps;
        let betas: Vec<f64> = match cfg.beta_schedule {
            BetaSchedule::Linear => linspace(cfg.beta_start, cfg.beta_end, t),
            BetaSchedule::ScaledLinear => linspace(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), t)
                .into_iter()
                .map(|x| x * x)
                .collect(),
            BetaSchedule::SquaredcosCapV2 => {
                let alpha_bar = |s: f64| {
                    let c = ((s + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos();
                    c * c
                };
                (0..t)
                    .map(|i| {
                        let t1 = i as f64 / t as f64;
                        let t2 = (i + 1) as f64 / t as f64;
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(t);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alphas_cumprod.push(acc);
        }
        let final_alpha_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Schedule {
            betas,
            alphas,
            alphas_cumprod,
            final_alpha_cumprod,
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.betas.len()
    }

    /// (√ᾱ_t, √(1 − ᾱ_t)): x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε (diffusers `add_noise`).
    pub fn add_noise_coefficients(&self, t: usize) -> (f64, f64) {
        let a = self.alphas_cumprod[t.min(self.alphas_cumprod.len() - 1)];
        (a.sqrt(), (1.0 - a).sqrt())
    }
}

/// The descending inference timesteps, exactly as diffusers' `DDPMScheduler.set_timesteps`
/// and `DDIMScheduler.set_timesteps` (identical for both) compute them.
pub fn inference_timesteps(cfg: &SchedulerConfig, steps: usize) -> Result<Vec<usize>> {
    let t_train = cfg.num_train_timesteps;
    if steps == 0 || steps > t_train {
        return Err(Error::config(format!(
            "{steps} inference steps: must be between 1 and num_train_timesteps = {t_train}"
        )));
    }
    // numpy rounds half to even.
    let ts: Vec<i64> = match cfg.timestep_spacing {
        TimestepSpacing::Linspace => linspace(0.0, (t_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|x| x.round_ties_even() as i64)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = t_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + cfg.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            // np.round(np.arange(T, 0, -T/steps)) - 1
            let ratio = t_train as f64 / steps as f64;
            let n = (t_train as f64 / ratio).ceil() as usize;
            (0..n)
                .map(|i| (t_train as f64 - i as f64 * ratio).round_ties_even() as i64 - 1)
                .collect()
        }
    };
    ts.iter()
        .map(|&t| {
            usize::try_from(t)
                .ok()
                .filter(|&t| t < t_train)
                .ok_or_else(|| {
                    Error::config(format!(
                        "timestep {t} for {steps} steps (spacing {}, steps_offset {}) is outside \
                     0..{t_train}",
                        cfg.timestep_spacing.name(),
                        cfg.steps_offset
                    ))
                })
        })
        .collect()
}

/// The reverse-process sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling (Ho et al. 2020, eq. 6–7), diffusers `DDPMScheduler.step`.
    Ddpm,
    /// Song et al. 2021, eq. 12; η = 0 deterministic, η = 1 DDPM-like. `DDIMScheduler.step`.
    Ddim { eta: f64 },
    /// DPM-Solver++(2M) (Lu et al. 2022), deterministic; diffusers'
    /// `DPMSolverMultistepScheduler` defaults. See [`super::dpm_solver`].
    DpmSolver,
}

impl Sampler {
    /// The spacing DPM-Solver uses: `DPMSolverMultistepScheduler`'s own default, linspace
    /// (whatever the DDPM config says; its spacing belongs to DDPM/DDIM).
    pub const DPM_SOLVER_SPACING: TimestepSpacing = TimestepSpacing::Linspace;
}

/// The descending timesteps a run of `sampler` with `steps` steps visits.
pub fn sampler_timesteps(
    cfg: &SchedulerConfig,
    sampler: Sampler,
    steps: usize,
) -> Result<Vec<usize>> {
    match sampler {
        Sampler::Ddpm | Sampler::Ddim { .. } => inference_timesteps(cfg, steps),
        Sampler::DpmSolver => {
            super::dpm_solver::dpm_solver_timesteps(cfg, Sampler::DPM_SOLVER_SPACING, steps)
        }
    }
}

/// The coefficients of step `index` of a run over `timesteps` (from [`sampler_timesteps`]).
pub fn run_step_coefficients(
    sched: &Schedule,
    cfg: &SchedulerConfig,
    sampler: Sampler,
    timesteps: &[usize],
    index: usize,
) -> StepCoefficients {
    match sampler {
        Sampler::DpmSolver => {
            super::dpm_solver::dpm_solver_coefficients(sched, cfg, timesteps, index)
        }
        _ => step_coefficients(
            sched,
            cfg,
            sampler,
            timesteps[index.min(timesteps.len().saturating_sub(1))],
            previous_timestep(cfg, sampler, timesteps, index),
        ),
    }
}

/// The timestep a step from `timesteps[index]` lands on, as diffusers computes it: DDPM takes
/// the next entry of its list; DDIM uses t − T / steps (integer division). `None` means "before
/// step 0" (ᾱ_prev = 1, or DDIM's `final_alpha_cumprod`).
pub fn previous_timestep(
    cfg: &SchedulerConfig,
    sampler: Sampler,
    timesteps: &[usize],
    index: usize,
) -> Option<usize> {
    match sampler {
        Sampler::Ddpm | Sampler::DpmSolver => timesteps.get(index + 1).copied(),
        Sampler::Ddim { .. } => {
            let t = *timesteps.get(index)?;
            let ratio = cfg.num_train_timesteps / timesteps.len().max(1);
            t.checked_sub(ratio)
        }
    }
}

/// The coefficients of one sampler step from timestep `t` to `prev_t` (see
/// [`StepCoefficients`]), reproducing diffusers' `DDPMScheduler.step` / `DDIMScheduler.step`
/// (without thresholding; `use_clipped_model_output = false`). For [`Sampler::DpmSolver`]
/// this is its first-order step from `t` to `prev_t`, which is DDIM η = 0 without clipping
/// (runs use [`run_step_coefficients`] for the multistep update). `t` must be below
/// `num_train_timesteps` (as [`inference_timesteps`] guarantees); larger values are clamped.
pub fn step_coefficients(
    sched: &Schedule,
    cfg: &SchedulerConfig,
    sampler: Sampler,
    t: usize,
    prev_t: Option<usize>,
) -> StepCoefficients {
    let last = sched.alphas_cumprod.len().saturating_sub(1);
    let acp = |s: usize| sched.alphas_cumprod[s.min(last)];
    let a_t = acp(t);
    let b_t = 1.0 - a_t;
    let (sa, sb) = (a_t.sqrt(), b_t.sqrt());
    // x̂_0 and ε̂ as linear combinations of (x_t, model output); diffusers' formulas.
    let (x0_from_xt, x0_from_model, eps_from_xt, eps_from_model) = match cfg.prediction_type {
        PredictionType::Epsilon => (1.0 / sa, -sb / sa, 0.0, 1.0),
        PredictionType::Sample => (0.0, 1.0, 1.0 / sb, -sa / sb),
        PredictionType::VPrediction => (sa, -sb, sb, sa),
    };
    let clip = if cfg.clip_sample && sampler != Sampler::DpmSolver {
        cfg.clip_sample_range
    } else {
        0.0
    };
    let (threshold_ratio, threshold_max) = if cfg.thresholding {
        (cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    } else {
        (0.0, 0.0)
    };
    let mut c = StepCoefficients {
        x0_from_xt,
        x0_from_model,
        eps_from_xt,
        eps_from_model,
        clip,
        threshold_ratio,
        threshold_max,
        ..Default::default()
    };
    match sampler {
        Sampler::Ddpm => {
            let a_prev = prev_t.map(acp).unwrap_or(1.0);
            let b_prev = 1.0 - a_prev;
            let cur_alpha = a_t / a_prev;
            let cur_beta = 1.0 - cur_alpha;
            // Posterior mean μ̃_t (eq. 7).
            c.prev_from_x0 = a_prev.sqrt() * cur_beta / b_t;
            c.prev_from_xt = cur_alpha.sqrt() * b_prev / b_t;
            // diffusers adds noise iff the timestep value is > 0.
            if t > 0 {
                let var = match cfg.variance_type {
                    VarianceType::FixedSmall => (b_prev / b_t * cur_beta).max(1e-20),
                    VarianceType::FixedLarge => cur_beta,
                };
                c.noise_scale = var.sqrt();
            }
        }
        Sampler::DpmSolver => {
            let a_prev = prev_t.map(acp).unwrap_or(1.0);
            c.prev_from_x0 = a_prev.sqrt();
            c.prev_from_eps = (1.0 - a_prev).sqrt();
        }
        Sampler::Ddim { eta } => {
            let a_prev = prev_t.map(acp).unwrap_or(sched.final_alpha_cumprod);
            let variance = (1.0 - a_prev) / b_t * (1.0 - a_t / a_prev);
            let sigma = eta * variance.sqrt();
            c.prev_from_x0 = a_prev.sqrt();
            // Mathematically ≥ 0 for η ≤ 1; the clamp only guards rounding.
            c.prev_from_eps = (1.0 - a_prev - sigma * sigma).max(0.0).sqrt();
            if eta > 0.0 {
                c.noise_scale = sigma;
            }
        }
    }
    c
}

/// diffusers' `DDIMScheduler.step(..., use_clipped_model_output=True)` applied to DDIM step
/// coefficients `c` at a timestep with ᾱ_t = `alpha_cumprod_t`: ε̂ is re-derived from the
/// clipped (or thresholded) x̂_0 by inverting x_t = √ᾱ_t·x̂_0 + √(1−ᾱ_t)·ε̂ (Ho et al. 2020,
/// eq. 4), ε̂ = (x_t − √ᾱ_t·x̂_0)/√(1−ᾱ_t), so the update of eq. 12 stays consistent with the
/// clipped x̂_0 (diffusers' default keeps the model's unclipped ε̂). That is still linear in
/// (x_t, clipped x̂_0): the ε̂ weight moves onto `prev_from_xt` and `prev_from_x0`. Without
/// clipping or thresholding the re-derived ε̂ equals the model's, and `c` is returned
/// unchanged (bit-identical steps).
pub fn with_clipped_model_output(c: StepCoefficients, alpha_cumprod_t: f64) -> StepCoefficients {
    if (c.clip <= 0.0 && c.threshold_ratio <= 0.0) || c.prev_from_eps == 0.0 {
        return c;
    }
    let (sa, sb) = (alpha_cumprod_t.sqrt(), (1.0 - alpha_cumprod_t).sqrt());
    StepCoefficients {
        eps_from_xt: 0.0,
        eps_from_model: 0.0,
        prev_from_xt: c.prev_from_xt + c.prev_from_eps / sb,
        prev_from_x0: c.prev_from_x0 - c.prev_from_eps * sa / sb,
        prev_from_eps: 0.0,
        ..c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-300)
    }

    #[test]
    fn alphas_cumprod_match_diffusers() {
        // diffusers 0.42.1 DDPMScheduler(...).alphas_cumprod (float32) at t = 0, 1, 10, 500, 998,
        // 999. Our f64 values agree to < 1e-6 relative (diffusers' own f32 rounding), except
        // the cosine schedule's last step, where f32 rounding of β = 0.999 gives 1.3e-5.
        let cases: [(BetaSchedule, f64, f64, [f64; 6], f64); 3] = [
            (
                BetaSchedule::Linear,
                0.0001,
                0.02,
                [
                    0.9998999834060669,
                    0.9997800588607788,
                    0.9978064894676208,
                    0.07779665291309357,
                    4.118194192415103e-05,
                    4.035830352222547e-05,
                ],
                1e-6,
            ),
            (
                BetaSchedule::ScaledLinear,
                0.00085,
                0.012,
                [
                    0.9991499781608582,
                    0.9982960224151611,
                    0.9904313087463379,
                    0.27633246779441833,
                    0.004716695751994848,
                    0.00466009508818388,
                ],
                1e-6,
            ),
            (
                BetaSchedule::SquaredcosCapV2,
                0.0001,
                0.02,
                [
                    0.9999586939811707,
                    0.9999125599861145,
                    0.9992788434028625,
                    0.4922850430011749,
                    2.428766265438753e-06,
                    2.4287349909002387e-09,
                ],
                2e-5,
            ),
        ];
        for (bs, b0, b1, want, last_tol) in cases {
            let cfg = SchedulerConfig {
                beta_schedule: bs,
                beta_start: b0,
                beta_end: b1,
                ..Default::default()
            };
            let s = Schedule::new(&cfg).unwrap();
            assert_eq!(s.alphas_cumprod.len(), 1000);
            for (k, t) in [0, 1, 10, 500, 998, 999].into_iter().enumerate() {
                let tol = if t == 999 { last_tol } else { 1e-6 };
                let r = rel(s.alphas_cumprod[t], want[k]);
                assert!(
                    r < tol,
                    "{bs:?} t={t}: {} vs {} (rel {r:e})",
                    s.alphas_cumprod[t],
                    want[k]
                );
            }
        }
        let cos = Schedule::new(&SchedulerConfig {
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cos.betas[999], 0.999); // capped
        let lin = Schedule::new(&SchedulerConfig::default()).unwrap();
        assert_eq!((lin.betas[0], lin.betas[999]), (0.0001, 0.02));
        assert_eq!(lin.final_alpha_cumprod, 1.0);
        let (a, b) = lin.add_noise_coefficients(500);
        assert!((a * a + b * b - 1.0).abs() < 1e-12);
    }

    #[test]
    fn timesteps_match_diffusers() {
        let ts = |spacing, offset, n| {
            let cfg = SchedulerConfig {
                timestep_spacing: spacing,
                steps_offset: offset,
                ..Default::default()
            };
            inference_timesteps(&cfg, n).unwrap()
        };
        use TimestepSpacing::*;
        // diffusers 0.42.1 DDIMScheduler(...).set_timesteps(n).timesteps
        assert_eq!(ts(Leading, 0, 1), [0]);
        assert_eq!(ts(Leading, 0, 7), [852, 710, 568, 426, 284, 142, 0]);
        assert_eq!(
            ts(Leading, 0, 10),
            [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(ts(Leading, 1, 7), [853, 711, 569, 427, 285, 143, 1]);
        assert_eq!(ts(Leading, 0, 3), [666, 333, 0]);
        assert_eq!(ts(Trailing, 0, 1), [999]);
        assert_eq!(ts(Trailing, 0, 7), [999, 856, 713, 570, 428, 285, 142]);
        assert_eq!(ts(Trailing, 1, 7), [999, 856, 713, 570, 428, 285, 142]);
        assert_eq!(
            ts(Trailing, 0, 10),
            [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
        assert_eq!(ts(Trailing, 0, 3), [999, 666, 332]);
        assert_eq!(ts(Linspace, 0, 1), [0]);
        // 166.5 → 166 and 832.5 → 832: numpy rounds half to even.
        assert_eq!(ts(Linspace, 0, 7), [999, 832, 666, 500, 333, 166, 0]);
        assert_eq!(ts(Linspace, 1, 7), [999, 832, 666, 500, 333, 166, 0]);
        assert_eq!(ts(Linspace, 0, 3), [999, 500, 0]);
        assert_eq!(
            ts(Linspace, 0, 10),
            [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
        let l50 = ts(Linspace, 0, 50);
        assert_eq!(&l50[..8], &[999, 979, 958, 938, 917, 897, 877, 856]);
        assert_eq!(&l50[43..], &[122, 102, 82, 61, 41, 20, 0]);
        let t50 = ts(Trailing, 0, 50);
        assert_eq!((t50[0], t50[1], t50[49], t50.len()), (999, 979, 19, 50));
        for spacing in [Leading, Trailing, Linspace] {
            let full = ts(spacing, 0, 1000);
            assert_eq!(full, (0..1000).rev().collect::<Vec<_>>(), "{spacing:?}");
        }
        let cfg = SchedulerConfig::default();
        assert!(inference_timesteps(&cfg, 1001).is_err());
        assert!(inference_timesteps(&cfg, 0).is_err());
        // Leading with an offset can run past T − 1 (diffusers would index out of bounds).
        let off = SchedulerConfig {
            steps_offset: 1,
            ..Default::default()
        };
        assert!(inference_timesteps(&off, 1000).is_err());
    }

    #[test]
    fn previous_timesteps() {
        let cfg = SchedulerConfig::default();
        let ts = [999, 856, 713, 570, 428, 285, 142];
        assert_eq!(previous_timestep(&cfg, Sampler::Ddpm, &ts, 0), Some(856));
        assert_eq!(previous_timestep(&cfg, Sampler::Ddpm, &ts, 6), None);
        // DDIM: t − 1000 / 7 = t − 142, even for trailing spacing.
        let ddim = Sampler::Ddim { eta: 0.0 };
        assert_eq!(previous_timestep(&cfg, ddim, &ts, 0), Some(857));
        assert_eq!(previous_timestep(&cfg, ddim, &ts, 6), Some(0));
        assert_eq!(previous_timestep(&cfg, ddim, &[900, 100], 1), None);
    }

    /// Applies the coefficients exactly as the GPU kernel does (src/diffusion/mod.rs).
    fn apply(c: &StepCoefficients, x: &[f64], m: &[f64], z: &[f64]) -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let mut x0 = c.x0_from_xt * x[i] + c.x0_from_model * m[i];
                if c.clip > 0.0 {
                    x0 = x0.clamp(-c.clip, c.clip);
                }
                let eps = c.eps_from_xt * x[i] + c.eps_from_model * m[i];
                c.prev_from_x0 * x0
                    + c.prev_from_xt * x[i]
                    + c.prev_from_eps * eps
                    + c.noise_scale * z[i]
            })
            .collect()
    }

    const X: [f64; 6] = [
        0.30000001192092896,
        -1.2000000476837158,
        2.5,
        0.05000000074505806,
        -0.699999988079071,
        1.899999976158142,
    ];
    const M: [f64; 6] = [
        -0.4000000059604645,
        0.800000011920929,
        1.5,
        -2.200000047683716,
        0.10000000149011612,
        0.6000000238418579,
    ];

    /// One step against diffusers' float32 `step()` output: |Δ| ≤ 2e-6 (f32 arithmetic in
    /// torch; values are O(1)).
    fn check(
        cfg: &SchedulerConfig,
        sampler: Sampler,
        t: usize,
        prev: Option<usize>,
        z: &[f64],
        want: &[f64],
    ) {
        check_tol(cfg, sampler, t, prev, z, want, 2e-6)
    }

    fn check_tol(
        cfg: &SchedulerConfig,
        sampler: Sampler,
        t: usize,
        prev: Option<usize>,
        z: &[f64],
        want: &[f64],
        atol: f64,
    ) {
        let s = Schedule::new(cfg).unwrap();
        let c = step_coefficients(&s, cfg, sampler, t, prev);
        let got = apply(&c, &X, &M, z);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= atol,
                "{sampler:?} t={t} [{i}]: {g} vs {w}\n{c:?}"
            );
        }
    }

    #[test]
    fn ddpm_steps_match_diffusers() {
        // DDPMScheduler() with 50 steps: t = 780 → 760, ε-prediction, fixed_small, clipped x̂_0.
        let cfg = SchedulerConfig::default();
        let ts = inference_timesteps(&cfg, 50).unwrap();
        assert_eq!(
            (ts[10], previous_timestep(&cfg, Sampler::Ddpm, &ts, 10)),
            (780, Some(760))
        );
        check(
            &cfg,
            Sampler::Ddpm,
            780,
            Some(760),
            &[
                1.5409960746765137,
                -0.293428897857666,
                -2.1787893772125244,
                0.5684312582015991,
                -1.0845223665237427,
                -1.3985954523086548,
            ],
            &[
                1.0676233768463135,
                -1.1922041177749634,
                1.0256266593933105,
                0.35094720125198364,
                -1.1736655235290527,
                0.9159349799156189,
            ],
        );
        // scaled_linear, v-prediction, fixed_large, no clipping, trailing 10 steps: 699 → 599.
        let cfg = SchedulerConfig {
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.00085,
            beta_end: 0.012,
            variance_type: VarianceType::FixedLarge,
            clip_sample: false,
            prediction_type: PredictionType::VPrediction,
            timestep_spacing: TimestepSpacing::Trailing,
            ..Default::default()
        };
        check(
            &cfg,
            Sampler::Ddpm,
            699,
            Some(599),
            &[
                0.6613521575927734,
                0.266924113035202,
                0.06167725846171379,
                0.6213173270225525,
                -0.4519059658050537,
                -0.16613022983074188,
            ],
            &[
                0.7578198909759521,
                -0.8374937176704407,
                1.5289674997329712,
                0.9181796312332153,
                -0.8373005390167236,
                1.1237577199935913,
            ],
        );
        // Cosine, sample prediction, last step t = 0: no noise, x_prev = clip(x̂_0).
        let cfg = SchedulerConfig {
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            prediction_type: PredictionType::Sample,
            ..Default::default()
        };
        let c = step_coefficients(&Schedule::new(&cfg).unwrap(), &cfg, Sampler::Ddpm, 0, None);
        assert_eq!(c.noise_scale, 0.0);
        check(
            &cfg,
            Sampler::Ddpm,
            0,
            None,
            &[9.0; 6],
            &[
                -0.4000000059604645,
                0.800000011920929,
                1.0,
                -1.0,
                0.10000000149011612,
                0.6000000238418579,
            ],
        );
        // Cosine, ε-prediction, t = 1 → 0 (no set_timesteps: prev = t − 1). Here 1 − ᾱ_1 ≈ 9e-5
        // loses ~3 digits in float32, so the reference is diffusers' step() run in float64 (f64
        // ᾱ and tensors, same noise); diffusers' float32 run differs from it by up to 2.3e-4.
        let cfg = SchedulerConfig {
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            ..Default::default()
        };
        check_tol(
            &cfg,
            Sampler::Ddpm,
            1,
            Some(0),
            &[
                0.39229682087898254,
                -0.223564013838768,
                -0.31950026750564575,
                -1.2050371170043945,
                1.0444635152816772,
                -0.6332277059555054,
            ],
            &[
                0.3038121509428889,
                -1.0954873197506656,
                1.7068364830617941,
                0.055233171080811105,
                -0.695634165626674,
                1.4220408623235448,
            ],
            1e-12,
        );
    }

    #[test]
    fn ddim_steps_match_diffusers() {
        // set_alpha_to_one = false, 20 steps, last step t = 0 → −20: ᾱ_prev = ᾱ_0.
        let cfg = SchedulerConfig {
            set_alpha_to_one: false,
            clip_sample: false,
            ..Default::default()
        };
        let ts = inference_timesteps(&cfg, 20).unwrap();
        let ddim0 = Sampler::Ddim { eta: 0.0 };
        assert_eq!(previous_timestep(&cfg, ddim0, &ts, 19), None);
        check(
            &cfg,
            ddim0,
            0,
            None,
            &[0.0; 6],
            &[
                0.30000001192092896,
                -1.2000000476837158,
                2.5,
                0.05000000447034836,
                -0.699999988079071,
                1.899999976158142,
            ],
        );
        // v-prediction, η = 0.5, clip range 0.5, leading 25 steps with steps_offset 1: t = 761.
        let cfg = SchedulerConfig {
            prediction_type: PredictionType::VPrediction,
            clip_sample_range: 0.5,
            steps_offset: 1,
            ..Default::default()
        };
        let ts = inference_timesteps(&cfg, 25).unwrap();
        let ddim = Sampler::Ddim { eta: 0.5 };
        assert_eq!(ts[5], 761);
        let prev = previous_timestep(&cfg, ddim, &ts, 5);
        assert_eq!(prev, Some(721));
        check(
            &cfg,
            ddim,
            761,
            prev,
            &[
                0.8032760620117188,
                0.17483338713645935,
                0.08897809684276581,
                -0.6137180328369141,
                0.04618244990706444,
                -1.3682591915130615,
            ],
            &[
                0.5605355501174927,
                -1.063027262687683,
                2.4138574600219727,
                -0.23241108655929565,
                -0.6459692120552063,
                1.317786693572998,
            ],
        );
        // Sample prediction, η = 1, linspace 7 steps: 999 → 999 − 142 = 857.
        let cfg = SchedulerConfig {
            prediction_type: PredictionType::Sample,
            timestep_spacing: TimestepSpacing::Linspace,
            ..Default::default()
        };
        let ts = inference_timesteps(&cfg, 7).unwrap();
        let ddim = Sampler::Ddim { eta: 1.0 };
        assert_eq!(previous_timestep(&cfg, ddim, &ts, 0), Some(857));
        check(
            &cfg,
            ddim,
            999,
            Some(857),
            &[
                -1.605276346206665,
                0.23248571157455444,
                2.239870071411133,
                0.8472937941551208,
                1.2006442546844482,
                -0.4015503227710724,
            ],
            &[
                -1.4778980016708374,
                -0.07420939207077026,
                2.8405728340148926,
                0.8098493814468384,
                0.975531816482544,
                0.12707838416099548,
            ],
        );
    }

    /// One DDIM step with `use_clipped_model_output` against diffusers 0.42.1 float32
    /// `DDIMScheduler.step(m, t, x, eta, use_clipped_model_output=True, variance_noise=z)`.
    #[test]
    fn ddim_clipped_model_output_matches_diffusers() {
        let cases = [
            // ε-prediction, clip ±1, η = 0, leading 50 steps: t = 780 → 760.
            (
                SchedulerConfig::default(),
                0.0,
                50,
                10,
                [0.0; 6],
                [
                    0.30757710337638855,
                    -1.207235336303711,
                    2.506741523742676,
                    0.05767205357551575,
                    -0.7074251174926758,
                    1.9069693088531494,
                ],
            ),
            // v-prediction, clip ±0.5, η = 0.5, 25 steps with steps_offset 1: t = 761 → 721.
            (
                SchedulerConfig {
                    prediction_type: PredictionType::VPrediction,
                    clip_sample_range: 0.5,
                    steps_offset: 1,
                    ..Default::default()
                },
                0.5,
                25,
                5,
                [
                    0.8032760620117188,
                    0.17483338713645935,
                    0.08897809684276581,
                    -0.6137180328369141,
                    0.04618244990706444,
                    -1.3682591915130615,
                ],
                [
                    0.5605355501174927,
                    -1.0810269117355347,
                    2.370835781097412,
                    -0.14796534180641174,
                    -0.6459692120552063,
                    1.317786693572998,
                ],
            ),
        ];
        for (cfg, eta, steps, index, z, want) in cases {
            let s = Schedule::new(&cfg).unwrap();
            let ts = inference_timesteps(&cfg, steps).unwrap();
            let ddim = Sampler::Ddim { eta };
            let plain = run_step_coefficients(&s, &cfg, ddim, &ts, index);
            let c = with_clipped_model_output(plain, s.alphas_cumprod[ts[index]]);
            let got = apply(&c, &X, &M, &z);
            let unclipped_eps = apply(&plain, &X, &M, &z);
            let mut differs = false;
            for i in 0..6 {
                assert!(
                    (got[i] - want[i]).abs() <= 2e-6,
                    "t={} [{i}]: {} vs {}",
                    ts[index],
                    got[i],
                    want[i]
                );
                differs |= (unclipped_eps[i] - want[i]).abs() > 1e-2;
            }
            // The data clip, so diffusers' default step (unclipped ε̂) is far from this one.
            assert!(differs, "{unclipped_eps:?}");
        }
    }

    /// The re-derived step equals the diffusers formula computed by hand in f64, and without
    /// clipping it is exactly the plain DDIM step.
    #[test]
    fn clipped_model_output_is_the_formula() {
        let cfg = SchedulerConfig::default();
        let s = Schedule::new(&cfg).unwrap();
        let (t, prev, eta) = (600, 560, 0.3);
        let z = [0.5, -1.0, 0.25, 2.0, -0.75, 0.1];
        let c = with_clipped_model_output(
            step_coefficients(&s, &cfg, Sampler::Ddim { eta }, t, Some(prev)),
            s.alphas_cumprod[t],
        );
        let (a_t, a_prev) = (s.alphas_cumprod[t], s.alphas_cumprod[prev]);
        let sigma = eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)).sqrt();
        let mut clipped = 0;
        for (i, g) in apply(&c, &X, &M, &z).iter().enumerate() {
            let x0 = (X[i] - (1.0 - a_t).sqrt() * M[i]) / a_t.sqrt();
            clipped += usize::from(x0.abs() > 1.0);
            let x0 = x0.clamp(-1.0, 1.0);
            let eps = (X[i] - a_t.sqrt() * x0) / (1.0 - a_t).sqrt();
            let want =
                a_prev.sqrt() * x0 + (1.0 - a_prev - sigma * sigma).sqrt() * eps + sigma * z[i];
            assert!((g - want).abs() <= 1e-12, "[{i}]: {g} vs {want}");
        }
        assert!(clipped >= 2, "the data should exercise clipping");
        // Clip off: the same coefficients, hence bit-identical steps (also for thresholding
        // off and DDPM-style coefficients without an ε̂ term).
        let off = SchedulerConfig {
            clip_sample: false,
            ..Default::default()
        };
        for eta in [0.0, 0.3, 1.0] {
            let plain = step_coefficients(&s, &off, Sampler::Ddim { eta }, t, Some(prev));
            assert_eq!(with_clipped_model_output(plain, a_t), plain);
        }
        let ddpm = step_coefficients(&s, &cfg, Sampler::Ddpm, t, Some(prev));
        assert_eq!(with_clipped_model_output(ddpm, a_t), ddpm);
    }

    #[test]
    fn config_json() {
        // google/ddpm-cifar10-32-style config with early-diffusers keys.
        let c = SchedulerConfig::from_json(
            r#"{"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02,
                "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": true,
                "num_train_timesteps": 1000, "trained_betas": null, "variance_type": "fixed_small",
                "tensor_format": "pt", "timestep_values": null}"#,
        )
        .unwrap();
        assert_eq!(c, SchedulerConfig::default());
        let ddim = SchedulerConfig::from_json(
            r#"{"_class_name": "DDIMScheduler", "set_alpha_to_one": false, "steps_offset": 1,
                "prediction_type": "v_prediction", "timestep_spacing": "trailing",
                "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
                "rescale_betas_zero_snr": false, "clip_sample_range": 1.5,
                "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#,
        )
        .unwrap();
        assert!(!ddim.set_alpha_to_one);
        assert_eq!(ddim.steps_offset, 1);
        assert_eq!(ddim.prediction_type, PredictionType::VPrediction);
        assert_eq!(ddim.timestep_spacing, TimestepSpacing::Trailing);
        assert_eq!(ddim.beta_schedule, BetaSchedule::ScaledLinear);
        assert_eq!(SchedulerConfig::from_json(&ddim.to_json()).unwrap(), ddim);
        let err = |t: &str| match SchedulerConfig::from_json(t) {
            Err(Error::Config(m)) => m,
            other => panic!("{other:?}"),
        };
        for (text, key) in [
            (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas"),
            (
                r#"{"thresholding": true, "dynamic_thresholding_ratio": 1.5}"#,
                "dynamic_thresholding_ratio",
            ),
            (r#"{"variance_type": "learned_range"}"#, "variance_type"),
            (r#"{"beta_schedule": "sigmoid"}"#, "beta_schedule"),
            (r#"{"prediction_type": "x0"}"#, "prediction_type"),
            (r#"{"timestep_spacing": "karras"}"#, "timestep_spacing"),
            (
                r#"{"rescale_betas_zero_snr": true}"#,
                "rescale_betas_zero_snr",
            ),
            (r#"{"skip_prk_steps": true}"#, "skip_prk_steps"),
            (r#"{"num_train_timesteps": 0}"#, "num_train_timesteps"),
        ] {
            let m = err(text);
            assert!(m.contains(key), "{text}: {m}");
        }
    }
}
