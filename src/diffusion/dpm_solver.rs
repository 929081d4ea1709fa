//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2 with the midpoint
//! second-order update), reproducing diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"`, `solver_order = 2`, `solver_type = "midpoint"`,
//! `lower_order_final = true`, `final_sigmas_type = "zero"`, no Karras/Lu/exponential sigmas
//! and `lambda_min_clipped = -inf` (its defaults). Coefficients are f64 on the CPU; each step
//! is the linear combination
//!
//! ```text
//! x_prev = (σ_t/σ_s)·x_s + α_t(1 − e^{−h})·(1 + 1/(2r))·x̂_0(s) − α_t(1 − e^{−h})/(2r)·x̂_0(s')
//! ```
//!
//! with α = √ᾱ, σ = √(1 − ᾱ), λ = log(α/σ), h = λ_t − λ_s, r = (λ_s − λ_s')/h, s' the
//! previous step's timestep (first order, r → ∞, on the first and the last step).

use super::schedule::{Schedule, SchedulerConfig, TimestepSpacing};
use super::StepCoefficients;
use crate::{Error, Result};

/// The descending timesteps of `DPMSolverMultistepScheduler.set_timesteps(steps)` with the
/// given spacing (its own default is linspace). Unlike DDIM's, none of them is 0 for
/// linspace/leading: the last step goes to σ = 0 (x_0) instead.
pub fn dpm_solver_timesteps(
    cfg: &SchedulerConfig,
    spacing: TimestepSpacing,
    steps: usize,
) -> Result<Vec<usize>> {
    let t_train = cfg.num_train_timesteps;
    if steps == 0 || steps > t_train {
        return Err(Error::config(format!(
            "{steps} inference steps: must be between 1 and num_train_timesteps = {t_train}"
        )));
    }
    // lambda_min_clipped = -inf clips nothing: the last timestep is T.
    let ts: Vec<i64> = match spacing {
        TimestepSpacing::Linspace => {
            // np.linspace(0, T - 1, steps + 1).round()[::-1][:-1]; numpy rounds half to even.
            let n = steps + 1;
            let step = (t_train - 1) as f64 / steps as f64;
            (1..n)
                .rev()
                .map(|i| {
                    let x = if i == n - 1 {
                        (t_train - 1) as f64
                    } else {
                        i as f64 * step
                    };
                    x.round_ties_even() as i64
                })
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = t_train / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + cfg.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            // np.arange(T, 0, -T/steps).round() - 1
            let ratio = t_train as f64 / steps as f64;
            let n = (t_train as f64 / ratio).ceil() as usize;
            (0..n)
                .map(|i| (t_train as f64 - i as f64 * ratio).round_ties_even() as i64 - 1)
                .collect()
        }
    };
    // Repeated timesteps (too many steps for the spacing) would give h = 0 below.
    let ok =
        ts.windows(2).all(|w| w[0] > w[1]) && ts.iter().all(|&t| t >= 0 && (t as usize) < t_train);
    if !ok {
        return Err(Error::config(format!(
            "DPM-Solver with {steps} steps and {} spacing (steps_offset {}) gives repeated or \
             out-of-range timesteps; use fewer steps",
            spacing.name(),
            cfg.steps_offset
        )));
    }
    Ok(ts.into_iter().map(|t| t as usize).collect())
}

/// diffusers' `sigmas` after `set_timesteps`: √((1 − ᾱ_t)/ᾱ_t) at each timestep, then 0
/// (`final_sigmas_type = "zero"`). Here in f64; diffusers rounds them to f32.
pub fn dpm_solver_sigmas(sched: &Schedule, timesteps: &[usize]) -> Vec<f64> {
    let last = sched.alphas_cumprod.len() - 1;
    let mut s: Vec<f64> = timesteps
        .iter()
        .map(|&t| {
            let a = sched.alphas_cumprod[t.min(last)];
            ((1.0 - a) / a).sqrt()
        })
        .collect();
    s.push(0.0);
    s
}

/// (α, σ, λ) of a DPM sigma: α = 1/√(σ² + 1), σ_t = σ·α, λ = log α − log σ_t.
fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let sigma_t = sigma * alpha;
    (alpha, sigma_t, alpha.ln() - sigma_t.ln())
}

/// Whether step `index` of `steps` uses the second-order update: not the first step (no
/// previous x̂_0 yet) and not the last one (final_sigmas_type zero forces first order);
/// `lower_order_final` also makes the second-to-last step second order, as it is anyway.
pub fn dpm_solver_is_second_order(index: usize, steps: usize) -> bool {
    index >= 1 && index + 1 < steps
}

/// The coefficients of DPM-Solver++(2M) step `index` (from `timesteps[index]`) for a run over
/// `timesteps` (from [`dpm_solver_timesteps`]). x̂_0 is the data prediction of the model
/// output (diffusers' `convert_model_output`, never clipped: `clip_sample` is a DDPM/DDIM
/// setting); `prev_from_prev_x0` multiplies the previous step's x̂_0.
pub fn dpm_solver_coefficients(
    sched: &Schedule,
    cfg: &SchedulerConfig,
    timesteps: &[usize],
    index: usize,
) -> StepCoefficients {
    let sigmas = dpm_solver_sigmas(sched, timesteps);
    let index = index.min(timesteps.len().saturating_sub(1));
    let mut c = super::schedule::step_coefficients(
        sched,
        &SchedulerConfig {
            clip_sample: false,
            ..cfg.clone()
        },
        super::schedule::Sampler::Ddim { eta: 0.0 },
        timesteps[index],
        None,
    );
    // Keep only the x̂_0 part of the DDIM coefficients (identical conversion formulas).
    c.eps_from_xt = 0.0;
    c.eps_from_model = 0.0;
    c.prev_from_eps = 0.0;
    c.noise_scale = 0.0;
    let sigma_next = sigmas[index + 1];
    let (_, sigma_s, lambda_s) = alpha_sigma_lambda(sigmas[index]);
    if sigma_next == 0.0 {
        // α_t = 1, σ_t = 0, h = ∞: the step returns x̂_0 itself.
        c.prev_from_xt = 0.0;
        c.prev_from_x0 = 1.0;
        c.prev_from_prev_x0 = 0.0;
        return c;
    }
    let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(sigma_next);
    let h = lambda_t - lambda_s;
    // α_t(1 − e^{−h}), written with expm1 for accuracy at small h.
    let b = -alpha_t * (-h).exp_m1();
    c.prev_from_xt = sigma_t / sigma_s;
    if dpm_solver_is_second_order(index, timesteps.len()) {
        let (_, _, lambda_s1) = alpha_sigma_lambda(sigmas[index - 1]);
        let r0 = (lambda_s - lambda_s1) / h;
        // D0 = x̂_0(s), D1 = (x̂_0(s) − x̂_0(s'))/r0; x = ... + b·D0 + b/2·D1.
        c.prev_from_x0 = b * (1.0 + 0.5 / r0);
        c.prev_from_prev_x0 = -b * 0.5 / r0;
    } else {
        c.prev_from_x0 = b;
        c.prev_from_prev_x0 = 0.0;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::{BetaSchedule, PredictionType};

    #[test]
    fn timesteps_spacings() {
        let cfg = SchedulerConfig::default();
        use TimestepSpacing::*;
        let lin = dpm_solver_timesteps(&cfg, Linspace, 20).unwrap();
        assert_eq!(lin.len(), 20);
        assert_eq!(&lin[..3], &[999, 949, 899]);
        assert_eq!(*lin.last().unwrap(), 50);
        let lead = dpm_solver_timesteps(&cfg, Leading, 20).unwrap();
        assert_eq!(&lead[..2], &[940, 893]);
        assert_eq!(*lead.last().unwrap(), 47);
        let trail = dpm_solver_timesteps(&cfg, Trailing, 20).unwrap();
        assert_eq!((trail[0], trail[19]), (999, 49));
        assert!(dpm_solver_timesteps(&cfg, Leading, 1000).is_err());
        assert!(dpm_solver_timesteps(&cfg, Linspace, 0).is_err());
    }

    /// The update written in diffusers' own terms (D0, D1, exp(−h) − 1), independent of the
    /// coefficient algebra above.
    #[test]
    fn coefficients_match_the_update_formula() {
        let cfg = SchedulerConfig {
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            prediction_type: PredictionType::Epsilon,
            ..Default::default()
        };
        let sched = Schedule::new(&cfg).unwrap();
        let ts = dpm_solver_timesteps(&cfg, TimestepSpacing::Linspace, 10).unwrap();
        let sig = dpm_solver_sigmas(&sched, &ts);
        let (x, m0, m1) = (0.7f64, -0.3f64, 0.45f64);
        for k in 0..ts.len() {
            let c = dpm_solver_coefficients(&sched, &cfg, &ts, k);
            let got = c.prev_from_xt * x + c.prev_from_x0 * m0 + c.prev_from_prev_x0 * m1;
            let at = |s: f64| 1.0 / (s * s + 1.0).sqrt();
            let lam = |s: f64| at(s).ln() - (s * at(s)).ln();
            let want = if k == ts.len() - 1 {
                m0
            } else {
                let (st, ss) = (sig[k + 1], sig[k]);
                let h = lam(st) - lam(ss);
                let base = (st * at(st)) / (ss * at(ss)) * x - at(st) * ((-h).exp() - 1.0) * m0;
                if k == 0 {
                    base
                } else {
                    let r0 = (lam(ss) - lam(sig[k - 1])) / h;
                    let d1 = (m0 - m1) / r0;
                    base - 0.5 * at(st) * ((-h).exp() - 1.0) * d1
                }
            };
            assert!((got - want).abs() < 1e-12, "step {k}: {got} vs {want}");
            // x̂_0 from ε: (x − σ_t ε)/α_t.
            let a = sched.alphas_cumprod[ts[k]];
            assert!((c.x0_from_xt - 1.0 / a.sqrt()).abs() < 1e-9 / a.sqrt());
            assert_eq!(c.clip, 0.0);
        }
    }
}
