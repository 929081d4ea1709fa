//! `kakusan interpolate` and `kakusan sample --progress-grid` end to end on the tiny
//! `class_cond` fixture (16×16, few steps): interpolation ends are the plain samples, the
//! progress grid has the right size, and bad input gives `error: …`, exit 1, no panic.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::Path;

use common::cli::{kakusan_code as kakusan, p, pixels, png_size, tmpdir, write_gray_png};
use common::{fixture, Reference};

#[test]
fn interpolation_ends_are_the_plain_samples() {
    let m = fixture("class_cond");
    let d = tmpdir("ends");
    let mut ends = Vec::new();
    for seed in ["3", "4"] {
        let out = d.join(format!("s{seed}.safetensors"));
        let (code, err) = kakusan(&[
            "sample",
            "--model",
            p(&m),
            "--sampler",
            "ddim",
            "--steps",
            "4",
            "--seed",
            seed,
            "-n",
            "1",
            "--class-label",
            "2",
            "--guidance",
            "1.5",
            "--out",
            p(&d.join("s.png")),
            "--out-tensor",
            p(&out),
        ]);
        assert_eq!(code, Some(0), "{err}");
        ends.push(Reference::open(&out).get("sample").1);
    }
    let strip = d.join("strip.safetensors");
    let png = d.join("strip.png");
    let (code, err) = kakusan(&[
        "interpolate",
        "--model",
        p(&m),
        "--seeds",
        "3,4",
        "--frames",
        "3",
        "--steps",
        "4",
        "--class-label",
        "2",
        "--guidance",
        "1.5",
        "--out",
        p(&png),
        "--out-tensor",
        p(&strip),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (shape, frames) = Reference::open(&strip).get("sample");
    assert_eq!(shape, [3, 1, 16, 16]);
    let per = 16 * 16;
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    // The same arithmetic per image whatever the batch: equal to rounding (seen: exactly 0).
    assert!(max_diff(&frames[..per], &ends[0]) <= 1e-5, "first frame");
    assert!(max_diff(&frames[2 * per..], &ends[1]) <= 1e-5, "last frame");
    assert!(
        max_diff(&frames[per..2 * per], &ends[0]) > 1e-2,
        "middle frame"
    );
    // One row of 3 frames with 2-pixel gaps.
    assert_eq!(png_size(&png), (3 * 16 + 4 * 2, 16 + 2 * 2));
}

#[test]
fn image_interpolation_writes_a_strip() {
    let m = fixture("class_cond");
    let d = tmpdir("images");
    let (a, b) = (d.join("a.png"), d.join("b.png"));
    let bar = |v: u32| if (6..10).contains(&v) { 255 } else { 0 };
    write_gray_png(&a, 16, 16, &pixels(16, 16, |x, _| bar(x)));
    write_gray_png(&b, 16, 16, &pixels(16, 16, |_, y| bar(y)));
    let out = d.join("strip.png");
    let imgs = format!("{},{}", p(&a), p(&b));
    let (code, err) = kakusan(&[
        "interpolate",
        "--model",
        p(&m),
        "--images",
        &imgs,
        "--t",
        "300",
        "--steps",
        "10",
        "--frames",
        "4",
        "--out",
        p(&out),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("t = 300"), "{err}");
    assert_eq!(png_size(&out), (4 * 16 + 5 * 2, 16 + 2 * 2));
}

#[test]
fn interpolate_bad_input_is_a_clear_error() {
    let m = fixture("class_cond");
    let d = tmpdir("bad");
    let good = d.join("good.png");
    write_gray_png(
        &good,
        16,
        16,
        &pixels(16, 16, |x, y| ((x * 16 + y) % 256) as u8),
    );
    let small = d.join("small.png");
    write_gray_png(&small, 12, 16, &[0; 12 * 16]);
    let missing = d.join("missing.png");
    let out = d.join("x.png");
    let two = |a: &Path, b: &Path| format!("{},{}", p(a), p(b));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--seeds".into(), "7".into()], "exactly two values"),
        (
            vec![
                "--seeds".into(),
                "1,2".into(),
                "--frames".into(),
                "1".into(),
            ],
            "--frames",
        ),
        (vec!["--seeds".into(), "1,x".into()], "not a non-negative"),
        (vec![], "exactly one of --seeds"),
        (vec!["--images".into(), two(&good, &missing)], "missing.png"),
        (vec!["--images".into(), two(&good, &small)], "12×16"),
        (
            vec![
                "--images".into(),
                two(&good, &good),
                "--t".into(),
                "1000".into(),
            ],
            "--t 1000",
        ),
        // The shared sampler flags (SamplerArgs): seeds need DDIM's deterministic paths, and
        // use_clipped_model_output is DDIM's only.
        (
            vec!["--seeds".into(), "1,2".into(), "--eta".into(), "0.5".into()],
            "--eta must be 0",
        ),
        (
            vec![
                "--images".into(),
                two(&good, &good),
                "--sampler".into(),
                "ddpm".into(),
                "--use-clipped-model-output".into(),
            ],
            "use_clipped_model_output only applies to the DDIM sampler",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["interpolate", "--model", p(&m), "--out", p(&out)];
        args.extend(extra.iter().map(String::as_str));
        let (code, err) = kakusan(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("error: ") && l.contains(want)),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn progress_grid_has_one_row_per_image_and_one_column_per_step() {
    let m = fixture("class_cond");
    let d = tmpdir("progress");
    let samples = d.join("s.png");
    let run = |extra: &[&str]| {
        let grid = d.join("grid.png");
        let _ = std::fs::remove_file(&grid);
        let mut args = vec![
            "sample",
            "--model",
            p(&m),
            "--sampler",
            "dpm-solver",
            "--steps",
            "6",
            "-n",
            "2",
            "--out",
            p(&samples),
        ];
        args.extend_from_slice(extra);
        let (code, err) = kakusan(&args);
        (code, err, grid)
    };
    let g = d.join("grid.png");
    let size = |cols: u32, rows: u32| (cols * 16 + (cols + 1) * 2, rows * 16 + (rows + 1) * 2);
    // Default: min(8, steps) evenly spaced steps = all 6 here.
    let (code, err, grid) = run(&["--progress-grid", p(&g)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(png_size(&grid), size(6, 2));
    let (code, err, grid) = run(&["--progress-grid", p(&g), "--progress-steps", "2,4"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(png_size(&grid), size(2, 2));
    // Every 4 steps, and the last: 4, 6.
    let (code, err, grid) = run(&["--progress-grid", p(&g), "--progress-every", "4"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("[4, 6]"), "{err}");
    assert_eq!(png_size(&grid), size(2, 2));
    for (extra, want) in [
        (
            vec!["--progress-grid", p(&g), "--progress-steps", "0,7"],
            "outside 1..=6",
        ),
        (
            vec!["--progress-grid", p(&g), "--progress-steps", "2,b"],
            "`b`",
        ),
        (
            vec![
                "--progress-grid",
                p(&g),
                "--progress-steps",
                "2",
                "--progress-every",
                "2",
            ],
            "at most one",
        ),
        (vec!["--progress-every", "2"], "need --progress-grid"),
    ] {
        let (code, err, _) = run(&extra);
        assert_eq!(code, Some(1), "{extra:?}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("error: ") && l.contains(want)),
            "{extra:?}: {err}"
        );
    }
}
