//! Per-step scalars of a training run, computed on the CPU in f64: the learning rate
//! (diffusers' `get_scheduler`) and the EMA decay (diffusers' `EMAModel.get_decay`).
//! Platform-neutral: no I/O, no GPU.

use crate::error::{Error, Result};

/// The EMA of the weights, as diffusers' `EMAModel` (`diffusers.training_utils`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmaConfig {
    /// The largest decay ever used (`decay`, the "max decay").
    pub decay: f64,
    /// The smallest decay used once updates have started (`min_decay`).
    pub min_decay: f64,
    /// Updates before this optimization step use decay 0 (the EMA copies the weights).
    pub update_after_step: u64,
    /// Warmup 1 − (1 + step/inv_gamma)^−power instead of (1 + step)/(10 + step).
    pub use_ema_warmup: bool,
    pub inv_gamma: f64,
    pub power: f64,
}

impl Default for EmaConfig {
    /// `EMAModel(parameters)` defaults.
    fn default() -> Self {
        EmaConfig {
            decay: 0.9999,
            min_decay: 0.0,
            update_after_step: 0,
            use_ema_warmup: false,
            inv_gamma: 1.0,
            power: 2.0 / 3.0,
        }
    }
}

impl EmaConfig {
    /// What diffusers' `examples/unconditional_image_generation/train_unconditional.py`
    /// builds with its default arguments: `EMAModel(decay=0.9999, use_ema_warmup=True,
    /// inv_gamma=1.0, power=3/4)`.
    pub fn train_unconditional() -> Self {
        EmaConfig {
            use_ema_warmup: true,
            power: 0.75,
            ..Self::default()
        }
    }
}

/// The EMA decay for the `optimization_step`-th EMA update (1-based: `EMAModel.step`
/// increments its counter and then calls `get_decay`, so the first update passes 1 and
/// gets decay 0, i.e. the EMA starts as a copy of the weights).
pub fn ema_decay(optimization_step: u64, cfg: &EmaConfig) -> f64 {
    let step = optimization_step.saturating_sub(cfg.update_after_step + 1);
    if step == 0 {
        return 0.0;
    }
    let step = step as f64;
    let d = if cfg.use_ema_warmup {
        1.0 - (1.0 + step / cfg.inv_gamma).powf(-cfg.power)
    } else {
        (1.0 + step) / (10.0 + step)
    };
    d.min(cfg.decay).max(cfg.min_decay)
}

/// The shape of the learning-rate schedule after the linear warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrSchedule {
    /// `get_scheduler("constant_with_warmup")` (or `"constant"` when warmup is 0).
    Constant,
    /// `get_scheduler("cosine")`: half a cosine from the base rate to 0 over
    /// `total_steps - warmup_steps` steps (num_cycles = 0.5).
    Cosine,
}

impl LrSchedule {
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant_with_warmup",
            LrSchedule::Cosine => "cosine",
        }
    }
    /// Parse diffusers' scheduler names (`constant`, `constant_with_warmup`, `cosine`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "constant" | "constant_with_warmup" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            other => Err(Error::config(format!(
                "lr_scheduler: {other:?} is not supported (use constant, constant_with_warmup or cosine)"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrConfig {
    /// The optimizer's learning rate (the schedule multiplies it).
    pub base: f64,
    pub warmup_steps: u64,
    pub schedule: LrSchedule,
    /// `num_training_steps` (used by the cosine schedule only).
    pub total_steps: u64,
}

/// The learning rate of the optimizer step that follows `step` completed steps (0-based,
/// like `LambdaLR`'s `last_epoch`: the first optimizer step uses `learning_rate(0)`, which
/// is 0 when there is a warmup — diffusers does the same).
pub fn learning_rate(step: u64, cfg: &LrConfig) -> f64 {
    let s = step as f64;
    let factor = if step < cfg.warmup_steps {
        s / (cfg.warmup_steps.max(1) as f64)
    } else {
        match cfg.schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let num_cycles = 0.5;
                let progress = (step - cfg.warmup_steps) as f64
                    / (cfg.total_steps.saturating_sub(cfg.warmup_steps).max(1) as f64);
                // Like diffusers, the cosine is not clamped past total_steps (it rises again).
                (0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos())).max(0.0)
            }
        }
    };
    cfg.base * factor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, what: &str) {
        // Same formulas in f64 as Python; only the last bits may differ.
        assert!(
            (got - want).abs() <= 1e-15 + 1e-12 * want.abs(),
            "{what}: got {got:e}, want {want:e}"
        );
    }

    const STEPS: [u64; 9] = [0, 1, 2, 3, 10, 100, 1000, 1_000_000, 100_000_000];

    /// Values printed by diffusers 0.42.1's `EMAModel(...).get_decay(step)`.
    #[test]
    fn ema_decay_matches_diffusers() {
        let cases: [(EmaConfig, [f64; 9]); 3] = [
            (
                EmaConfig::default(),
                [
                    0.0,
                    0.0,
                    0.18181818181818182,
                    0.25,
                    0.5263157894736842,
                    0.9174311926605505,
                    0.9910802775024777,
                    0.9999,
                    0.9999,
                ],
            ),
            (
                EmaConfig {
                    use_ema_warmup: true,
                    ..EmaConfig::default()
                },
                [
                    0.0,
                    0.0,
                    0.3700394750525634,
                    0.5192501432308638,
                    0.7845565309968117,
                    0.9535841116638722,
                    0.99,
                    0.9999,
                    0.9999,
                ],
            ),
            (
                EmaConfig {
                    decay: 0.999,
                    min_decay: 0.5,
                    update_after_step: 5,
                    use_ema_warmup: true,
                    inv_gamma: 1.0,
                    power: 0.75,
                },
                [
                    0.0,
                    0.0,
                    0.0,
                    0.0,
                    0.7009302437557559,
                    0.9671369932489248,
                    0.9943554062644323,
                    0.999,
                    0.999,
                ],
            ),
        ];
        for (ci, (cfg, want)) in cases.iter().enumerate() {
            for (&s, &w) in STEPS.iter().zip(want) {
                close(ema_decay(s, cfg), w, &format!("case {ci}, step {s}"));
            }
        }
    }

    /// `scheduler.get_last_lr()` before each `optimizer.step()` for diffusers 0.42.1's
    /// `get_scheduler(name, AdamW(lr=1e-4), ...)`.
    #[test]
    fn learning_rate_matches_diffusers() {
        let steps = [0u64, 1, 5, 9, 10, 11, 50, 99, 100, 110];
        let cases: [(LrConfig, [f64; 10]); 3] = [
            (
                LrConfig {
                    base: 1e-4,
                    warmup_steps: 10,
                    schedule: LrSchedule::Constant,
                    total_steps: 0,
                },
                [0.0, 1e-05, 5e-05, 9e-05, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4],
            ),
            (
                LrConfig {
                    base: 1e-4,
                    warmup_steps: 10,
                    schedule: LrSchedule::Cosine,
                    total_steps: 100,
                },
                [
                    0.0,
                    1e-05,
                    5e-05,
                    9e-05,
                    1e-4,
                    9.99695413509548e-05,
                    5.868240888334653e-05,
                    3.04586490452119e-08,
                    0.0,
                    3.0153689607045785e-06,
                ],
            ),
            (
                LrConfig {
                    base: 1e-4,
                    warmup_steps: 0,
                    schedule: LrSchedule::Cosine,
                    total_steps: 7,
                },
                [
                    1e-4,
                    9.504844339512095e-05,
                    1.8825509907063327e-05,
                    1.8825509907063317e-05,
                    3.8873953302184275e-05,
                    6.112604669781572e-05,
                    4.951556604879026e-06,
                    9.504844339512106e-05,
                    8.117449009293675e-05,
                    8.11744900929366e-05,
                ],
            ),
        ];
        for (ci, (cfg, want)) in cases.iter().enumerate() {
            for (&s, &w) in steps.iter().zip(want) {
                close(learning_rate(s, cfg), w, &format!("case {ci}, step {s}"));
            }
        }
    }

    #[test]
    fn schedule_names_parse() {
        assert_eq!(LrSchedule::parse("cosine").unwrap(), LrSchedule::Cosine);
        assert_eq!(
            LrSchedule::parse("constant_with_warmup").unwrap(),
            LrSchedule::Constant
        );
        assert!(matches!(LrSchedule::parse("linear"), Err(Error::Config(_))));
    }
}
