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
                "thresholding" if v != &Value::Bool(false) => {
                    return Err(unsupported(k, v, "false"));
                }
                "rescale_betas_zero_snr" if v != &Value::Bool(false) => {
                    return Err(unsupported(k, v, "false"));
                }
                // Harmless: null/false forms of the above, thresholding parameters (unused
                // without thresholding) and keys of early (0.1-era) diffusers configs.
                "trained_betas"
                | "thresholding"
                | "rescale_betas_zero_snr"
                | "dynamic_thresholding_ratio"
                | "sample_max_value"
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
        m.insert("thresholding".into(), json!(false));
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
        Sampler::Ddpm => timesteps.get(index + 1).copied(),
        Sampler::Ddim { .. } => {
            let t = *timesteps.get(index)?;
            let ratio = cfg.num_train_timesteps / timesteps.len().max(1);
            t.checked_sub(ratio)
        }
    }
}

/// The coefficients of one sampler step from timestep `t` to `prev_t` (see
/// [`StepCoefficients`]), reproducing diffusers' `DDPMScheduler.step` / `DDIMScheduler.step`
/// (without thresholding; `use_clipped_model_output = false`). `t` must be below
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
    let clip = if cfg.clip_sample {
        cfg.clip_sample_range
    } else {
        0.0
    };
    let mut c = StepCoefficients {
        x0_from_xt,
        x0_from_model,
        eps_from_xt,
        eps_from_model,
        clip,
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
