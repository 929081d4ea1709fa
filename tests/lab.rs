//! `kakusan lab train` end to end on llvmpipe: a short run lowers the loss and the fit
//! figure (sliced Wasserstein to the data) well below the untrained model's and within 4× of
//! its floor, and writes its files; bad input is a clear error. Kept short: batch 64, T = 50,
//! 500 samples with 25 DDPM steps.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::cli::{kakusan, tmpdir};

#[test]
fn lab_train_lowers_loss_and_fit_figure() {
    let out = tmpdir("train");
    let (ok, stdout, stderr) = kakusan(&[
        "lab",
        "train",
        "--preset",
        "gaussians",
        "--points",
        "4000",
        "--steps",
        "400",
        "--batch",
        "64",
        "--lr",
        "3e-3",
        "--timesteps",
        "50",
        "--samples",
        "500",
        "--sample-steps",
        "25",
        "--bound-draws",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "lab train failed:\n{stdout}\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let f = |k: &str| {
        summary[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {summary}"))
    };
    let (l0, l1) = (f("loss_start"), f("loss_end"));
    let (fit, floor, untrained) = (f("fit_sliced_w2"), f("fit_floor"), f("fit_untrained"));
    println!("{stdout}");
    // "start" is the mean of the first 50 steps, which already learn a little.
    assert!(l1 < 0.8 * l0, "loss {l0} → {l1}");
    // An untrained model's DDPM samples fly off (random ε, coefficients 1/√α_t per step); a
    // model that learned nothing gets nowhere near 4× the floor.
    assert!(
        fit < 0.5 * untrained && fit < 4.0 * floor,
        "fit {fit} (floor {floor}, untrained {untrained})"
    );
    for file in [
        "lab_model.safetensors",
        "lab_config.json",
        "metrics.jsonl",
        "summary.json",
        "lab.png",
    ] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 400);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn lab_bad_input_is_a_clear_error() {
    for (args, msg) in [
        (
            &["lab", "train", "--preset", "nope"][..],
            "unknown preset `nope`",
        ),
        (&["lab", "train", "--points", "1"][..], "only one point"),
        (&["lab", "train", "--points", "30000"][..], "at most 20000"),
        (&["lab", "train", "--timesteps", "5"][..], "--timesteps"),
        (&["lab", "train", "--batch", "0"][..], "batch"),
        (
            &["lab", "train", "--preset", "word", "--word", "?!"][..],
            "no letters",
        ),
    ] {
        let out = tmpdir("bad");
        let mut a = args.to_vec();
        a.extend(["--out", out.to_str().unwrap()]);
        let (ok, _, stderr) = kakusan(&a);
        assert!(!ok, "{args:?} should fail");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(msg),
            "{args:?}: {stderr}"
        );
    }
}
