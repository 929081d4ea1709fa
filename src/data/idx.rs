//! MNIST-style IDX files (<http://yann.lecun.com/exdb/mnist/>): big-endian magic
//! `0x0000_08dd` (u8 data, `dd` dimensions), then `dd` u32 sizes, then the data. Images are
//! `idx3` (N, H, W), labels `idx1` (N). Files may be gzip'd (detected by content).

use super::{image::Planar, Builder};
use crate::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path.display(), e))?;
    gunzip_if_gzip(path, bytes)
}

/// The bytes themselves, or their gunzipped content when they start with the gzip magic.
pub(crate) fn gunzip_if_gzip(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path.display(), format!("gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses an IDX u8 array; returns its dimensions and the data.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |msg: String| Error::file(path.display(), msg);
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX data type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        )));
    }
    let nd = bytes[3] as usize;
    let header = 4 + 4 * nd;
    if nd == 0 || bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("IDX dimensions {dims:?} overflow")))?;
    if bytes.len() - header != count {
        return Err(bad(format!(
            "IDX dimensions {dims:?} need {count} bytes of data, the file has {}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Whether `name` looks like an IDX images file (`train-images-idx3-ubyte`,
/// `train-images.idx3-ubyte`, either `.gz`).
pub(crate) fn is_images_name(name: &str) -> bool {
    name.contains("images-idx3") || name.contains("images.idx3")
}

/// The labels file next to an images file, by the MNIST naming convention, if present.
fn labels_for(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_str()?;
    let base = name
        .replace("images-idx3", "labels-idx1")
        .replace("images.idx3", "labels.idx1");
    let base = base.strip_suffix(".gz").unwrap_or(&base).to_string();
    [base.clone(), format!("{base}.gz")]
        .into_iter()
        .map(|n| images.with_file_name(n))
        .find(|p| p.is_file())
}

/// The images file to use in a folder: `train-*` first, else `t10k-*` / any other.
pub(crate) fn find_images(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_images_name)
        })
        .collect();
    found.sort();
    let train = found.iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("train"))
    });
    train.or(found.first()).cloned()
}

/// Loads an IDX images file (and its labels file, when one is beside it) into `b`; returns
/// whether labels were found.
pub(crate) fn load(images: &Path, b: &mut Builder) -> Result<bool> {
    let image_bytes = read_maybe_gz(images)?;
    let labels = match labels_for(images) {
        Some(lp) => Some((read_maybe_gz(&lp)?, lp)),
        None => None,
    };
    load_bytes(
        images,
        &image_bytes,
        labels.as_ref().map(|(l, p)| (p.as_path(), &l[..])),
        b,
    )
}

/// [`load`] on bytes already read (and gunzipped): the images file, and the labels file
/// with its path, if any. Paths only name the files in errors.
pub(crate) fn load_bytes(
    images: &Path,
    image_bytes: &[u8],
    labels: Option<(&Path, &[u8])>,
    b: &mut Builder,
) -> Result<bool> {
    let (dims, data) = parse(images, image_bytes)?;
    let (n, h, w, c) = match dims[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] if c == 1 || c == 3 => (n, h, w, c),
        _ => {
            return Err(Error::file(
                images.display(),
                format!("IDX images must be (N, H, W) or (N, H, W, 1|3), got {dims:?}"),
            ))
        }
    };
    if n == 0 || h == 0 || w == 0 {
        return Err(Error::file(images.display(), "IDX file holds no images"));
    }
    let labels = match labels {
        Some((lp, label_bytes)) => {
            let (ld, l) = parse(lp, label_bytes)?;
            if ld != [n] {
                return Err(Error::file(
                    lp.display(),
                    format!("labels have shape {ld:?}, the images file holds {n} images"),
                ));
            }
            Some(l)
        }
        None => None,
    };
    for (i, chunk) in data.chunks_exact(h * w * c).enumerate() {
        let label = labels.as_ref().map_or(0, |l| l[i] as u32);
        b.push(&Planar::from_interleaved(chunk, h, w, c, c), label);
    }
    Ok(labels.is_some())
}
