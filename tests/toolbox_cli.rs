//! The toolbox commands (`nll`, `anomaly`, `inpaint`) end to end through the binary: they
//! write what they promise, and bad input gives `error: …` and exit 1, never a panic.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::cli::{kakusan_strict as kakusan, p, tmpdir, write_f32_tensors, write_gray_png};
use common::fixture;

#[test]
fn nll_writes_a_report_and_a_plot_and_refuses_bad_input() {
    let dir = fixture("likelihood");
    let tmp = tmpdir("nll");
    let (report, plot) = (tmp.join("report.json"), tmp.join("terms.png"));
    let input = dir.join("reference.safetensors");
    let (ok, stdout, err) = kakusan(&[
        "nll",
        "--model",
        p(&dir),
        "--input",
        p(&input),
        "--seed",
        "3",
        "--out",
        p(&report),
        "--plot",
        p(&plot),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("bits/dim"), "{stdout}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let bpd: Vec<f64> = j["bits_per_dim"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(bpd.len(), 3);
    assert_eq!(j["terms_mean"].as_array().unwrap().len(), 20);
    // The total is the sum of its parts.
    let sum: f64 = j["prior_mean"].as_f64().unwrap()
        + j["terms_mean"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum::<f64>();
    let mean = bpd.iter().sum::<f64>() / 3.0;
    assert!((sum - mean).abs() < 1e-9 * mean, "{sum} vs {mean}");
    assert!(std::fs::read(&plot).unwrap().starts_with(b"\x89PNG"));

    // Off-grid pixels, a wrong shape, a missing tensor, a missing file, a label out of range.
    let off_grid = tmp.join("off_grid.safetensors");
    write_f32_tensors(&off_grid, &[("sample", vec![1, 1, 8, 8], vec![0.5; 64])]);
    let wrong_shape = tmp.join("wrong_shape.safetensors");
    write_f32_tensors(&wrong_shape, &[("sample", vec![1, 1, 4, 4], vec![1.0; 16])]);
    let no_sample = tmp.join("no_sample.safetensors");
    write_f32_tensors(&no_sample, &[("x", vec![1, 1, 8, 8], vec![1.0; 64])]);
    for (file, extra, says) in [
        (&off_grid, None, "256-level grid"),
        (&wrong_shape, None, "shape"),
        (&no_sample, None, "no tensor `sample`"),
        (&tmp.join("missing.safetensors"), None, "cannot read"),
        (&input, Some("9"), "out of range"),
    ] {
        let mut args = vec!["nll", "--model", p(&dir), "--input", p(file)];
        if let Some(k) = extra {
            args.extend(["--class-label", k]);
        }
        let (ok, _, err) = kakusan(&args);
        assert!(!ok, "{file:?} was accepted");
        assert!(err.contains(says), "{file:?}: {err}");
    }
}

#[test]
fn anomaly_scores_each_image_and_refuses_bad_input() {
    let dir = fixture("likelihood");
    let tmp = tmpdir("anomaly");
    let out = tmp.join("scores.json");
    // The tiny fixture model (T = 20) with a `kind` tensor: AUROC is reported.
    let input = tmp.join("input.safetensors");
    let x: Vec<f32> = (0..3 * 64)
        .map(|i| ((i * 37) % 256) as f32 / 127.5 - 1.0)
        .collect();
    write_f32_tensors(
        &input,
        &[
            ("sample", vec![3, 1, 8, 8], x.clone()),
            ("kind", vec![3], vec![0.0, 1.0, 2.0]),
        ],
    );
    let (ok, stdout, err) = kakusan(&[
        "anomaly",
        "--model",
        p(&dir),
        "--input",
        p(&input),
        "--t",
        "10",
        "--steps",
        "2",
        "--repeats",
        "2",
        "--bits",
        "--out",
        p(&out),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("AUROC"), "{stdout}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let scores = j["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3);
    assert!(scores.iter().all(|v| v.as_f64().unwrap() > 0.0));
    assert_eq!(j["bits_per_dim"].as_array().unwrap().len(), 3);
    assert_eq!(j["ddim_steps"], 2);

    let bad_kind = tmp.join("bad_kind.safetensors");
    write_f32_tensors(
        &bad_kind,
        &[
            ("sample", vec![3, 1, 8, 8], x.clone()),
            ("kind", vec![2], vec![0.0, 1.0]),
        ],
    );
    let off_grid = tmp.join("off_grid.safetensors");
    write_f32_tensors(&off_grid, &[("sample", vec![1, 1, 8, 8], vec![0.5; 64])]);
    for (args, says) in [
        (vec!["--input", p(&input), "--t", "20"], "outside"),
        (
            vec!["--input", p(&input), "--repeats", "0", "--t", "5"],
            "at least 1",
        ),
        (vec!["--input", p(&bad_kind)], "kind"),
        (
            vec!["--input", p(&off_grid), "--bits", "--t", "5"],
            "256-level grid",
        ),
        (vec!["--input", p(&dir.join("config.json"))], "safetensors"),
    ] {
        let mut all = vec!["anomaly", "--model", p(&dir)];
        all.extend(args.iter().copied());
        let (ok, _, err) = kakusan(&all);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn inpaint_keeps_known_pixels_and_refuses_bad_input() {
    let dir = fixture("likelihood");
    let tmp = tmpdir("inpaint");
    let (image, mask) = (tmp.join("image.png"), tmp.join("mask.png"));
    let px: Vec<u8> = (0..64).map(|i| ((i * 37) % 256) as u8).collect();
    write_gray_png(&image, 8, 8, &px);
    // Keep the top half (white), fill the bottom half (black).
    let m: Vec<u8> = (0..64).map(|i| if i < 32 { 255 } else { 0 }).collect();
    write_gray_png(&mask, 8, 8, &m);
    let (grid, tensor) = (tmp.join("grid.png"), tmp.join("out.safetensors"));
    let (ok, _, err) = kakusan(&[
        "inpaint",
        "--model",
        p(&dir),
        "--image",
        p(&image),
        "--mask",
        p(&mask),
        "--steps",
        "4",
        "--jump-length",
        "2",
        "--jump-n-sample",
        "2",
        "--class-label",
        "1",
        "--guidance",
        "2",
        "--out",
        p(&grid),
        "--out-tensor",
        p(&tensor),
    ]);
    assert!(ok, "{err}");
    assert!(std::fs::read(&grid).unwrap().starts_with(b"\x89PNG"));
    let out = common::Reference::open(&tensor).get("sample");
    assert_eq!(out.0, vec![1, 1, 8, 8]);
    for (i, (&got, &v)) in out.1.iter().zip(&px).take(32).enumerate() {
        assert_eq!(got, v as f32 / 127.5 - 1.0, "known pixel {i}");
    }

    // Missing mask, a mask of the wrong size, a wrong image shape, both masks, a mask
    // outside [0, 1].
    let small_mask = tmp.join("small_mask.png");
    write_gray_png(&small_mask, 4, 4, &[255; 16]);
    let wrong_shape = tmp.join("wrong_shape.safetensors");
    write_f32_tensors(&wrong_shape, &[("image", vec![1, 1, 4, 4], vec![0.0; 16])]);
    let with_mask = tmp.join("with_mask.safetensors");
    write_f32_tensors(
        &with_mask,
        &[
            ("image", vec![1, 1, 8, 8], vec![0.0; 64]),
            ("mask", vec![1, 1, 8, 8], vec![2.0; 64]),
        ],
    );
    let bad_mask_shape = tmp.join("bad_mask_shape.safetensors");
    write_f32_tensors(
        &bad_mask_shape,
        &[
            ("image", vec![1, 1, 8, 8], vec![0.0; 64]),
            ("mask", vec![1, 1, 4, 4], vec![1.0; 16]),
        ],
    );
    for (args, says) in [
        (vec!["--image", p(&image)], "missing mask"),
        (vec!["--image", p(&image), "--mask", p(&small_mask)], "4x4"),
        (
            vec!["--image", p(&wrong_shape), "--mask", p(&mask)],
            "shape",
        ),
        (
            vec!["--image", p(&with_mask), "--mask", p(&mask)],
            "use one",
        ),
        (vec!["--image", p(&with_mask)], "outside [0, 1]"),
        (vec!["--image", p(&bad_mask_shape)], "mask has shape"),
        (
            vec!["--image", p(&tmp.join("nope.png")), "--mask", p(&mask)],
            "cannot read",
        ),
    ] {
        let mut all = vec!["inpaint", "--model", p(&dir), "--steps", "2"];
        all.extend(args.iter().copied());
        all.extend(["--out", p(&grid)]);
        let (ok, _, err) = kakusan(&all);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
