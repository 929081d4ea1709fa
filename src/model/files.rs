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
    use crate::model::config::UNetConfig;
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
    /// Find the UNet folder and the scheduler config path of a flat or pipeline folder.
    fn locate(path: &Path) -> Result<(PathBuf, PathBuf)> {
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
        if !unet_dir.join("config.json").is_file() {
            return Err(Error::file(
                unet_dir.display(),
                "no config.json (expected a diffusers UNet2DModel folder: config.json + \
                 diffusion_pytorch_model.safetensors, or a pipeline folder with unet/)",
            ));
        }
        Ok((unet_dir, sched_path))
    }

    /// Only the UNet's config.json of a model folder (weights not needed), parsed.
    pub fn read_config(path: &Path) -> Result<UNetConfig> {
        let (unet_dir, _) = locate(path)?;
        let config_path = unet_dir.join("config.json");
        UNetConfig::from_json(&read_text(&config_path)?)
            .map_err(|e| Error::file(config_path.display(), e))
    }

    pub fn read_model_dir(path: &Path) -> Result<ModelFiles> {
        let (unet_dir, sched_path) = locate(path)?;
        let config_path = unet_dir.join("config.json");
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
pub use native::{read_config, read_model_dir};

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::model::config::{DownBlockType::*, UpBlockType::*};
    use crate::model::weights::{expected_tensors, save_weights};
    use crate::Error;
    use std::path::PathBuf;

    fn tiny() -> UNetConfig {
        UNetConfig {
            sample_size: [8, 8],
            in_channels: 1,
            out_channels: 1,
            block_out_channels: vec![8, 8],
            down_block_types: vec![DownBlock2D, AttnDownBlock2D],
            up_block_types: vec![AttnUpBlock2D, UpBlock2D],
            layers_per_block: 1,
            norm_num_groups: 4,
            attention_head_dim: None,
            ..UNetConfig::default()
        }
    }

    fn weights_bytes(cfg: &UNetConfig) -> Vec<u8> {
        let mut w = Weights::new();
        for (name, shape) in expected_tensors(cfg) {
            let n = shape.iter().product();
            w.insert(name, shape, vec![0.5; n]).unwrap();
        }
        save_weights(&w).unwrap()
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kakusan-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_flat_and_pipeline_layouts() {
        let cfg = tiny();
        let sched = crate::diffusion::schedule::SchedulerConfig {
            steps_offset: 1,
            ..Default::default()
        };
        // Flat layout.
        let flat = temp_dir("flat");
        std::fs::write(flat.join("config.json"), cfg.to_json()).unwrap();
        let err = read_model_dir(&flat).unwrap_err();
        assert!(matches!(err, Error::File { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("no diffusion_pytorch_model.safetensors"),
            "{err}"
        );
        std::fs::write(flat.join("diffusion_pytorch_model.bin"), b"x").unwrap();
        let err = read_model_dir(&flat).unwrap_err();
        assert!(err.to_string().contains("only .bin found"), "{err}");
        std::fs::write(
            flat.join("diffusion_pytorch_model.safetensors"),
            weights_bytes(&cfg),
        )
        .unwrap();
        let files = read_model_dir(&flat).unwrap();
        assert!(files.scheduler_json.is_none());
        let m = Model::from_files(&files).unwrap();
        assert_eq!(m.config, cfg);
        assert_eq!(m.scheduler, SchedulerConfig::default());
        assert_eq!(m.weights.len(), expected_tensors(&cfg).len());
        std::fs::write(flat.join("scheduler_config.json"), sched.to_json()).unwrap();
        let m = Model::from_files(&read_model_dir(&flat).unwrap()).unwrap();
        assert_eq!(m.scheduler, sched);

        // Pipeline layout.
        let pipe = temp_dir("pipe");
        std::fs::write(
            pipe.join("model_index.json"),
            r#"{"_class_name": "DDPMPipeline"}"#,
        )
        .unwrap();
        let err = read_model_dir(&pipe).unwrap_err();
        assert!(err.to_string().contains("unet/"), "{err}");
        std::fs::create_dir_all(pipe.join("unet")).unwrap();
        std::fs::create_dir_all(pipe.join("scheduler")).unwrap();
        let err = read_model_dir(&pipe).unwrap_err();
        assert!(err.to_string().contains("no config.json"), "{err}");
        std::fs::write(pipe.join("unet/config.json"), cfg.to_json()).unwrap();
        std::fs::write(
            pipe.join("unet/diffusion_pytorch_model.safetensors"),
            weights_bytes(&cfg),
        )
        .unwrap();
        std::fs::write(
            pipe.join("scheduler/scheduler_config.json"),
            sched.to_json(),
        )
        .unwrap();
        let m = Model::from_files(&read_model_dir(&pipe).unwrap()).unwrap();
        assert_eq!((m.config, m.scheduler), (cfg.clone(), sched));

        // Weights for another config: a weights error, not a panic.
        let mut other = cfg.clone();
        other.block_out_channels = vec![8, 16];
        std::fs::write(pipe.join("unet/config.json"), other.to_json()).unwrap();
        let err = Model::from_files(&read_model_dir(&pipe).unwrap()).unwrap_err();
        assert!(matches!(err, Error::Weights(_)), "{err:?}");

        assert!(matches!(
            read_model_dir(&pipe.join("nope")),
            Err(Error::File { .. })
        ));
        let _ = std::fs::remove_dir_all(&flat);
        let _ = std::fs::remove_dir_all(&pipe);
    }
}
