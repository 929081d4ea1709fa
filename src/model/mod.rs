//! diffusers `UNet2DModel` checkpoints: configuration, weights and model directories.

pub mod config;
pub mod files;
pub mod weights;

pub use config::{DownBlockType, UNetConfig, UpBlockType};
#[cfg(not(target_arch = "wasm32"))]
pub use files::{read_config, read_model_dir};
pub use files::{Model, ModelFiles};
pub use weights::{expected_tensors, load_weights, save_weights, Weights};
