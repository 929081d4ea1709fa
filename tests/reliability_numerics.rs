//! Numerically absurd input through the binary: non-finite weights, NaN inputs to
//! `predict`/`--init-noise`, out-of-range sampler and training settings, and a schedule with
//! T = 1. Each gives a clear `error: …` (exit 1; clap's usage errors exit 2) or the result
//! documented in docs/reliability.md — never a panic or a hang.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};

use common::cli::{
    copy_fixture, expect_error, kakusan_code as kakusan, p, tmpdir, write_f32_tensors,
};
use common::{fixture, Reference};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// The 1×3×16×16 input of the `attn` fixture with `sample[0]` and `timesteps` as given.
fn predict_input(dir: &Path, first: f32, t: f32) -> PathBuf {
    let input = dir.join(format!("in_{first}_{t}.safetensors"));
    let mut sample = vec![0.1f32; 3 * 16 * 16];
    sample[0] = first;
    write_f32_tensors(
        &input,
        &[
            ("sample", vec![1, 3, 16, 16], sample),
            ("timesteps", vec![1], vec![t]),
        ],
    );
    input
}

#[test]
fn non_finite_weights_are_named() {
    let d = copy_fixture("attn", "nanweights");
    let w = d.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut edited: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in st.tensors() {
        let mut data = t.data().to_vec();
        if name == "conv_in.weight" {
            data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
            data[8..12].copy_from_slice(&f32::INFINITY.to_le_bytes());
        }
        edited.push((name, t.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView)> = edited
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&w, safetensors::serialize(views, None).unwrap()).unwrap();
    expect_error(
        &["sample", "--model", p(&d), "-n", "1", "--steps", "1"],
        &["conv_in.weight", "NaN or Inf", "(2 of"],
    );
}

#[test]
fn nan_inputs_to_predict_are_errors_and_odd_timesteps_are_accepted() {
    let model = fixture("attn");
    let tmp = tmpdir("predict");
    let out = tmp.join("out.safetensors");
    let run = |input: &Path| {
        kakusan(&[
            "predict",
            "--model",
            p(&model),
            "--input",
            p(input),
            "--out",
            p(&out),
        ])
    };
    for (first, t, tensor) in [
        (f32::NAN, 10.0, "sample"),
        (f32::INFINITY, 10.0, "sample"),
        (0.1, f32::NAN, "timesteps"),
        (0.1, f32::NEG_INFINITY, "timesteps"),
    ] {
        let input = predict_input(&tmp, first, t);
        let (code, err) = run(&input);
        assert_eq!(code, Some(1), "sample[0] = {first}, t = {t}:\n{err}");
        assert!(
            err.contains(&format!("tensor {tensor} holds 1 NaN or Inf")),
            "{err}"
        );
    }
    // Timesteps outside 0..T are accepted, as diffusers does (the embedding is defined for
    // any t): the output is finite.
    for t in [-5.0f32, 5000.0] {
        let (code, err) = run(&predict_input(&tmp, 0.1, t));
        assert_eq!(code, Some(0), "t = {t}:\n{err}");
        let (_, v) = Reference::open(&out).get("sample");
        assert!(
            v.iter().all(|x| x.is_finite()),
            "t = {t}: non-finite output"
        );
    }
}

#[test]
fn nan_init_noise_is_an_error() {
    let model = fixture("attn");
    let tmp = tmpdir("initnoise");
    let noise = tmp.join("xT.safetensors");
    let mut v = vec![0.5f32; 3 * 16 * 16];
    v[7] = f32::NAN;
    write_f32_tensors(&noise, &[("init_noise", vec![1, 3, 16, 16], v)]);
    expect_error(
        &[
            "sample",
            "--model",
            p(&model),
            "--sampler",
            "ddim",
            "--steps",
            "1",
            "--init-noise",
            p(&noise),
            "--out",
            p(&tmp.join("x.png")),
        ],
        &["init_noise", "1 NaN or Inf"],
    );
}

fn sample_args<'a>(model: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["sample", "--model", p(model), "-n", "1", "--out", p(out)];
    a.extend_from_slice(extra);
    a
}

#[test]
fn absurd_eta_and_step_counts_are_errors() {
    let model = fixture("attn");
    let out = tmpdir("eta").join("x.png");
    for eta in [
        "--eta=-1",
        "--eta=NaN",
        "--eta=1.5",
        "--eta=1e300",
        "--eta=inf",
    ] {
        expect_error(
            &sample_args(&model, &out, &["--sampler", "ddim", "--steps", "1", eta]),
            &["eta", "between 0"],
        );
    }
    for steps in ["0", "1001", "18446744073709551615"] {
        expect_error(
            &sample_args(&model, &out, &["--sampler", "ddim", "--steps", steps]),
            &["steps"],
        );
    }
    // Not a number of steps at all: clap's usage error (exit 2), no panic.
    let (code, err) = kakusan(&sample_args(&model, &out, &["--steps=-1"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value"), "{err}");
}

#[test]
fn absurd_guidance_is_an_error_and_negative_guidance_is_allowed() {
    let model = fixture("class_cond");
    let out = tmpdir("guidance").join("x.png");
    for w in [
        "--guidance=NaN",
        "--guidance=inf",
        "--guidance=1e30",
        "--guidance=-2000",
    ] {
        expect_error(
            &sample_args(&model, &out, &["--sampler", "ddim", "--steps", "1", w]),
            &["guidance scale", "1000"],
        );
    }
    // w < 0 steers away from the class: a valid (if unusual) setting with finite samples.
    let tensor = out.with_extension("safetensors");
    let (code, err) = kakusan(&sample_args(
        &model,
        &out,
        &[
            "--sampler",
            "ddim",
            "--steps",
            "2",
            "--guidance=-3",
            "--class-label",
            "1",
            "--out-tensor",
            p(&tensor),
        ],
    ));
    assert_eq!(code, Some(0), "{err}");
    let (_, v) = Reference::open(&tensor).get("sample");
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn a_schedule_with_one_timestep_samples_in_one_step() {
    let d = copy_fixture("attn", "t1");
    let sched = std::fs::read_to_string(d.join("scheduler_config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&sched).unwrap();
    v["num_train_timesteps"] = 1.into();
    std::fs::write(d.join("scheduler_config.json"), v.to_string()).unwrap();
    let tmp = tmpdir("t1out");
    for sampler in ["ddpm", "ddim"] {
        let tensor = tmp.join(format!("{sampler}.safetensors"));
        let (code, err) = kakusan(&[
            "sample",
            "--model",
            p(&d),
            "-n",
            "1",
            "--sampler",
            sampler,
            "--out",
            p(&tmp.join("x.png")),
            "--out-tensor",
            p(&tensor),
        ]);
        assert_eq!(code, Some(0), "{sampler}:\n{err}");
        assert!(err.contains(", 1 steps in"), "{sampler}: {err}");
        let (_, x) = Reference::open(&tensor).get("sample");
        assert!(x.iter().all(|x| x.is_finite()), "{sampler}");
    }
    expect_error(
        &[
            "sample",
            "--model",
            p(&d),
            "-n",
            "1",
            "--steps",
            "2",
            "--out",
            p(&tmp.join("x.png")),
        ],
        &["num_train_timesteps = 1"],
    );
}

#[test]
fn absurd_training_settings_are_errors_before_training() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny_mnist8.json");
    let out = tmpdir("trainargs").join("run");
    for (flag, words) in [
        // Used to panic (remainder by zero).
        ("--checkpoint-every=0", &["--checkpoint-every 0"][..]),
        ("--batch=0", &["--batch 0"]),
        ("--lr=-1", &["--lr -1", "positive"]),
        ("--lr=NaN", &["--lr NaN"]),
        ("--weight-decay=NaN", &["--weight-decay NaN"]),
        ("--ema-decay=1.5", &["--ema-decay 1.5"]),
        ("--label-dropout=2", &["--label-dropout 2", "probability"]),
        ("--sample-steps=0", &["--sample-steps 0"]),
        ("--sample-guidance=NaN", &["guidance scale NaN"]),
        ("--timesteps=0", &["num_train_timesteps"]),
    ] {
        expect_error(
            &[
                "train",
                "--config",
                config,
                "--steps",
                "2",
                "--out",
                p(&out),
                flag,
            ],
            words,
        );
        assert!(
            !out.join("training_state.safetensors").exists(),
            "{flag}: nothing may be trained"
        );
    }
}
