//! A quality evaluator the project owns (native only): a digit classifier trained with
//! kakusan's own kernels ([`classifier`]), the Fréchet distance in its feature space
//! ([`fid`]), a fixed pixel-statistics feature space for other images ([`pixel_stats`],
//! `kakusan eval --data`), and the bookkeeping of what the evaluator compares against — a held-out
//! split of the embedded MNIST digits. No printing and no files here: `kakusan eval`
//! (src/cli/eval.rs) does that.
//!
//! The split: the embedded 10,000 digits are ordered round robin over the classes (see
//! assets/mnist/README.md), so every fifth round of ten — index i with (i / 10) mod 5 = 4 —
//! is held out: 2,000 digits, class-balanced wherever the file is. The classifier never
//! trains on them. The diffusion trainer (`kakusan train`) uses all 10,000 unless told
//! `--holdout eval` (the same split, `crate::data::split`), so the shipped diffusion model
//! HAS seen the held-out digits; for such a model the FID reference is "real digits of the
//! training distribution", not unseen test digits.

pub mod classifier;
pub mod fid;
pub mod pixel_stats;

use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// The shipped digit classifier (assets/classifier/classifier.safetensors, trained by
/// `kakusan eval --train-classifier`), embedded so the binary is self-contained.
pub const SHIPPED_CLASSIFIER: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/classifier/classifier.safetensors"
));

/// The shipped classifier's weights (an MLP of widths [`classifier::DIGIT_DIMS`]).
pub fn shipped_classifier() -> Result<classifier::MlpWeights> {
    classifier::MlpWeights::from_safetensors(
        SHIPPED_CLASSIFIER,
        &classifier::DIGIT_DIMS,
        "embedded classifier (assets/classifier/classifier.safetensors)",
    )
}

/// Whether embedded digit `index` belongs to the held-out split (module docs).
pub fn is_held_out(index: usize) -> bool {
    crate::data::split::evaluator_held_out(index)
}

/// (classifier training indices, held-out indices) of a dataset of `len` digits.
pub fn split_indices(len: usize) -> (Vec<usize>, Vec<usize>) {
    (0..len).partition(|&i| !is_held_out(i))
}

/// Two disjoint draws of `n` held-out indices each, chosen by a seeded shuffle: the first
/// is the FID reference for samples, the second gives the real-vs-real floor.
pub fn reference_draws(
    held_out: &[usize],
    n: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if 2 * n > held_out.len() {
        return Err(Error::config(format!(
            "the FID floor needs two disjoint draws of {n} held-out digits, but only {} are held out (use -n ≤ {})",
            held_out.len(),
            held_out.len() / 2
        )));
    }
    let mut idx = held_out.to_vec();
    let mut rng = SplitMix64(seed);
    // Fisher–Yates.
    for i in (1..idx.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    Ok((idx[..n].to_vec(), idx[n..2 * n].to_vec()))
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f32]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] as f64 + v[m] as f64) / 2.0
    }
}

/// Fraction of `predicted` equal to `wanted`, overall and per class (`classes` entries; NaN
/// for a class never wanted).
pub fn class_accuracy(predicted: &[u32], wanted: &[u32], classes: usize) -> (f64, Vec<f64>) {
    let mut hit = vec![0usize; classes];
    let mut total = vec![0usize; classes];
    for (&p, &w) in predicted.iter().zip(wanted) {
        if let Some(t) = total.get_mut(w as usize) {
            *t += 1;
            hit[w as usize] += (p == w) as usize;
        }
    }
    let all = hit.iter().sum::<usize>() as f64 / predicted.len().max(1) as f64;
    let per = hit
        .iter()
        .zip(&total)
        .map(|(&h, &t)| {
            if t == 0 {
                f64::NAN
            } else {
                h as f64 / t as f64
            }
        })
        .collect();
    (all, per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_disjoint_balanced_and_fixed() {
        let (train, held) = split_indices(10_000);
        assert_eq!((train.len(), held.len()), (8000, 2000));
        assert!(held.iter().all(|&i| is_held_out(i)));
        assert!(train.iter().all(|&i| !is_held_out(i)));
        assert_eq!(&held[..3], &[40, 41, 42]);
        // Round robin order: in the balanced part every class is held out equally often.
        let mut per_class = [0usize; 10];
        for &i in held.iter().filter(|&&i| i < 8630) {
            per_class[i % 10] += 1;
        }
        assert!(
            per_class.iter().all(|&c| c == per_class[0]),
            "{per_class:?}"
        );
    }

    #[test]
    fn reference_draws_are_disjoint_and_seeded() {
        let (_, held) = split_indices(10_000);
        let (a, b) = reference_draws(&held, 1000, 3).unwrap();
        assert_eq!((a.len(), b.len()), (1000, 1000));
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 2000);
        assert_eq!(reference_draws(&held, 1000, 3).unwrap().0, a);
        assert_ne!(reference_draws(&held, 1000, 4).unwrap().0, a);
        assert!(reference_draws(&held, 1001, 3).is_err());
    }

    #[test]
    fn median_and_accuracy() {
        assert_eq!(median(&[3.0, -1.0, 2.0]), 2.0);
        assert_eq!(median(&[3.0, -1.0, 2.0, 0.0]), 1.0);
        assert!(median(&[]).is_nan());
        let (all, per) = class_accuracy(&[0, 1, 1, 2], &[0, 1, 2, 2], 4);
        assert_eq!(all, 0.75);
        assert_eq!(&per[..3], &[1.0, 1.0, 0.5]);
        assert!(per[3].is_nan());
    }
}
