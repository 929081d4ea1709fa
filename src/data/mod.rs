//! Training data (native only): the embedded MNIST subset, image folders, MNIST IDX files
//! and CIFAR-10 binary batches, all held in memory as u8 (N, C, H, W) at the model's
//! channel count and size, plus a seeded, resumable batch sampler.
//!
//! Preprocessing matches diffusers' `train_unconditional.py`: resize the short side with
//! bilinear (antialiased) filtering, center crop, scale to [-1, 1] (`x / 127.5 - 1`). No
//! random flips: augmentation, if wanted, belongs to the trainer.

mod cifar;
mod folder;
mod idx;
pub mod image;
pub mod split;

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The committed default dataset (see assets/mnist/README.md): 10,000 MNIST digits, U8
/// `images` [10000, 1, 28, 28] and U8 `labels` [10000]. Embedded so the binary is
/// self-contained.
pub const DEFAULT_MNIST: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/mnist/mnist10k.safetensors"
));

/// An in-memory image dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Pixels, u8, (N, C, H, W) row-major.
    pub images: Vec<u8>,
    /// One label per image, `< num_classes` (all 0 when unlabeled).
    pub labels: Vec<u32>,
    /// Number of classes (1 for an unlabeled dataset).
    pub num_classes: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `num_classes` names (for an unlabeled dataset: `["unlabeled"]`).
    pub class_names: Vec<String>,
    /// Whether the labels mean anything (class subfolders, IDX labels file, CIFAR).
    pub labeled: bool,
    /// Files that could not be decoded and were left out, with the reason. The library does
    /// not print; the CLI reports these.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (C·H·W).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `i` as u8 (C, H, W).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Writes the images `indices` to `out` as f32 (B, C, H, W) in [-1, 1]: `x / 127.5 - 1`.
    /// `out` must hold exactly `indices.len() · C·H·W` values.
    pub fn batch(&self, indices: &[usize], out: &mut [f32]) -> Result<()> {
        let n = self.image_len();
        if out.len() != indices.len() * n {
            return Err(Error::shape(format!(
                "batch: out holds {} values, {} images of {}x{}x{} need {}",
                out.len(),
                indices.len(),
                self.channels,
                self.height,
                self.width,
                indices.len() * n
            )));
        }
        for (dst, &i) in out.chunks_exact_mut(n.max(1)).zip(indices) {
            if i >= self.len() {
                return Err(Error::shape(format!(
                    "batch: index {i} is out of range for a dataset of {} images",
                    self.len()
                )));
            }
            for (d, &p) in dst.iter_mut().zip(self.image(i)) {
                *d = p as f32 / 127.5 - 1.0;
            }
        }
        Ok(())
    }

    /// The labels of `indices` (for class-conditional training).
    pub fn batch_labels(&self, indices: &[usize]) -> Result<Vec<u32>> {
        indices
            .iter()
            .map(|&i| {
                self.labels.get(i).copied().ok_or_else(|| {
                    Error::shape(format!(
                        "batch_labels: index {i} is out of range for a dataset of {} images",
                        self.len()
                    ))
                })
            })
            .collect()
    }

    /// The images at `indices` (in that order), with their labels; an index out of range
    /// is an error.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let per = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::Other(format!(
                    "image index {i} is out of range for a dataset of {}",
                    self.len()
                )));
            }
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Dataset {
            images,
            labels,
            skipped: Vec::new(),
            ..self.clone()
        })
    }

    /// This dataset converted to `channels` (1 or 3) and resized + center-cropped to
    /// `size` = [H, W] (a no-op copy when they already match).
    pub fn converted(&self, channels: usize, size: [usize; 2]) -> Result<Dataset> {
        let mut b = Builder::new(channels, size)?;
        for i in 0..self.len() {
            let img = image::Planar {
                c: self.channels,
                h: self.height,
                w: self.width,
                data: self.image(i).to_vec(),
            };
            b.push(&img, self.labels[i]);
        }
        b.skipped = self.skipped.clone();
        b.finish(
            "converted dataset",
            self.labeled.then(|| self.class_names.clone()),
        )
    }
}

/// Accumulates images already converted to the target format, so a loader never holds
/// more than one decoded source image.
pub(crate) struct Builder {
    channels: usize,
    size: [usize; 2],
    images: Vec<u8>,
    labels: Vec<u32>,
    skipped: Vec<(PathBuf, String)>,
}

impl Builder {
    fn new(channels: usize, size: [usize; 2]) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::Other(format!(
                "datasets are loaded as 1 (grey) or 3 (RGB) channels, not {channels}"
            )));
        }
        if size[0] == 0 || size[1] == 0 {
            return Err(Error::Other(format!("image size {size:?} is empty")));
        }
        Ok(Builder {
            channels,
            size,
            images: Vec::new(),
            labels: Vec::new(),
            skipped: Vec::new(),
        })
    }

    pub(crate) fn push(&mut self, img: &image::Planar, label: u32) {
        image::convert_into(img, self.channels, self.size, &mut self.images);
        self.labels.push(label);
    }

    pub(crate) fn skip(&mut self, path: PathBuf, why: impl Into<String>) {
        self.skipped.push((path, why.into()));
    }

    /// The dataset; `class_names` `None` means unlabeled. Errors when no image was loaded.
    fn finish(
        self,
        what: impl std::fmt::Display,
        class_names: Option<Vec<String>>,
    ) -> Result<Dataset> {
        if self.labels.is_empty() {
            let mut msg = "no usable images".to_string();
            if let Some((p, why)) = self.skipped.first() {
                msg += &format!(
                    " ({} skipped, e.g. {}: {why})",
                    self.skipped.len(),
                    p.display()
                );
            }
            return Err(Error::file(what, msg));
        }
        let labeled = class_names.is_some();
        let class_names = class_names.unwrap_or_else(|| vec!["unlabeled".to_string()]);
        let num_classes = class_names.len();
        if let Some(&bad) = self.labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(Error::file(
                what,
                format!("label {bad} is out of range for {num_classes} classes"),
            ));
        }
        Ok(Dataset {
            images: self.images,
            labels: self.labels,
            num_classes,
            channels: self.channels,
            height: self.size[0],
            width: self.size[1],
            class_names,
            labeled,
            skipped: self.skipped,
        })
    }
}

/// The embedded 10,000-digit MNIST subset at its own format: 1 channel, 28 x 28, labels
/// 0–9 (use [`Dataset::converted`] for another size).
pub fn load_default_mnist() -> Result<Dataset> {
    from_safetensors(DEFAULT_MNIST, "embedded MNIST")
}

/// A dataset from safetensors bytes holding U8 `images` (N, C, H, W) and U8/I64/U32
/// `labels` (N) (optional; absent = unlabeled). Class names are "0", "1", … up to the
/// largest label.
pub fn from_safetensors(bytes: &[u8], what: &str) -> Result<Dataset> {
    use safetensors::{Dtype, SafeTensors};
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::file(what, e))?;
    let images = st
        .tensor("images")
        .map_err(|e| Error::file(what, format!("images: {e}")))?;
    let shape = images.shape().to_vec();
    if images.dtype() != Dtype::U8 || shape.len() != 4 || !(shape[1] == 1 || shape[1] == 3) {
        return Err(Error::file(
            what,
            format!(
                "images must be U8 (N, 1|3, H, W), got {:?} {shape:?}",
                images.dtype()
            ),
        ));
    }
    let n = shape[0];
    let labels: Option<Vec<u32>> = match st.tensor("labels") {
        Err(_) => None,
        Ok(l) => {
            let d = l.data();
            let v: Vec<u32> = match l.dtype() {
                Dtype::U8 => d.iter().map(|&x| x as u32).collect(),
                Dtype::U32 => d
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|b| {
                        i64::from_le_bytes(b.try_into().unwrap()).clamp(0, u32::MAX as i64) as u32
                    })
                    .collect(),
                other => {
                    return Err(Error::file(
                        what,
                        format!("labels must be U8, U32 or I64, got {other:?}"),
                    ))
                }
            };
            if l.shape() != [n] {
                return Err(Error::file(
                    what,
                    format!("labels have shape {:?}, images hold {n}", l.shape()),
                ));
            }
            Some(v)
        }
    };
    if n == 0 {
        return Err(Error::file(what, "no images"));
    }
    let labeled = labels.is_some();
    let labels = labels.unwrap_or_else(|| vec![0; n]);
    let num_classes = labels.iter().max().map_or(1, |&m| m as usize + 1);
    Ok(Dataset {
        images: images.data().to_vec(),
        labels,
        num_classes,
        channels: shape[1],
        height: shape[2],
        width: shape[3],
        class_names: if labeled {
            (0..num_classes).map(|i| i.to_string()).collect()
        } else {
            vec!["unlabeled".into()]
        },
        labeled,
        skipped: Vec::new(),
    })
}

/// Loads the dataset at `path`, converted to `channels` (1 or 3; RGB -> grey by BT.601
/// luma, grey -> RGB by replication) and resized + center-cropped to `size` = [H, W].
///
/// What `path` is decides the format:
/// - a folder with `data_batch_*.bin`, or a `.bin` file: CIFAR-10 binary batches;
/// - a folder with `train-images-idx3-ubyte` (or `t10k-…`, `.gz` allowed), or such a file
///   (any IDX file, by content): MNIST IDX, labels from the matching `…labels-idx1…` file;
/// - any other folder: PNG/JPEG images; subfolders are the classes (sorted), files
///   directly in the folder one unlabeled class. Undecodable images are skipped and listed
///   in [`Dataset::skipped`].
///
/// An empty or unreadable dataset is an error.
pub fn load(path: &Path, channels: usize, size: [usize; 2]) -> Result<Dataset> {
    let mut b = Builder::new(channels, size)?;
    let what = path.display();
    if path.is_dir() {
        let batches = cifar::find_batches(path);
        if !batches.is_empty() {
            let names = cifar::load(&batches, &mut b)?;
            return b.finish(what, Some(names));
        }
        if let Some(images) = idx::find_images(path) {
            let labeled = idx::load(&images, &mut b)?;
            let names = labeled.then(|| digit_names(&b.labels));
            return b.finish(what, names);
        }
        let names = folder::load(path, &mut b)?;
        return b.finish(what, names);
    }
    if !path.exists() {
        return Err(Error::file(what, "no such file or folder"));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if name.ends_with(".bin") {
        let names = cifar::load(&[path.to_path_buf()], &mut b)?;
        return b.finish(what, Some(names));
    }
    let head = idx::read_maybe_gz(path)?;
    if head.len() >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 0x08 {
        let labeled = idx::load(path, &mut b)?;
        let names = labeled.then(|| digit_names(&b.labels));
        return b.finish(what, names);
    }
    if head.starts_with(&[0xff, 0xd8]) || head.starts_with(b"\x89PNG") {
        return Err(Error::file(
            what,
            "a single image is not a dataset; give the folder that holds the images",
        ));
    }
    Err(Error::file(
        what,
        "not a dataset: expected an image folder, MNIST IDX files or CIFAR-10 .bin batches",
    ))
}

/// Decodes one PNG or JPEG (by content) to grey or RGB planes: what an image folder's
/// loader does with each file (the error is the reason it would be skipped).
pub fn decode_image(bytes: &[u8]) -> std::result::Result<image::Planar, String> {
    folder::decode(bytes)
}

/// An MNIST IDX dataset from the bytes of its images file and, optionally, its labels file
/// (either may be gzip'd), converted like [`load`]; `what` names the data in errors.
pub fn idx_from_bytes(
    what: &str,
    images: &[u8],
    labels: Option<&[u8]>,
    channels: usize,
    size: [usize; 2],
) -> Result<Dataset> {
    let mut b = Builder::new(channels, size)?;
    let images_path = Path::new(what);
    let labels_path = images_path.with_extension("labels");
    let images = idx::gunzip_if_gzip(images_path, images.to_vec())?;
    let labels = match labels {
        Some(l) => Some(idx::gunzip_if_gzip(&labels_path, l.to_vec())?),
        None => None,
    };
    let labeled = idx::load_bytes(
        images_path,
        &images,
        labels.as_deref().map(|l| (labels_path.as_path(), l)),
        &mut b,
    )?;
    let names = labeled.then(|| digit_names(&b.labels));
    b.finish(what, names)
}

/// A CIFAR-10 dataset from the bytes of one binary batch file, converted like [`load`];
/// `what` names the data in errors.
pub fn cifar_from_bytes(
    what: &str,
    batch: &[u8],
    channels: usize,
    size: [usize; 2],
) -> Result<Dataset> {
    let mut b = Builder::new(channels, size)?;
    cifar::load_bytes(Path::new(what), batch, &mut b)?;
    b.finish(what, Some(cifar::class_names()))
}

/// "0", "1", … for the classes of numerically labeled data (IDX).
fn digit_names(labels: &[u32]) -> Vec<String> {
    let k = labels.iter().max().map_or(1, |&m| m as usize + 1);
    (0..k).map(|i| i.to_string()).collect()
}

pub use crate::rng::SplitMix64;

/// Endless batches of dataset indices: each epoch is a fresh seeded permutation of
/// 0..len, and batches are cut from the concatenated epochs, so every batch has exactly
/// `batch_size` indices (a batch may straddle two epochs) and every image is seen once per
/// epoch. The whole state is three u64s ([`BatchSampler::state`]), and the permutation of
/// epoch e depends only on (seed, e), so a resumed run continues the exact same sequence.
#[derive(Clone, Debug)]
pub struct BatchSampler {
    len: usize,
    batch_size: usize,
    seed: u64,
    epoch: u64,
    pos: usize,
    perm: Vec<usize>,
}

impl BatchSampler {
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Result<Self> {
        Self::from_state(len, batch_size, [seed, 0, 0])
    }

    /// Rebuilds a sampler from [`BatchSampler::state`]; `len` and `batch_size` must be the
    /// ones it was saved with (the caller stores them with the checkpoint).
    pub fn from_state(len: usize, batch_size: usize, state: [u64; 3]) -> Result<Self> {
        let [seed, epoch, pos] = state;
        if len == 0 || batch_size == 0 {
            return Err(Error::Other(format!(
                "batch sampler: dataset size {len} and batch size {batch_size} must be positive"
            )));
        }
        if pos > len as u64 {
            return Err(Error::Other(format!(
                "batch sampler state: position {pos} is past the dataset size {len} \
                 (was it saved for another dataset?)"
            )));
        }
        Ok(BatchSampler {
            len,
            batch_size,
            seed,
            epoch,
            pos: pos as usize,
            perm: permutation(len, seed, epoch),
        })
    }

    /// [seed, epoch, position within the epoch]; see [`BatchSampler::from_state`].
    pub fn state(&self) -> [u64; 3] {
        [self.seed, self.epoch, self.pos as u64]
    }

    /// Completed passes over the data.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The next `batch_size` indices.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.batch_size);
        while out.len() < self.batch_size {
            if self.pos == self.len {
                self.epoch += 1;
                self.pos = 0;
                self.perm = permutation(self.len, self.seed, self.epoch);
            }
            let take = (self.batch_size - out.len()).min(self.len - self.pos);
            out.extend_from_slice(&self.perm[self.pos..self.pos + take]);
            self.pos += take;
        }
        out
    }
}

/// Fisher–Yates permutation of 0..len seeded by (seed, epoch).
fn permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed ^ SplitMix64(epoch).next_u64());
    let mut p: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        p.swap(i, rng.below(i as u64 + 1) as usize);
    }
    p
}

#[cfg(test)]
mod tests;
