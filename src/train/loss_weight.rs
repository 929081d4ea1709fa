//! Per-sample loss weights over timesteps: min-SNR-γ (Hang et al. 2023, "Efficient Diffusion
//! Training via Min-SNR Weighting Strategy"). With SNR(t) = ᾱ_t / (1 − ᾱ_t), the loss of a
//! sample at t is weighted so that the effective x_0-space weight is min(SNR(t), γ):
//! - ε-prediction: ‖ε − ε̂‖² = SNR·‖x_0 − x̂_0‖², so w = min(SNR, γ) / SNR;
//! - v-prediction: ‖v − v̂‖² = (SNR + 1)·‖x_0 − x̂_0‖², so w = min(SNR, γ) / (SNR + 1);
//! - x_0-prediction: w = min(SNR, γ).
//!
//! Low-noise timesteps (large SNR), which dominate the plain ε loss's gradient conflicts
//! in the paper's analysis, are down-weighted; the paper uses γ = 5. diffusers'
//! `train_text_to_image.py --snr_gamma` computes the same weights.

use crate::diffusion::schedule::PredictionType;

/// The min-SNR-γ weight of a sample whose timestep has cumulative ᾱ = `alpha_bar`.
pub fn min_snr_weight(alpha_bar: f64, gamma: f64, prediction: PredictionType) -> f64 {
    let snr = alpha_bar / (1.0 - alpha_bar);
    match prediction {
        // min(SNR, γ)/SNR written so that SNR = 0 (ᾱ = 0, pure noise) gives 1, not 0/0.
        PredictionType::Epsilon => {
            if snr <= gamma {
                1.0
            } else {
                gamma / snr
            }
        }
        PredictionType::VPrediction => snr.min(gamma) / (snr + 1.0),
        PredictionType::Sample => snr.min(gamma),
    }
}

/// Whether `gamma` is a usable γ (finite and positive).
pub fn check_gamma(gamma: f64) -> crate::Result<()> {
    if gamma.is_finite() && gamma > 0.0 {
        Ok(())
    } else {
        Err(crate::Error::Other(format!(
            "--snr-gamma {gamma}: must be a positive number (the paper uses 5), or 0 for off"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_snr_weights_follow_the_paper() {
        let gamma = 5.0;
        // ᾱ = 0.9: SNR = 9 > γ → ε: 5/9; v: 5/10; x_0: 5.
        let ab = 0.9;
        assert!((min_snr_weight(ab, gamma, PredictionType::Epsilon) - 5.0 / 9.0).abs() < 1e-12);
        assert!((min_snr_weight(ab, gamma, PredictionType::VPrediction) - 0.5).abs() < 1e-12);
        assert!((min_snr_weight(ab, gamma, PredictionType::Sample) - 5.0).abs() < 1e-12);
        // ᾱ = 0.5: SNR = 1 < γ → ε: 1; v: 1/2; x_0: 1.
        let ab = 0.5;
        assert_eq!(min_snr_weight(ab, gamma, PredictionType::Epsilon), 1.0);
        assert!((min_snr_weight(ab, gamma, PredictionType::VPrediction) - 0.5).abs() < 1e-12);
        assert!((min_snr_weight(ab, gamma, PredictionType::Sample) - 1.0).abs() < 1e-12);
        // Pure noise (ᾱ = 0): ε keeps weight 1; v and x_0 weigh 0.
        assert_eq!(min_snr_weight(0.0, gamma, PredictionType::Epsilon), 1.0);
        assert_eq!(min_snr_weight(0.0, gamma, PredictionType::VPrediction), 0.0);
        // Never above 1 for ε and v; decreasing in ᾱ once SNR > γ.
        let mut last = 1.0;
        for i in 0..=1000 {
            let ab = i as f64 / 1000.0 * 0.9999;
            let w = min_snr_weight(ab, gamma, PredictionType::Epsilon);
            assert!(w <= 1.0 && w <= last + 1e-15, "{ab}: {w}");
            last = w;
            assert!(min_snr_weight(ab, gamma, PredictionType::VPrediction) <= 1.0);
        }
        assert!(check_gamma(5.0).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(check_gamma(bad).is_err());
        }
    }

    /// A whole training step with `--snr-gamma`: the GPU's loss equals the CPU's
    /// (1/B) Σ_n w(t_n) · mean_j (pred − target)²_nj of the step's own prediction and target,
    /// with w from [`min_snr_weight`] in f64 — for ε and v targets, timesteps spanning
    /// SNR above and below γ.
    #[test]
    fn trainer_step_loss_matches_cpu_weighted_loss() {
        use crate::diffusion::schedule::Schedule;
        use crate::gpu::block_on;
        use crate::gpu::test_util::{assert_close, ctx, random};
        use crate::model::config::UNetConfig;
        use crate::model::weights::Weights;
        use crate::ops::optim::AdamWConfig;
        use crate::train::presets::scheduler;
        use crate::train::schedule::{EmaConfig, LrConfig, LrSchedule};
        use crate::train::trainer::{TrainSettings, Trainer};

        let ctx = ctx();
        let cfg = UNetConfig::from_json(include_str!("../../tests/data/tiny_mnist8.json")).unwrap();
        let weights = Weights::random(&cfg, 3);
        let batch = 4;
        let timesteps = [0u32, 30, 300, 999];
        let x0 = random(batch * 64, 5);
        let labels = [1u32, 2, 10, 4];
        for (pred_name, gamma) in [("epsilon", 5.0), ("v_prediction", 2.0)] {
            let sched = scheduler("linear", 1000, pred_name).unwrap();
            let settings = TrainSettings {
                batch,
                seed: 0,
                lr: LrConfig {
                    base: 1e-3,
                    warmup_steps: 0,
                    schedule: LrSchedule::Constant,
                    total_steps: 10,
                },
                adamw: AdamWConfig {
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 0.0,
                },
                max_grad_norm: 1.0,
                ema: EmaConfig::default(),
                label_dropout: 0.0,
                external_noise: false,
            };
            let mut tr =
                Trainer::with_snr_gamma(&ctx, &cfg, &weights, &sched, settings, Some(gamma))
                    .unwrap();
            tr.step_with(&ctx, &x0, Some(&labels), &timesteps).unwrap();
            let loss = block_on(ctx.read(&tr.graph.loss)).unwrap()[0];
            let pred = block_on(ctx.read(&tr.graph.pred)).unwrap();
            let target = block_on(ctx.read(&tr.graph.target)).unwrap();
            let ab = Schedule::new(&sched).unwrap().alphas_cumprod;
            let inner = pred.len() / batch;
            let want: f64 = (0..batch)
                .map(|n| {
                    let w = min_snr_weight(ab[timesteps[n] as usize], gamma, sched.prediction_type);
                    let se: f64 = (0..inner)
                        .map(|j| {
                            (pred[n * inner + j] as f64 - target[n * inner + j] as f64).powi(2)
                        })
                        .sum();
                    w * se / inner as f64
                })
                .sum::<f64>()
                / batch as f64;
            assert_close(&[loss], &[want], 0.0, 1e-5, pred_name);
            // The weights matter here: the unweighted loss differs by far more than that.
            let plain: f64 = pred
                .iter()
                .zip(&target)
                .map(|(&p, &t)| (p as f64 - t as f64).powi(2))
                .sum::<f64>()
                / pred.len() as f64;
            assert!(
                (plain - want).abs() > 1e-2 * plain,
                "{pred_name}: {plain} vs {want}"
            );
        }
    }
}
