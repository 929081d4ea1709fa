//! Running the `kakusan` binary from a test, and the scratch files such tests write.

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::{Dtype, TensorView};

use super::{fixture, xdg};

/// What one run of the binary gave.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `kakusan args`; a panic in it fails the test.
pub fn run(args: &[&str]) -> Run {
    xdg();
    // option_env!: test binaries that share tests/common but run no command still build
    // when the binary is not (e.g. without the `cli` feature).
    let Some(exe) = option_env!("CARGO_BIN_EXE_kakusan") else {
        panic!("this test runs the kakusan binary: build with the `cli` feature");
    };
    let out = Command::new(exe).args(args).output().expect("run kakusan");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "kakusan panicked on {args:?}:\n{}",
        run.stderr
    );
    run
}

/// `kakusan args` as (succeeded, stdout, stderr).
pub fn kakusan(args: &[&str]) -> (bool, String, String) {
    let r = run(args);
    (r.code == Some(0), r.stdout, r.stderr)
}

/// As [`kakusan`], and a failure must be a clear error: exit 1 with an `error: ` line.
pub fn kakusan_strict(args: &[&str]) -> (bool, String, String) {
    let r = run(args);
    let ok = r.code == Some(0);
    if !ok {
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("error: "), "{args:?}: {}", r.stderr);
    }
    (ok, r.stdout, r.stderr)
}

/// `kakusan args` as (exit code, stderr).
pub fn kakusan_code(args: &[&str]) -> (Option<i32>, String) {
    let r = run(args);
    (r.code, r.stderr)
}

/// Expect exit 1 with an `error:` line containing every one of `words`.
pub fn expect_error(args: &[&str], words: &[&str]) {
    let (code, err) = kakusan_code(args);
    assert_eq!(code, Some(1), "{args:?} should fail with exit 1:\n{err}");
    assert!(err.contains("error:"), "{args:?}: no error line:\n{err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: the message lacks {w:?}:\n{err}");
    }
}

/// A fresh scratch folder for this test binary, process and `name`.
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kakusan-{}-{}-{name}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of a fixture model folder (in `tmpdir(into)`) that a test may break.
pub fn copy_fixture(name: &str, into: &str) -> PathBuf {
    let d = tmpdir(into);
    for f in [
        "config.json",
        "diffusion_pytorch_model.safetensors",
        "scheduler_config.json",
    ] {
        std::fs::copy(fixture(name).join(f), d.join(f)).unwrap();
    }
    d
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Write f32 tensors (name, shape, values) as a safetensors file.
pub fn write_f32_tensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (*n, TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Write an 8-bit greyscale PNG of `w` × `h` pixels (row-major).
pub fn write_gray_png(path: &Path, w: u32, h: u32, px: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(px).unwrap();
}

/// `w` × `h` pixels (row-major) with the value `f(x, y)`.
pub fn pixels(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| f(x, y))
        .collect()
}

/// A PNG's (width, height).
pub fn png_size(path: &Path) -> (u32, u32) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let info = dec.read_info().unwrap();
    (info.info().width, info.info().height)
}
