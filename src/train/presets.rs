//! Built-in model presets, written as diffusers `config.json` text so that what we train is
//! exactly what diffusers' `UNet2DModel.from_pretrained` builds.

use crate::diffusion::schedule::SchedulerConfig;
use crate::error::{Error, Result};
use crate::model::config::UNetConfig;

/// The default model: a class-conditional UNet2DModel for 28x28 MNIST digits
/// (10 classes + the null class for classifier-free guidance, index 10). Three levels
/// (28 → 14 → 7), self-attention at 7x7 only, where it is cheap; 0.28 M parameters,
/// 96 MFLOP per image forward. Sized so that the default run (3500 steps × 64 images ≈
/// 65 TFLOP) fits in about two hours of a 2-core CPU through llvmpipe (~31–35 images/s) and
/// minutes on a laptop GPU; see docs/training.md.
pub const MNIST_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel",
  "sample_size": 28,
  "in_channels": 1,
  "out_channels": 1,
  "center_input_sample": false,
  "time_embedding_type": "positional",
  "freq_shift": 0,
  "flip_sin_to_cos": true,
  "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
  "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
  "block_out_channels": [16, 32, 32],
  "layers_per_block": 1,
  "mid_block_scale_factor": 1,
  "downsample_padding": 1,
  "downsample_type": "conv",
  "upsample_type": "conv",
  "dropout": 0.0,
  "act_fn": "silu",
  "attention_head_dim": 32,
  "norm_num_groups": 8,
  "norm_eps": 1e-05,
  "resnet_time_scale_shift": "default",
  "add_attention": true,
  "num_class_embeds": 11
}"#;

/// The GPU-retrain candidate (docs/training.md, "Retraining the default model on a GPU"):
/// the same 28 → 14 → 7 layout as `mnist` with twice the width and two ResNets per level
/// ([32, 64, 64], attention at 7x7), and dropout 0.1 as in the DDPM paper's CIFAR-10 model,
/// since a GPU budget runs ~100 epochs over the 8,000 training digits. Too slow for
/// llvmpipe (about 8× the default's FLOPs per image).
pub const MNIST_LARGE_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel",
  "sample_size": 28,
  "in_channels": 1,
  "out_channels": 1,
  "center_input_sample": false,
  "time_embedding_type": "positional",
  "freq_shift": 0,
  "flip_sin_to_cos": true,
  "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
  "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
  "block_out_channels": [32, 64, 64],
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "downsample_padding": 1,
  "downsample_type": "conv",
  "upsample_type": "conv",
  "dropout": 0.1,
  "act_fn": "silu",
  "attention_head_dim": 32,
  "norm_num_groups": 8,
  "norm_eps": 1e-05,
  "resnet_time_scale_shift": "default",
  "add_attention": true,
  "num_class_embeds": 11
}"#;

/// Named presets: (name, config.json text, description).
pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "mnist",
        MNIST_CONFIG,
        "class-conditional 28x28 grayscale digits, blocks [16, 32, 32], attention at 7x7",
    ),
    (
        "mnist-large",
        MNIST_LARGE_CONFIG,
        "the GPU retrain candidate: blocks [32, 64, 64], 2 ResNets per level, attention at \
         7x7, dropout 0.1",
    ),
];

pub fn preset(name: &str) -> Result<UNetConfig> {
    match PRESETS.iter().find(|(n, ..)| *n == name) {
        Some((_, json, _)) => UNetConfig::from_json(json),
        None => Err(Error::config(format!(
            "unknown preset {name:?}; available: {}",
            PRESETS
                .iter()
                .map(|(n, ..)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The scheduler we train with: DDPM's linear β from 1e-4 to 0.02 over T steps (paper §4),
/// or the cosine schedule (Nichol & Dhariwal 2021), ε-prediction unless asked otherwise.
pub fn scheduler(
    beta_schedule: &str,
    num_train_timesteps: usize,
    prediction_type: &str,
) -> Result<SchedulerConfig> {
    let json = format!(
        r#"{{"_class_name": "DDPMScheduler", "num_train_timesteps": {num_train_timesteps},
            "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "{beta_schedule}",
            "variance_type": "fixed_small", "clip_sample": true, "clip_sample_range": 1.0,
            "prediction_type": "{prediction_type}", "timestep_spacing": "leading", "steps_offset": 0}}"#
    );
    SchedulerConfig::from_json(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_schedulers_build() {
        for (name, ..) in PRESETS {
            let cfg = preset(name).unwrap();
            assert!(cfg.parameter_count() > 0);
        }
        assert!(preset("nope").is_err());
        for s in ["linear", "squaredcos_cap_v2"] {
            scheduler(s, 1000, "epsilon").unwrap();
        }
        scheduler("linear", 1000, "v_prediction").unwrap();
    }
}
