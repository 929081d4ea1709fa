//! The retrain recipe's flags through the binary: `train --holdout` records the split and
//! `nll --heldout` / `eval --heldout` read it, `--snr-gamma` trains, `--max-seconds` stops
//! with a checkpoint, and bad values are clear errors. Tiny models and few steps (T = 20 for
//! the bound), so each test takes seconds on llvmpipe.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::cli::{expect_error, kakusan_strict, p, tmpdir};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny_mnist8.json");
const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/mnist");

fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A copy of the shipped model's weights and configs, without its data_split.json: a model
/// that (as far as kakusan can tell) trained on all the embedded digits.
fn shipped_without_split(dir: &std::path::Path) -> std::path::PathBuf {
    let model = dir.join("unsplit");
    std::fs::create_dir_all(&model).unwrap();
    for f in [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
    ] {
        std::fs::copy(std::path::Path::new(SHIPPED).join(f), model.join(f)).unwrap();
    }
    model
}

/// The run's steps logged in metrics.jsonl.
fn logged_steps(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn holdout_snr_gamma_and_max_seconds_train_and_nll_reads_the_split() {
    let dir = tmpdir("holdout");
    let run = dir.join("run");
    let (ok, _, err) = kakusan_strict(&[
        "train",
        "--config",
        TINY,
        "--batch",
        "8",
        "--steps",
        "100000",
        "--max-seconds",
        "3",
        "--timesteps",
        "20",
        "--holdout",
        "eval",
        "--snr-gamma",
        "5",
        "--sample-every",
        "0",
        "--checkpoint-every",
        "1000",
        "--out",
        p(&run),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("--max-seconds 3: stopping at step"), "{err}");
    assert!(err.contains("min-SNR"), "{err}");
    assert!(
        err.contains("training on 8000 of the embedded digits"),
        "{err}"
    );
    let steps = logged_steps(&run);
    assert!((1..100000).contains(&steps), "{steps} steps");
    // The checkpoint written at the stop loads and holds the recorded split.
    assert!(run.join("diffusion_pytorch_model.safetensors").exists());
    let split = json(&run.join("data_split.json"));
    assert_eq!(split["holdout"], "eval");
    assert_eq!(split["train_digits"], 8000);
    assert_eq!(split["held_out_digits"], 2000);
    assert_eq!(split["held_out_unseen_by_classifier"], 2000);
    let cmd = std::fs::read_to_string(run.join("train_command.txt")).unwrap();
    assert!(
        cmd.contains("--holdout eval") && cmd.contains("--snr-gamma 5"),
        "{cmd}"
    );

    // A resume may not change the split or the loss.
    expect_error(
        &["train", "--resume", p(&run), "--holdout", "1000"],
        &["--holdout 1000", "keeps its split"],
    );
    expect_error(
        &["train", "--resume", p(&run), "--snr-gamma", "2"],
        &["--snr-gamma 2", "keeps its loss"],
    );

    // The bound on the first 3 held-out digits (indices 40, 41, 42), T = 20.
    let report = dir.join("nll.json");
    let (ok, out, err) = kakusan_strict(&[
        "nll",
        "--model",
        p(&run),
        "--heldout",
        "--limit",
        "3",
        "--out",
        p(&report),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("over 3 images"), "{out}");
    let r = json(&report);
    assert_eq!(r["num_images"], 3);
    assert!(
        r["input"].as_str().unwrap().contains("--holdout eval"),
        "{r}"
    );
    assert!(r["mean_bits_per_dim"].as_f64().unwrap().is_finite());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn eval_heldout_uses_digits_neither_model_saw() {
    let dir = tmpdir("eval-heldout");
    // A model without a recorded split trained on everything: --heldout has nothing to use.
    let model = shipped_without_split(&dir);
    expect_error(
        &["eval", "--model", p(&model), "--heldout", "-n", "10"],
        &["data_split.json", "--holdout eval"],
    );
    // The same weights with a recorded `--holdout 1000`: of the last 1,000 digits the
    // classifier also held out 200, so n ≤ 100 and the report says which digits it used.
    std::fs::write(
        model.join("data_split.json"),
        r#"{"holdout": "1000", "held_out_digits": 1000}"#,
    )
    .unwrap();
    expect_error(
        &["eval", "--model", p(&model), "--heldout", "-n", "101"],
        &["200"],
    );
    let report = dir.join("eval.json");
    let (ok, out, err) = kakusan_strict(&[
        "eval",
        "--model",
        p(&model),
        "--heldout",
        "-n",
        "10",
        "--steps",
        "2",
        "--out",
        p(&report),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("200 digits held out from both"), "{out}");
    let r = json(&report);
    assert!(
        r["reference"].as_str().unwrap().contains("--holdout 1000"),
        "{r}"
    );
    // Without --heldout the usual 2,000 (and the report says the model may have seen them).
    let (ok, out, err) =
        kakusan_strict(&["eval", "--model", p(&model), "-n", "10", "--steps", "2"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2000 digits held out from the classifier"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Without flags a new run uses the shipped model's recipe (the evaluator's split, min-SNR-5);
/// `--holdout none --snr-gamma 0` trains on all digits with the plain L_simple.
#[test]
fn the_default_recipe_holds_out_and_weighs_by_min_snr() {
    let dir = tmpdir("defaults");
    let base = |out: &std::path::Path| {
        vec![
            "train".to_string(),
            "--config".into(),
            TINY.into(),
            "--batch".into(),
            "4".into(),
            "--steps".into(),
            "1".into(),
            "--timesteps".into(),
            "20".into(),
            "--sample-every".into(),
            "0".into(),
            "--out".into(),
            p(out).to_string(),
        ]
    };
    let run = dir.join("default");
    let args = base(&run);
    let (ok, _, err) = kakusan_strict(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert!(err.contains("min-SNR"), "{err}");
    assert!(
        err.contains("training on 8000 of the embedded digits"),
        "{err}"
    );
    assert_eq!(json(&run.join("data_split.json"))["holdout"], "eval");

    let run = dir.join("plain");
    let mut args = base(&run);
    args.extend(["--holdout", "none", "--snr-gamma", "0"].map(String::from));
    let (ok, _, err) = kakusan_strict(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert!(!err.contains("min-SNR"), "{err}");
    assert!(err.contains("on 10000 images"), "{err}");
    assert!(!run.join("data_split.json").exists());
    // A resume of the plain run keeps it plain (the defaults apply to new runs only), and
    // asking it for the default split is the usual error.
    let (ok, _, err) = kakusan_strict(&["train", "--resume", p(&run), "--sample-every", "0"]);
    assert!(ok, "{err}");
    assert!(
        !err.contains("min-SNR") && err.contains("on 10000 images"),
        "{err}"
    );
    expect_error(
        &["train", "--resume", p(&run), "--holdout", "eval"],
        &["--holdout none", "keeps its split"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn recipe_flags_reject_bad_values() {
    let dir = tmpdir("bad");
    let out = dir.join("run");
    let base = [
        "train",
        "--config",
        TINY,
        "--steps",
        "1",
        "--sample-every",
        "0",
        "--out",
        p(&out),
    ];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    expect_error(&with(&base, &["--holdout", "0"]), &["--holdout", "eval"]);
    expect_error(&with(&base, &["--holdout", "most"]), &["--holdout"]);
    expect_error(
        &with(&base, &["--holdout", "10000"]),
        &["both must be at least 1"],
    );
    expect_error(
        &with(&base, &["--snr-gamma=-1"]),
        &["--snr-gamma", "positive"],
    );
    expect_error(
        &with(&base, &["--max-seconds", "0"]),
        &["--max-seconds", "positive"],
    );
    expect_error(
        &with(&base, &["--holdout", "eval", "--data", p(&dir)]),
        &["embedded MNIST"],
    );
    expect_error(
        &[
            "nll",
            "--model",
            p(&shipped_without_split(&dir)),
            "--heldout",
        ],
        &["data_split.json"],
    );
    std::fs::remove_dir_all(&dir).ok();
}
