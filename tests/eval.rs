//! The evaluator (src/eval, `kakusan eval`): the shipped digit classifier is as accurate on
//! the held-out digits as docs/evaluation.md says, its feature-space FID separates real
//! digits from noise, and `kakusan eval` on the shipped model runs and reports every number.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::cli::kakusan;
use kakusan::data::load_default_mnist;
use kakusan::eval::classifier::Mlp;
use kakusan::eval::fid::fid;
use kakusan::eval::{class_accuracy, reference_draws, shipped_classifier, split_indices};
use kakusan::gpu::{block_on, GpuContext};

/// The floor docs/evaluation.md states for the shipped classifier on the 2,000 held-out
/// digits (it measured 98.45 % when trained; see assets/classifier/classifier.json).
const MIN_HELD_OUT_ACCURACY: f64 = 0.98;

fn ctx() -> GpuContext {
    common::xdg();
    block_on(GpuContext::new()).expect("tests need a GPU adapter (install mesa-vulkan-drivers)")
}

#[test]
fn shipped_classifier_is_accurate_on_held_out_digits() {
    let ctx = ctx();
    let digits = load_default_mnist().unwrap();
    let (_, held) = split_indices(digits.len());
    let mut x = vec![0.0f32; held.len() * 784];
    digits.batch(&held, &mut x).unwrap();
    let net = Mlp::new(&ctx, &shipped_classifier().unwrap(), 500).unwrap();
    let out = block_on(net.classify(&ctx, &x)).unwrap();
    let labels = digits.batch_labels(&held).unwrap();
    let (acc, per) = class_accuracy(&out.predictions(), &labels, 10);
    eprintln!("held-out accuracy {:.4}, per class {per:.3?}", acc);
    assert!(
        acc >= MIN_HELD_OUT_ACCURACY,
        "held-out accuracy {acc} < {MIN_HELD_OUT_ACCURACY}"
    );
}

#[test]
fn fid_is_small_for_real_digits_and_large_for_noise() {
    let ctx = ctx();
    let digits = load_default_mnist().unwrap();
    let (_, held) = split_indices(digits.len());
    let n = 200;
    let (a, b) = reference_draws(&held, n, 0).unwrap();
    let net = Mlp::new(&ctx, &shipped_classifier().unwrap(), n).unwrap();
    let features = |x: &[f32]| block_on(net.classify(&ctx, x)).unwrap().features;
    let pixels = |idx: &[usize]| {
        let mut x = vec![0.0f32; idx.len() * 784];
        digits.batch(idx, &mut x).unwrap();
        x
    };
    let (fa, fb) = (features(&pixels(&a)), features(&pixels(&b)));
    let mut rng = kakusan::rng::SplitMix64(1);
    let noise: Vec<f32> = (0..n * 784)
        .map(|_| (2.0 * rng.next_f64() - 1.0) as f32)
        .collect();
    // Real digits with the background lifted to grey (the failure the evaluator must see).
    let grey: Vec<f32> = pixels(&b).iter().map(|v| v.max(-0.5)).collect();
    let dim = net.feature_dim();
    let floor = fid(&fb, &fa, dim).unwrap();
    let to_noise = fid(&features(&noise), &fa, dim).unwrap();
    let to_grey = fid(&features(&grey), &fa, dim).unwrap();
    eprintln!("FID real-vs-real {floor:.3}, noise {to_noise:.3}, grey background {to_grey:.3}");
    assert!(floor > 0.0 && floor.is_finite());
    assert!(to_noise > 20.0 * floor, "noise {to_noise} vs floor {floor}");
    assert!(
        to_grey > 3.0 * floor,
        "grey background {to_grey} vs floor {floor}"
    );
}

/// A small `kakusan eval` of the shipped model (DDIM and DDPM, few steps) prints and writes
/// every number.
#[test]
fn eval_command_reports_every_number() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/mnist");
    let dir = std::env::temp_dir().join(format!("kakusan-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = ["--guidance-rescale", "0.7", "--guidance-interval", "0,600"];
    for (sampler, guidance, extra) in [
        ("ddim", "2", &[][..]),
        ("ddpm", "1", &[][..]),
        ("ddim", "3", &options[..]),
    ] {
        let json = dir.join(format!("{sampler}-{guidance}.json"));
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--sampler",
            sampler,
            "--steps",
            "4",
            "--guidance",
            guidance,
            "-n",
            "20",
            "--out",
            json.to_str().unwrap(),
        ];
        args.extend(extra);
        let (ok, stdout, stderr) = kakusan(&args);
        assert!(ok, "{stderr}");
        for what in ["class accuracy", "FID", "floor", "median pixel"] {
            assert!(stdout.contains(what), "no {what} in:\n{stdout}");
        }
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        for key in ["accuracy", "fid", "fid_floor", "fid_ratio", "median_pixel"] {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
            assert!(v.is_finite(), "{key} = {v}");
        }
        assert_eq!(r["n"], 20);
        assert_eq!(r["sampler"], sampler);
        let acc = r["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(r["fid"].as_f64().unwrap() > 0.0);
        // The guidance options are applied and reported.
        if extra.is_empty() {
            assert_eq!(r["guidance_rescale"], 0.0);
            assert!(r["guidance_interval"].is_null());
        } else {
            assert_eq!(r["guidance_rescale"], 0.7);
            assert_eq!(r["guidance_interval"], serde_json::json!([0, 600]));
            assert!(
                stdout.contains("rescale 0.7") && stdout.contains("0..=600"),
                "{stdout}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_bad_input_is_a_clear_error() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/mnist");
    let (ok, _, stderr) = kakusan(&["eval", "--model", model, "--data", "somewhere"]);
    assert!(
        !ok && stderr.contains("error:") && stderr.contains("somewhere"),
        "{stderr}"
    );
    let (ok, _, stderr) = kakusan(&["eval", "--model", model, "-n", "1001"]);
    assert!(
        !ok && stderr.contains("error:") && stderr.contains("1000"),
        "{stderr}"
    );
    let cifar = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/configs/ddpm-cifar10-32"
    );
    let (ok, _, stderr) = kakusan(&["eval", "--model", cifar]);
    assert!(!ok && stderr.contains("error:"), "{stderr}");
    // A colour model without --data: the digit evaluator refuses it and points to --data.
    let colour = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/legacy");
    let (ok, _, stderr) = kakusan(&["eval", "--model", colour]);
    assert!(
        !ok && stderr.contains("error:") && stderr.contains("--data"),
        "{stderr}"
    );
}

/// `kakusan eval --data`: a colour unconditional model and a greyscale class-conditional one
/// against a folder of images, its distance next to the floor; too few images, the digit
/// evaluator's options and guidance without classes are clear errors.
#[test]
fn eval_against_a_data_folder() {
    let dir = common::cli::tmpdir("data");
    let data = dir.join("images");
    // 12 greyscale 20×20 images (resized to the models' 16×16): bright squares at different
    // places on a dark background, in two class folders; one broken file is skipped.
    for (k, class) in ["a", "b"].iter().enumerate() {
        let d = data.join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..6u32 {
            let (x0, y0) = (2 + i + k as u32, 3 + i);
            let px = common::cli::pixels(20, 20, |x, y| {
                if (x0..x0 + 8).contains(&x) && (y0..y0 + 8).contains(&y) {
                    230
                } else {
                    10
                }
            });
            common::cli::write_gray_png(&d.join(format!("{i}.png")), 20, 20, &px);
        }
    }
    std::fs::write(data.join("a").join("broken.png"), b"not a png").unwrap();
    let fixture = |name: &str| format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let (legacy, class_cond) = (fixture("legacy"), fixture("class_cond"));
    let json = dir.join("report.json");
    for (model, extra) in [(&legacy, &[][..]), (&class_cond, &["--guidance", "2"][..])] {
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--data",
            common::cli::p(&data),
            "--steps",
            "2",
            "-n",
            "6",
            "--batch",
            "4",
            "--out",
            common::cli::p(&json),
        ];
        args.extend(extra);
        let (ok, stdout, stderr) = kakusan(&args);
        assert!(ok, "{model}: {stderr}");
        assert!(
            stderr.contains("broken.png"),
            "the skipped file is named: {stderr}"
        );
        for what in ["FD (pixels)", "floor", "median pixel", "pixel statistics"] {
            assert!(stdout.contains(what), "no {what} in:\n{stdout}");
        }
        assert!(!stdout.contains("class accuracy"), "{stdout}");
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        for key in [
            "fid",
            "fid_floor",
            "fid_ratio",
            "median_pixel",
            "median_pixel_real",
        ] {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
            assert!(v.is_finite(), "{key} = {v}");
        }
        // An untrained fixture draws noise: far from the squares, whose background is dark.
        assert!(r["fid_ratio"].as_f64().unwrap() > 3.0, "{r}");
        assert!(r["median_pixel_real"].as_f64().unwrap() < -0.8, "{r}");
        assert!(r.get("accuracy").is_none() && r["data"].is_string(), "{r}");
        assert_eq!(r["n"], 6);
    }
    let d = common::cli::p(&data);
    common::cli::expect_error(
        &["eval", "--model", &legacy, "--data", d, "-n", "7"],
        &["12", "-n ≤ 6"],
    );
    common::cli::expect_error(
        &["eval", "--model", &legacy, "--data", d, "--heldout"],
        &["--heldout", "data folder"],
    );
    common::cli::expect_error(
        &[
            "eval",
            "--model",
            &legacy,
            "--data",
            d,
            "-n",
            "4",
            "--steps",
            "2",
            "--guidance",
            "2",
        ],
        &["guidance"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `--save-samples`: a stopped evaluation continues from the saved batches and gives the same
/// report; a batch sampled with other settings is a clear error, not silently mixed in.
#[test]
fn eval_save_samples_resumes_and_rejects_other_settings() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/mnist");
    let dir = std::env::temp_dir().join(format!("kakusan-eval-save-{}", std::process::id()));
    let saved = dir.join("batches");
    std::fs::create_dir_all(&dir).unwrap();
    // `extra`: further options after the shared ones.
    let run = |guidance: &str, extra: &[&str], out: &str| {
        let json = dir.join(out);
        let mut args = vec![
            "eval",
            "--model",
            model,
            "--steps",
            "3",
            "--guidance",
            guidance,
            "-n",
            "6",
            "--batch",
            "3",
            "--save-samples",
            saved.to_str().unwrap(),
            "--out",
            json.to_str().unwrap(),
        ];
        args.extend(extra);
        let r = kakusan(&args);
        (r, json)
    };
    let ((ok, _, stderr), first) = run("2", &[], "a.json");
    assert!(ok, "{stderr}");
    let b1 = saved.join("batch_00001.safetensors");
    assert!(saved.join("batch_00000.safetensors").is_file() && b1.is_file());
    // As if stopped after batch 0: batch 1 is missing, so the next run reads batch 0 back
    // and samples batch 1 again.
    std::fs::remove_file(&b1).unwrap();
    let ((ok, _, stderr), second) = run("2", &[], "b.json");
    assert!(ok, "{stderr}");
    assert!(b1.is_file(), "batch 1 sampled again and saved");
    let read = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (a, b) = (read(&first), read(&second));
    for key in ["accuracy", "fid", "median_pixel"] {
        assert_eq!(a[key], b[key], "{key}: a resumed run gives the same report");
    }
    // Batch 0 is really read back: replace its pixels by white (+1), keeping its settings,
    // and the report's median pixel moves.
    let b0 = saved.join("batch_00000.safetensors");
    let bytes = std::fs::read(&b0).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let white: Vec<u8> = (0..3 * 784).flat_map(|_| 1.0f32.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 1, 28, 28], &white)
            .unwrap();
    let out = safetensors::serialize([("sample", view)], meta.metadata().clone()).unwrap();
    std::fs::write(&b0, out).unwrap();
    let ((ok, _, stderr), third) = run("2", &[], "w.json");
    assert!(ok, "{stderr}");
    let w = read(&third);
    assert!(
        w["median_pixel"].as_f64().unwrap() > a["median_pixel"].as_f64().unwrap() + 0.5,
        "the white batch 0 was read back: {} vs {}",
        w["median_pixel"],
        a["median_pixel"]
    );
    // Other guidance options with the same folder: an error too.
    let ((ok, _, stderr), _) = run("2", &["--guidance-rescale", "0.5"], "r.json");
    assert!(
        !ok && stderr.contains("other settings") && stderr.contains("rescale: 0.5"),
        "{stderr}"
    );
    // Other settings (guidance 3) with the same folder: an error naming the batch.
    let ((ok, _, stderr), _) = run("3", &[], "c.json");
    assert!(
        !ok && stderr.contains("error:")
            && stderr.contains("batch_00000")
            && stderr.contains("other settings"),
        "{stderr}"
    );
    // A truncated batch file: an error, not a panic.
    let bytes = std::fs::read(&b0).unwrap();
    std::fs::write(&b0, &bytes[..bytes.len() / 2]).unwrap();
    let ((ok, _, stderr), _) = run("2", &[], "d.json");
    assert!(
        !ok && stderr.contains("error:") && stderr.contains("batch_00000"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
