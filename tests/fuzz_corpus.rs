//! The fuzz targets' smoke test (no fuzzer build needed): every committed seed in
//! `fuzz/corpus/<target>/` and every crash regression in `fuzz/regressions/<target>/` goes
//! through the same entry function the libFuzzer binary calls (`fuzz/targets.rs`), and
//! none may panic. `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`
//! regenerates the seeds (see docs/reliability.md).
#![cfg(not(target_arch = "wasm32"))]

#[allow(dead_code)]
#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_corpus_file_and_crash_regression_runs_without_panic() {
    let mut failures = Vec::new();
    let mut count = 0;
    for target in targets::TARGETS {
        let seeds = files_in(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seeds");
        let regressions = files_in(&fuzz_dir().join("regressions").join(target));
        for f in seeds.iter().chain(&regressions) {
            let bytes = std::fs::read(f).unwrap();
            count += 1;
            if std::panic::catch_unwind(|| targets::run(target, &bytes)).is_err() {
                failures.push(format!("{target}: {}", f.display()));
            }
        }
    }
    eprintln!("{count} inputs replayed");
    assert!(failures.is_empty(), "panicked on: {failures:#?}");
}

#[test]
fn split3_round_trips() {
    let joined = targets::join3(b"abc", Some(b"de"), b"fghij");
    assert_eq!(
        targets::split3(&joined),
        (&b"abc"[..], Some(&b"de"[..]), &b"fghij"[..])
    );
    let joined = targets::join3(b"", None, b"xyz");
    assert_eq!(targets::split3(&joined), (&b""[..], None, &b"xyz"[..]));
    // Lengths past the end are clamped, never out of bounds.
    assert_eq!(
        targets::split3(&[9, 0, 9, 0, 1, 2]),
        (&[1u8, 2][..], Some(&[][..]), &[][..])
    );
}

/// Random (not coverage-guided) mutations of the seeds through every target, for when the
/// libFuzzer build is not available: `FUZZ_ITERS=100000 cargo test --release --test
/// fuzz_corpus -- --ignored mutate_seeds`. Panicking inputs are written to
/// `fuzz/artifacts/<target>/mutated-*` (an OOM or hang still stops the test: run it under
/// `timeout` and `ulimit -v`).
#[test]
#[ignore = "long; run by hand"]
fn mutate_seeds() {
    use rand::{Rng, SeedableRng};
    let iters: usize = std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let interesting: [&[u8]; 8] = [
        &[0],
        &[0xff],
        &[0x7f],
        &[0x80],
        &[0xff, 0xff, 0xff, 0xff],
        &[0, 0, 0, 0x80],
        &[0xff, 0xff, 0xff, 0x7f],
        &[0, 0, 0, 0, 0, 0, 0xf0, 0x7f],
    ];
    std::panic::set_hook(Box::new(|_| {}));
    let mut found = Vec::new();
    for target in targets::TARGETS {
        let seeds: Vec<Vec<u8>> = files_in(&fuzz_dir().join("corpus").join(target))
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .collect();
        let start = std::time::Instant::now();
        for i in 0..iters {
            let mut d = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(1..=8) {
                let len = d.len().max(1);
                match rng.random_range(0..6) {
                    0 if !d.is_empty() => {
                        let at = rng.random_range(0..d.len());
                        d[at] ^= 1 << rng.random_range(0..8);
                    }
                    1 if !d.is_empty() => {
                        let at = rng.random_range(0..d.len());
                        d[at] = rng.random();
                    }
                    2 => {
                        let v = interesting[rng.random_range(0..interesting.len())];
                        let at = rng.random_range(0..len);
                        for (k, b) in v.iter().enumerate() {
                            if at + k < d.len() {
                                d[at + k] = *b;
                            }
                        }
                    }
                    3 => d.truncate(rng.random_range(0..len)),
                    4 if !d.is_empty() => {
                        let at = rng.random_range(0..d.len());
                        let n = rng.random_range(1..=16.min(d.len() - at));
                        d.drain(at..at + n);
                    }
                    _ => {
                        let at = rng.random_range(0..=d.len());
                        let n = rng.random_range(1..=16);
                        let fill: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                        d.splice(at..at, fill);
                    }
                }
            }
            if std::panic::catch_unwind(|| targets::run(target, &d)).is_err() {
                let dir = fuzz_dir().join("artifacts").join(target);
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("mutated-{seed}-{i}"));
                std::fs::write(&path, &d).unwrap();
                found.push(path.display().to_string());
            }
        }
        eprintln!(
            "{target}: {iters} mutated inputs in {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    let _ = std::panic::take_hook();
    assert!(found.is_empty(), "panicking inputs: {found:#?}");
}

// ---- seeds ----

const TINY_CONFIG: &str = r#"{"_class_name": "UNet2DModel", "act_fn": "silu",
 "add_attention": true, "attention_head_dim": 1, "block_out_channels": [2, 2],
 "center_input_sample": false, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
 "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 1,
 "layers_per_block": 1, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
 "norm_num_groups": 1, "num_class_embeds": 3, "out_channels": 1, "sample_size": 4,
 "time_embedding_type": "positional", "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}"#;

const TINY_SCHEDULER: &str = r#"{"_class_name": "DDPMScheduler", "beta_end": 0.02,
 "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": true,
 "num_train_timesteps": 10, "prediction_type": "epsilon", "timestep_spacing": "leading",
 "variance_type": "fixed_small"}"#;

fn safetensors_bytes(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn png(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if color == png::ColorType::Indexed {
            enc.set_palette(vec![0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255]);
        }
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }
    bytes
}

/// A baseline 8x8 grey JPEG, hand-made (see src/data/tests.rs).
fn tiny_jpeg() -> Vec<u8> {
    let mut j = vec![0xff, 0xd8];
    j.extend([0xff, 0xdb, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    j.extend([0xff, 0xc0, 0x00, 0x0b, 8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
    for (class, sym) in [(0x00u8, 0x0au8), (0x10, 0x00)] {
        j.extend([0xff, 0xc4, 0x00, 0x14, class, 1]);
        j.extend([0u8; 15]);
        j.push(sym);
    }
    j.extend([0xff, 0xda, 0x00, 0x08, 1, 1, 0x00, 0, 63, 0]);
    j.extend([0x40, 0x0f, 0xff, 0xd9]);
    j
}

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes the seed corpus (small valid inputs of each format, a few KB each).
#[test]
#[ignore = "regenerates fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    use kakusan::model::config::UNetConfig;
    use kakusan::model::weights::{save_weights, Weights};
    use safetensors::Dtype;
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();

    let cfg = UNetConfig::from_json(TINY_CONFIG).unwrap();
    let weights = save_weights(&Weights::random(&cfg, 1)).unwrap();
    let folder = targets::join3(
        TINY_CONFIG.as_bytes(),
        Some(TINY_SCHEDULER.as_bytes()),
        &weights,
    );
    // The seed must load: the fuzzer starts from a valid folder.
    let (c, s, w) = targets::split3(&folder);
    kakusan::model::files::Model::from_files(&kakusan::model::files::ModelFiles {
        config_json: String::from_utf8(c.to_vec()).unwrap(),
        scheduler_json: s.map(|s| String::from_utf8(s.to_vec()).unwrap()),
        weights: w.to_vec(),
    })
    .expect("the model seed loads");
    seeds.push(("model_folder", "tiny_attention_classes", folder));
    seeds.push((
        "model_folder",
        "tiny_no_scheduler",
        targets::join3(TINY_CONFIG.as_bytes(), None, &[]),
    ));
    // Configs of the diffusers fixtures, with no weights: the config parser's variety.
    for f in ["attn", "legacy", "pad0", "mnist28"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(f);
        let c = std::fs::read(dir.join("config.json")).unwrap();
        let s = std::fs::read(dir.join("scheduler_config.json")).unwrap();
        seeds.push(("model_folder", f, targets::join3(&c, Some(&s), &[])));
    }

    let sample = f32_bytes(&[0.5, -0.5, 0.25, 1.0]);
    seeds.push((
        "safetensors_inputs",
        "predict",
        safetensors_bytes(&[
            ("sample", Dtype::F32, vec![1, 1, 2, 2], sample.clone()),
            (
                "timesteps",
                Dtype::I64,
                vec![1],
                7i64.to_le_bytes().to_vec(),
            ),
            (
                "class_labels",
                Dtype::I64,
                vec![1],
                2i64.to_le_bytes().to_vec(),
            ),
        ]),
    ));
    seeds.push((
        "safetensors_inputs",
        "init_noise_f16",
        safetensors_bytes(&[(
            "init_noise",
            Dtype::F16,
            vec![1, 1, 2, 2],
            [0.5f32, -1.0, 2.0, 0.0]
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
        )]),
    ));
    seeds.push((
        "safetensors_inputs",
        "dataset",
        safetensors_bytes(&[
            ("images", Dtype::U8, vec![2, 1, 3, 3], (0..18).collect()),
            ("labels", Dtype::U8, vec![2], vec![0, 1]),
        ]),
    ));

    use png::{BitDepth, ColorType};
    seeds.push((
        "image",
        "grey.png",
        png(
            3,
            2,
            ColorType::Grayscale,
            BitDepth::Eight,
            &[0, 50, 100, 150, 200, 250],
        ),
    ));
    seeds.push((
        "image",
        "rgba.png",
        png(
            2,
            2,
            ColorType::Rgba,
            BitDepth::Eight,
            &(0..16).collect::<Vec<u8>>(),
        ),
    ));
    seeds.push((
        "image",
        "palette.png",
        png(4, 1, ColorType::Indexed, BitDepth::Two, &[0b00_01_10_11]),
    ));
    seeds.push((
        "image",
        "rgb16.png",
        png(
            1,
            2,
            ColorType::Rgb,
            BitDepth::Sixteen,
            &(0..12).collect::<Vec<u8>>(),
        ),
    ));
    seeds.push(("image", "grey.jpg", tiny_jpeg()));

    let images = idx(&[2, 3, 3], &(0..18).collect::<Vec<u8>>());
    let labels = idx(&[2], &[3, 1]);
    seeds.push((
        "idx",
        "labeled",
        targets::join3(&[], Some(&labels), &images),
    ));
    seeds.push((
        "idx",
        "gzip_labeled",
        targets::join3(&[], Some(&gzip(&labels)), &gzip(&images)),
    ));
    seeds.push((
        "idx",
        "rgb_unlabeled",
        targets::join3(
            &[],
            None,
            &idx(&[1, 2, 2, 3], &(0..12).collect::<Vec<u8>>()),
        ),
    ));

    let mut record = vec![7u8];
    record.extend((0..3072).map(|i| (i % 251) as u8));
    seeds.push(("cifar", "one_record.bin", record));

    seeds.push((
        "lab_points",
        "unlabelled.csv",
        b"x,y\n0.5,-1.25\n-0.75,0.5\n1e-3,2.5E0\n".to_vec(),
    ));
    seeds.push((
        "lab_points",
        "labelled.csv",
        b"# two classes\nx,y,class\n0.1,0.2,0\n-0.3,0.4,1\r\n 1.5 , -2 , 1\n\n".to_vec(),
    ));
    let moons = kakusan::lab::data::generate(kakusan::lab::data::Preset::Moons, 12, 1, "").unwrap();
    let mut csv = String::new();
    for (p, c) in moons.points.iter().zip(moons.labels.as_ref().unwrap()) {
        csv.push_str(&format!("{},{},{c}\n", p[0], p[1]));
    }
    seeds.push(("lab_points", "moons.csv", csv.into_bytes()));

    for (target, name, bytes) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        // Each seed must itself run cleanly.
        targets::run(target, &bytes);
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
