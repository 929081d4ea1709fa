//! Model directories as diffusers writes them, and the parsed [`Model`].
//!
//! Two layouts are read: a bare model folder (`config.json`,
//! `diffusion_pytorch_model.safetensors`, optionally `scheduler_config.json` beside them) and
//! a pipeline folder (`model_index.json`, `unet/`, `scheduler/`). Reading bytes is separate
//! from parsing so the browser can supply [`ModelFiles`] it fetched itself.

use crate::diffusion::schedule::SchedulerConfig;
use crate::model::config::UNetConfig;
use crate::model::weights::{load_weights, Weights};
use crate::Result;

/// The raw contents of a model directory.
#[derive(Clone, Debug, Default)]
pub struct ModelFiles {
    /// The UNet's `config.json`.
    pub config_json: String,
    /// `diffusion_pytorch_model.safetensors`.
    pub weights: Vec<u8>,
    /// `scheduler_config.json`, if present.
    pub scheduler_json: Option<String>,
}

/// A parsed, checked model: config, f32 weights and scheduler settings.
#[derive(Clone, Debug)]
pub struct Model {
    pub config: UNetConfig,
    pub weights: Weights,
    /// From `scheduler_config.json`, or `DDPMScheduler` defaults when there is none.
    pub scheduler: SchedulerConfig,
}

impl Model {
    pub fn from_files(files: &ModelFiles) -> Result<Model> {
        let config = UNetConfig::from_json(&files.config_json)?;
        let scheduler = match &files.scheduler_json {
            Some(text) => SchedulerConfig::from_json(text)?,
            None => SchedulerConfig::default(),
        };
        let weights = load_weights(&files.weights, &config)?;
        Ok(Model {
            config,
            weights,
            scheduler,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::ModelFiles;
    use crate::{Error, Result};
    use std::path::{Path, PathBuf};

    const WEIGHTS: &str = "diffusion_pytorch_model.safetensors";

    fn read_text(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| Error::file(path.display(), e))
    }

    /// The weights file in `dir`, or an error that says what is there instead.
    fn weights_path(dir: &Path) -> Result<PathBuf> {
        let p = dir.join(WEIGHTS);
        if p.is_file() {
            return Ok(p);
        }
        let fp16 = dir.join("diffusion_pytorch_model.fp16.safetensors");
        if fp16.is_file() {
            return Ok(fp16);
        }
        let why = if dir
            .join("diffusion_pytorch_model.safetensors.index.json")
            .is_file()
        {
            format!("no {WEIGHTS} (only a sharded checkpoint, which is not supported)")
        } else if dir.join("diffusion_pytorch_model.bin").is_file() {
            format!("no {WEIGHTS} (only .bin found: convert it to safetensors)")
        } else {
            format!("no {WEIGHTS}")
        };
        Err(Error::file(dir.display(), why))
    }

    /// Reads a diffusers model or pipeline directory (see the module docs).
    pub fn read_model_dir(path: &Path) -> Result<ModelFiles> {
        if !path.is_dir() {
            return Err(Error::file(
                path.display(),
                "not a directory (expected a diffusers model or pipeline folder)",
            ));
        }
        let (unet_dir, sched_path) =
            if path.join("model_index.json").is_file() || path.join("unet").is_dir() {
                let unet = path.join("unet");
                if !unet.is_dir() {
                    return Err(Error::file(
                        path.display(),
                        "pipeline folder (model_index.json) without a unet/ subfolder",
                    ));
                }
                (unet, path.join("scheduler").join("scheduler_config.json"))
            } else {
                (path.to_path_buf(), path.join("scheduler_config.json"))
            };
        let config_path = unet_dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::file(
                unet_dir.display(),
                "no config.json (expected a diffusers UNet2DModel folder: config.json + \
                 diffusion_pytorch_model.safetensors, or a pipeline folder with unet/)",
            ));
        }
        let config_json = read_text(&config_path)?;
        let wpath = weights_path(&unet_dir)?;
        let weights = std::fs::read(&wpath).map_err(|e| Error::file(wpath.display(), e))?;
        let scheduler_json = if sched_path.is_file() {
            Some(read_text(&sched_path)?)
        } else {
            None
        };
        Ok(ModelFiles {
            config_json,
            weights,
            scheduler_json,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::read_model_dir;
