//! The `kakusan` binary end to end: it agrees with diffusers through its file interface,
//! and bad input gives a non-zero exit with a clear message, never a panic.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{copy_fixture, kakusan, p, tmpdir};
use common::{fixture, rel_l2, Reference};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

#[test]
fn predict_matches_diffusers() {
    let dir = fixture("attn");
    let out = tmpdir("predict").join("out.safetensors");
    let (ok, _, err) = kakusan(&[
        "predict",
        "--model",
        p(&dir),
        "--input",
        p(&dir.join("reference.safetensors")),
        "--out",
        p(&out),
    ]);
    assert!(ok, "{err}");
    let got = Reference::open(&out).get("sample").1;
    let want = Reference::open(&dir.join("reference.safetensors"))
        .get("unet_out")
        .1;
    let e = rel_l2(&got, &want);
    assert!(e <= 1e-4, "relative L2 error {e:e}");
}

#[test]
fn sample_from_init_noise_matches_diffusers_ddim() {
    let dir = fixture("class_cond");
    let tmp = tmpdir("sample");
    let (grid, tensor) = (tmp.join("grid.png"), tmp.join("x0.safetensors"));
    let reference = dir.join("reference.safetensors");
    let (ok, _, err) = kakusan(&[
        "sample",
        "--model",
        p(&dir),
        "--sampler",
        "ddim",
        "--steps",
        "20",
        "--eta",
        "0",
        "--init-noise",
        p(&reference),
        "--out",
        p(&grid),
        "--out-tensor",
        p(&tensor),
    ]);
    assert!(ok, "{err}");
    let got = Reference::open(&tensor).get("sample").1;
    let want = Reference::open(&reference).get("ddim_x0").1;
    let e = rel_l2(&got, &want);
    assert!(e <= 1e-3, "relative L2 error {e:e}");
    let png = std::fs::read(&grid).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn info_reports_parameters_and_flops() {
    let (ok, out, err) = kakusan(&["info", "--model", p(&fixture("attn"))]);
    assert!(ok, "{err}");
    assert!(out.contains("parameters") && out.contains("GFLOP"), "{out}");
}

#[test]
fn bench_times_a_training_step_and_profiles_it() {
    let (ok, out, err) = kakusan(&[
        "bench",
        "--model",
        "mnist",
        "--train",
        "-n",
        "2",
        "--iters",
        "1",
        "--profile",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("images/s") && out.contains("GFLOP/s"), "{out}");
    // The profile names the kernels of forward, backward and optimizer.
    for kernel in [
        "conv2d_backward_weight",
        "group_norm_backward_dx",
        "adamw",
        "ema",
    ] {
        assert!(
            out.contains(kernel),
            "{kernel} missing from the profile:\n{out}"
        );
    }
    let (ok, _, err) = kakusan(&["bench", "--model", "/nonexistent/model"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/model"), "{err}");
}

/// Without XDG_RUNTIME_DIR, Mesa's Vulkan loader prints `error: XDG_RUNTIME_DIR is invalid or
/// not set`; the binary gives itself a private runtime dir first, so a successful run on a
/// software (or any) adapter prints no `error:` line. The test also fails if the dir leaks.
#[test]
fn successful_run_without_xdg_runtime_dir_prints_no_error() {
    let tmp = tmpdir("no-xdg");
    let out = Command::new(env!("CARGO_BIN_EXE_kakusan"))
        .args([
            "sample",
            "--model",
            p(&fixture("pad0")),
            "--sampler",
            "ddim",
            "--steps",
            "1",
            "-n",
            "1",
            "--out",
            p(&tmp.join("grid.png")),
        ])
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &tmp)
        .output()
        .expect("run kakusan");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.lines().any(|l| l.contains("error:")),
        "a successful run printed an error line:\n{stderr}"
    );
    // The private runtime dir (made in TMPDIR) is removed again.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("kakusan-runtime-"))
        .collect();
    assert!(left.is_empty(), "runtime dir left behind: {left:?}");
}

#[test]
fn missing_model_folder_is_a_clear_error() {
    let (ok, _, err) = kakusan(&["sample", "--model", "/nonexistent/model", "-n", "1"]);
    assert!(!ok);
    assert!(
        err.contains("error:") && err.contains("/nonexistent/model"),
        "{err}"
    );
}

#[test]
fn truncated_weights_are_a_clear_error() {
    let d = copy_fixture("attn", "truncated");
    let w = d.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    for cut in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&w, &bytes[..cut]).unwrap();
        let (ok, _, err) = kakusan(&["predict", "--model", p(&d), "--input", "x", "--out", "y"]);
        assert!(!ok);
        assert!(
            err.contains("error:") && err.contains("safetensors"),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn unsupported_config_names_the_field() {
    let d = copy_fixture("attn", "badconfig");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["act_fn"] = "gelu".into();
    std::fs::write(d.join("config.json"), v.to_string()).unwrap();
    let (ok, _, err) = kakusan(&["info", "--model", p(&d)]);
    assert!(!ok);
    assert!(err.contains("act_fn") && err.contains("gelu"), "{err}");
}

/// Rewrite the fixture's weights through `edit` (name, dtype, shape, bytes) → Option<new>.
fn rewrite_weights(
    d: &Path,
    edit: impl Fn(&str, Dtype, &[usize], &[u8]) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    let w = d.join("diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in st.tensors() {
        if let Some((dt, shape, data)) = edit(&name, t.dtype(), t.shape(), t.data()) {
            kept.push((name, dt, shape, data));
        }
    }
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(&w, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn missing_tensor_is_listed() {
    let d = copy_fixture("attn", "missing");
    rewrite_weights(&d, |n, dt, s, b| {
        (n != "conv_out.bias").then(|| (dt, s.to_vec(), b.to_vec()))
    });
    let (ok, _, err) = kakusan(&["sample", "--model", p(&d), "-n", "1", "--steps", "1"]);
    assert!(!ok);
    assert!(
        err.contains("conv_out.bias") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn wrong_dtype_and_shape_are_errors() {
    let d = copy_fixture("attn", "dtype");
    rewrite_weights(&d, |n, dt, s, b| {
        Some(if n == "conv_out.bias" {
            (Dtype::I32, s.to_vec(), b.to_vec())
        } else {
            (dt, s.to_vec(), b.to_vec())
        })
    });
    let (ok, _, err) = kakusan(&["sample", "--model", p(&d), "-n", "1", "--steps", "1"]);
    assert!(!ok);
    assert!(err.contains("conv_out.bias"), "{err}");

    let d = copy_fixture("attn", "shape");
    rewrite_weights(&d, |n, dt, s, b| {
        Some(if n == "conv_in.bias" {
            (dt, vec![s[0] / 2], b[..b.len() / 2].to_vec())
        } else {
            (dt, s.to_vec(), b.to_vec())
        })
    });
    let (ok, _, err) = kakusan(&["sample", "--model", p(&d), "-n", "1", "--steps", "1"]);
    assert!(!ok);
    assert!(err.contains("conv_in.bias"), "{err}");
}

#[test]
fn bad_predict_input_is_a_clear_error() {
    let dir = fixture("attn");
    let tmp = tmpdir("badinput");
    let input = tmp.join("in.safetensors");
    let data = vec![0u8; 4 * 2 * 3 * 16 * 16];
    let view = TensorView::new(Dtype::F32, vec![2, 3, 16, 16], &data).unwrap();
    std::fs::write(
        &input,
        safetensors::serialize([("sample", view)], None).unwrap(),
    )
    .unwrap();
    let (ok, _, err) = kakusan(&[
        "predict",
        "--model",
        p(&dir),
        "--input",
        p(&input),
        "--out",
        p(&tmp.join("o")),
    ]);
    assert!(!ok);
    assert!(err.contains("timesteps"), "{err}");
}
