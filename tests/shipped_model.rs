//! The shipped MNIST model (assets/models/mnist) draws digits of the class it is asked for.
//!
//! "Recognisable digits of the requested class" made checkable: sample one digit per class
//! for a few seeds with DDIM and classifier-free guidance, and label each sample by its
//! nearest neighbour (Euclidean, pixels in [-1, 1]) among the 10,000 embedded MNIST digits.
//! 1-NN labels real MNIST test digits correctly ~95 % of the time with this training set, and
//! noise or blobs land on arbitrary classes (~10 %), so the bound below fails for a model
//! that does not draw the requested digit.
//!
//! `KAKUSAN_EVAL_MODEL=runs/mnist cargo test --release --test shipped_model -- --nocapture`
//! evaluates a checkpoint during training the same way.

#![cfg(not(target_arch = "wasm32"))]

use kakusan::data::load_default_mnist;
use kakusan::diffusion::sampler::{SampleSettings, SamplingRun};
use kakusan::diffusion::schedule::Sampler;
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};

/// Samples per class: seeds × 1.
const SEEDS: [u64; 2] = [0, 1];
/// Fraction of samples whose nearest training digit has the requested label.
const MIN_ACCURACY: f64 = 0.85;

fn model_dir() -> std::path::PathBuf {
    match std::env::var_os("KAKUSAN_EVAL_MODEL") {
        Some(p) => p.into(),
        None => concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/mnist").into(),
    }
}

#[test]
fn shipped_model_draws_the_requested_digits() {
    let dir = model_dir();
    let files = read_model_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let model = Model::from_files(&files).unwrap();
    let c = &model.config;
    assert_eq!(c.num_class_embeds, Some(11), "10 digits + the null class");
    assert_eq!((c.in_channels, c.sample_size), (1, [28, 28]));

    let data = load_default_mnist().unwrap();
    let pix = data.image_len();
    let train: Vec<f32> = data
        .images
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();

    let ctx = block_on(GpuContext::new()).unwrap();
    let labels: Vec<u32> = (0..10).collect();
    let (mut right, mut total) = (0usize, 0usize);
    let mut confusion = Vec::new();
    for seed in SEEDS {
        let mut run = SamplingRun::new(
            &ctx,
            &model.config,
            &model.weights,
            &model.scheduler,
            SampleSettings {
                sampler: Sampler::Ddim { eta: 0.0 },
                steps: 25,
                seed,
                batch: labels.len(),
                class_labels: Some(labels.clone()),
                guidance: Some(2.5),
            },
        )
        .unwrap();
        while run.step(&ctx).unwrap().is_some() {}
        let x0 = block_on(ctx.read(run.x_t())).unwrap();
        for (i, &want) in labels.iter().enumerate() {
            let s = &x0[i * pix..(i + 1) * pix];
            assert!(s.iter().all(|v| v.is_finite()));
            let nearest = (0..data.len())
                .map(|j| {
                    let d: f32 = train[j * pix..(j + 1) * pix]
                        .iter()
                        .zip(s)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum();
                    (d, data.labels[j])
                })
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap()
                .1;
            total += 1;
            right += (nearest == want) as usize;
            confusion.push(format!("{want}→{nearest}"));
        }
    }
    let accuracy = right as f64 / total as f64;
    println!(
        "{}: {right}/{total} samples nearest to a training digit of the requested class ({:.0} %): {}",
        dir.display(),
        100.0 * accuracy,
        confusion.join(" ")
    );
    assert!(
        accuracy >= MIN_ACCURACY,
        "only {right} of {total} samples look like the requested digit: {}",
        confusion.join(" ")
    );
}
