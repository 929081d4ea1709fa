//! The fuzz targets' bodies, shared by the libFuzzer binaries (`fuzz/fuzz_targets/*.rs`)
//! and the corpus replay test (`tests/fuzz_corpus.rs`, included with `#[path]`). Each takes
//! arbitrary bytes and must come back — with the value or a clean error — without
//! panicking, hanging or allocating without bound.

use std::path::Path;

use kakusan::data::image::{convert_into, Planar};
use kakusan::diffusion::schedule::{inference_timesteps, Schedule};
use kakusan::model::config::UNetConfig;
use kakusan::model::files::{Model, ModelFiles};

/// Every target, by its folder name under `fuzz/corpus/`.
pub const TARGETS: &[&str] = &[
    "model_folder",
    "safetensors_inputs",
    "image",
    "idx",
    "cifar",
    "lab_points",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "model_folder" => model_folder(data),
        "safetensors_inputs" => safetensors_inputs(data),
        "image" => image(data),
        "idx" => idx(data),
        "cifar" => cifar(data),
        "lab_points" => lab_points(data),
        _ => panic!("unknown fuzz target {name}"),
    }
}

/// Splits `[u16 LE a][u16 LE b][a bytes][b bytes][rest]` into three parts; `b` = 0xFFFF
/// means "no second part". Shorter inputs are all rest.
pub fn split3(data: &[u8]) -> (&[u8], Option<&[u8]>, &[u8]) {
    if data.len() < 4 {
        return (&[], None, data);
    }
    let a = u16::from_le_bytes([data[0], data[1]]) as usize;
    let b = u16::from_le_bytes([data[2], data[3]]);
    let rest = &data[4..];
    let a = a.min(rest.len());
    let (first, rest) = rest.split_at(a);
    if b == u16::MAX {
        return (first, None, rest);
    }
    let b = (b as usize).min(rest.len());
    let (second, rest) = rest.split_at(b);
    (first, Some(second), rest)
}

/// The inverse of [`split3`] (for writing seeds).
pub fn join3(a: &[u8], b: Option<&[u8]>, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(a.len() as u16).to_le_bytes());
    v.extend_from_slice(&b.map_or(u16::MAX, |b| b.len() as u16).to_le_bytes());
    v.extend_from_slice(a);
    v.extend_from_slice(b.unwrap_or_default());
    v.extend_from_slice(rest);
    v
}

/// A whole model folder: config.json, scheduler_config.json (optional) and the weights
/// (safetensors), as `kakusan sample`/`predict` and the browser load them; then what the
/// CLI derives from a loaded model before touching the GPU (summary, inference timesteps).
pub fn model_folder(data: &[u8]) {
    let (config, scheduler, weights) = split3(data);
    let files = ModelFiles {
        config_json: String::from_utf8_lossy(config).into_owned(),
        scheduler_json: scheduler.map(|s| String::from_utf8_lossy(s).into_owned()),
        weights: weights.to_vec(),
    };
    // The config alone, as `kakusan info` reads it.
    if let Ok(cfg) = UNetConfig::from_json(&files.config_json) {
        let _ = kakusan::unet::summary(&cfg);
    }
    let Ok(model) = Model::from_files(&files) else {
        return;
    };
    let _ = kakusan::unet::summary(&model.config);
    if Schedule::new(&model.scheduler).is_ok() {
        let t = model.scheduler.num_train_timesteps;
        for steps in [1, 2, 50, t] {
            let _ = inference_timesteps(&model.scheduler, steps.min(t));
        }
    }
}

/// The safetensors files the CLI reads besides models: `predict --input`, `sample
/// --init-noise` and a dataset in safetensors form.
pub fn safetensors_inputs(data: &[u8]) {
    let path = Path::new("fuzz.safetensors");
    let _ = kakusan::cli::io::predict_input_from_bytes(path, data);
    let _ = kakusan::cli::io::init_noise_from_bytes(path, data);
    if let Ok(d) = kakusan::data::from_safetensors(data, "fuzz.safetensors") {
        if let Ok(c) = d.converted(1, [4, 4]) {
            let mut x = vec![0f32; c.image_len()];
            let _ = c.batch(&[0], &mut x);
            let _ = c.batch_labels(&[0]);
        }
    }
}

/// Convert a decoded image the way every dataset loader does (grey and RGB, odd sizes).
fn convert(img: &Planar) {
    let mut out = Vec::new();
    convert_into(img, 1, [8, 8], &mut out);
    convert_into(img, 3, [5, 7], &mut out);
}

/// One file of an image folder: PNG or JPEG, by content.
pub fn image(data: &[u8]) {
    if let Ok(img) = kakusan::data::decode_image(data) {
        convert(&img);
    }
}

/// An MNIST IDX images file and optional labels file (either possibly gzip'd):
/// `split3` layout, first part unused.
pub fn idx(data: &[u8]) {
    let (_, labels, images) = split3(data);
    let _ = kakusan::data::idx_from_bytes("fuzz-images-idx3-ubyte", images, labels, 1, [8, 8]);
}

/// A CIFAR-10 binary batch.
pub fn cifar(data: &[u8]) {
    let _ = kakusan::data::cifar_from_bytes("data_batch_fuzz.bin", data, 3, [8, 8]);
}

/// A point set for the diffusion lab (`kakusan lab train --points-file`): CSV text. Bytes
/// that are not UTF-8 are replaced (the CLI refuses them) so the parser sees every input.
pub fn lab_points(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(d) = kakusan::lab::data::parse_points_csv(&text, "fuzz.csv") {
        assert!(d.len() >= 2 && d.len() <= kakusan::lab::data::MAX_POINTS);
        assert!(d.points.iter().flatten().all(|v| v.is_finite()));
        let _ = d.draw(4, 0);
        let _ = d.flat();
    }
}
