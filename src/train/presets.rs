//! Built-in model presets, written as diffusers `config.json` text so that what we train is
//! exactly what diffusers' `UNet2DModel.from_pretrained` builds.

use crate::diffusion::schedule::SchedulerConfig;
use crate::error::{Error, Result};
use crate::model::config::UNetConfig;

/// One preset: a class-conditional UNet2DModel for 28x28 MNIST digits (10 classes + the
/// null class for classifier-free guidance, index 10), three levels (28 → 14 → 7) with
/// self-attention at 7x7 only, where it is cheap. The presets differ in width, depth and
/// dropout; [`Preset::config_json`] writes the diffusers `config.json` text.
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    /// `block_out_channels`.
    pub blocks: [usize; 3],
    pub layers_per_block: usize,
    /// `attention_head_dim`: channels per head of the 7x7 attention (heads = its width / this).
    pub attention_head_dim: usize,
    pub dropout: f64,
}

impl Preset {
    /// The diffusers `config.json` of this preset, so that what we train is exactly what
    /// diffusers' `UNet2DModel.from_pretrained` builds.
    pub fn config_json(&self) -> String {
        let [b0, b1, b2] = self.blocks;
        format!(
            r#"{{
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
  "block_out_channels": [{b0}, {b1}, {b2}],
  "layers_per_block": {layers},
  "mid_block_scale_factor": 1,
  "downsample_padding": 1,
  "downsample_type": "conv",
  "upsample_type": "conv",
  "dropout": {dropout:?},
  "act_fn": "silu",
  "attention_head_dim": {head},
  "norm_num_groups": 8,
  "norm_eps": 1e-05,
  "resnet_time_scale_shift": "default",
  "add_attention": true,
  "num_class_embeds": 11
}}"#,
            layers = self.layers_per_block,
            dropout = self.dropout,
            head = self.attention_head_dim,
        )
    }
}

/// The named presets; the first is the default.
pub const PRESETS: &[Preset] = &[
    // The default model: 0.28 M parameters, 96 MFLOP per image forward. Sized so that the
    // default run (3500 steps × 64 images ≈ 65 TFLOP) fits in about two hours of a 2-core
    // CPU through llvmpipe and minutes on a laptop GPU; see docs/training.md.
    Preset {
        name: "mnist",
        description: "class-conditional 28x28 grayscale digits, blocks [16, 32, 32], \
                      attention at 7x7",
        blocks: [16, 32, 32],
        layers_per_block: 1,
        attention_head_dim: 32,
        dropout: 0.0,
    },
    // 1.5× the default's width (0.63 M parameters, 2.2× its FLOPs): the model that follows
    // its label better at guidance 1 (docs/training.md, "Session 9: capacity moves W = 1"
    // and "Session 10"), ~3 s per step of 64 on llvmpipe.
    Preset {
        name: "mnist-wide",
        description: "blocks [24, 48, 48], attention at 7x7: better class accuracy at \
                      guidance 1 than mnist, 2.2x its cost per image",
        blocks: [24, 48, 48],
        layers_per_block: 1,
        attention_head_dim: 48,
        dropout: 0.0,
    },
    // The GPU-retrain candidate (docs/training.md, "Retraining the default model on a GPU"):
    // twice the default's width and two ResNets per level, and dropout 0.1 as in the DDPM
    // paper's CIFAR-10 model, since a GPU budget runs ~100 epochs over the 8,000 training
    // digits. Too slow for llvmpipe (about 8× the default's FLOPs per image).
    Preset {
        name: "mnist-large",
        description: "the GPU retrain candidate: blocks [32, 64, 64], 2 ResNets per level, \
                      attention at 7x7, dropout 0.1",
        blocks: [32, 64, 64],
        layers_per_block: 2,
        attention_head_dim: 32,
        dropout: 0.1,
    },
];

pub fn preset(name: &str) -> Result<UNetConfig> {
    match PRESETS.iter().find(|p| p.name == name) {
        Some(p) => UNetConfig::from_json(&p.config_json()),
        None => Err(Error::config(format!(
            "unknown preset {name:?}; available: {}",
            PRESETS
                .iter()
                .map(|p| p.name)
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
        for p in PRESETS {
            let cfg = preset(p.name).unwrap();
            assert!(cfg.parameter_count() > 0);
            assert_eq!(cfg.block_out_channels, p.blocks.to_vec(), "{}", p.name);
        }
        assert!(preset("nope").is_err());
        for s in ["linear", "squaredcos_cap_v2"] {
            scheduler(s, 1000, "epsilon").unwrap();
        }
        scheduler("linear", 1000, "v_prediction").unwrap();
    }

    /// The default preset is the shipped model's architecture (its config.json, which
    /// training wrote from this preset), and the presets have the sizes the docs state.
    #[test]
    fn presets_match_the_shipped_model_and_the_documented_sizes() {
        let shipped = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/models/mnist/config.json"
        ))
        .unwrap();
        assert_eq!(
            preset("mnist").unwrap(),
            UNetConfig::from_json(&shipped).unwrap()
        );
        let params = |name: &str| preset(name).unwrap().parameter_count();
        assert_eq!(params("mnist"), 280_881);
        assert_eq!(params("mnist-wide"), 628_489);
        let large = preset("mnist-large").unwrap();
        assert_eq!((large.layers_per_block, large.dropout), (2, 0.1));
    }
}
