//! CIFAR-10 binary batches (<https://www.cs.toronto.edu/~kriz/cifar.html>, "binary
//! version"): records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B, each a
//! 32x32 row-major plane). A folder holds `data_batch_1.bin` … `data_batch_5.bin` (the
//! training set; `test_batch.bin` is left out) and `batches.meta.txt` with class names.

use super::{image::Planar, Builder};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;
const RECORD: usize = 1 + PIXELS;

/// The CIFAR-10 class names, used when `batches.meta.txt` is absent.
const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// `data_batch_*.bin` files in `dir`, sorted by name.
pub(crate) fn find_batches(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("data_batch_") && n.ends_with(".bin"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    found
}

/// Loads the given batch files into `b`; returns the class names.
pub(crate) fn load(files: &[PathBuf], b: &mut Builder) -> Result<Vec<String>> {
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| Error::file(f.display(), e))?;
        load_bytes(f, &bytes, b)?;
    }
    // Class names from batches.meta.txt beside the first file, when it lists ten.
    let meta = files
        .first()
        .map(|f| f.with_file_name("batches.meta.txt"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|names| names.len() == 10);
    Ok(meta.unwrap_or_else(class_names))
}

/// The default class names.
pub(crate) fn class_names() -> Vec<String> {
    CLASSES.iter().map(|s| s.to_string()).collect()
}

/// Loads one batch file's bytes into `b` (`f` only names the file in errors).
pub(crate) fn load_bytes(f: &Path, bytes: &[u8], b: &mut Builder) -> Result<()> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(Error::file(
            f.display(),
            format!(
                "{} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes: \
                 1 label + 3072 pixels); CIFAR-100 and the Python pickles are not supported",
                bytes.len()
            ),
        ));
    }
    for rec in bytes.chunks_exact(RECORD) {
        if rec[0] >= 10 {
            return Err(Error::file(
                f.display(),
                format!("label {} is not a CIFAR-10 class (0..9)", rec[0]),
            ));
        }
        let img = Planar {
            c: 3,
            h: SIDE,
            w: SIDE,
            data: rec[1..].to_vec(),
        };
        b.push(&img, rec[0] as u32);
    }
    Ok(())
}
