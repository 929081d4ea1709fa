//! Helpers shared by the integration tests, native and in the browser (tests/web_smoke.rs
//! reads the same references from bytes embedded in its binary: no file system there).
#![allow(dead_code)]

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// All tensors of a safetensors file as f32 (ints converted), with shapes.
pub struct Reference {
    bytes: Cow<'static, [u8]>,
}

impl Reference {
    pub fn open(path: &Path) -> Self {
        Reference {
            bytes: Cow::Owned(
                std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            ),
        }
    }
    /// A safetensors file's bytes, e.g. from `include_bytes!`.
    pub fn from_bytes(bytes: &'static [u8]) -> Self {
        Reference {
            bytes: Cow::Borrowed(bytes),
        }
    }
    pub fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes)
            .unwrap()
            .tensor(name)
            .is_ok()
    }
    pub fn get(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("reference has no {name}"));
        let d = t.data();
        let v = match t.dtype() {
            Dtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => panic!("{name}: unexpected dtype {other:?}"),
        };
        (t.shape().to_vec(), v)
    }
    /// The `class_labels` tensor, if the reference has one.
    pub fn class_labels(&self) -> Option<Vec<u32>> {
        self.has("class_labels").then(|| {
            self.get("class_labels")
                .1
                .iter()
                .map(|&l| l as u32)
                .collect()
        })
    }
}

/// ‖a − b‖₂ / ‖b‖₂
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

pub fn xdg() {
    let dir = std::env::temp_dir().join("kakusan-xdg");
    let _ = std::fs::create_dir_all(&dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: set before any thread reads the environment in this test binary.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}
