//! Reconstruction anomaly scores on the shipped MNIST model separate real digits from
//! out-of-distribution images (tests/fixtures/anomaly: 16 real digits, 4 each of inverted,
//! pixel-shuffled, uniform-noise and 90°-rotated digits; made by make_anomaly_set.py).
//!
//! The floor is well below what the shipped model reaches (docs/toolbox.md), and a model
//! whose output is always zero (ε̂ = 0: the "reconstruction" is x_t/√ᾱ_t, clipped) fails it;
//! the test checks both.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{fixture, Reference};
use kakusan::diffusion::anomaly::{auroc, ReconstructionRun, ReconstructionSettings};
use kakusan::diffusion::likelihood::ImageBatch;
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::weights::Weights;
use kakusan::model::{read_model_dir, Model};

/// AUROC of real vs all anomalies that the test demands.
const MIN_AUROC: f64 = 0.75;

fn auroc_of(ctx: &GpuContext, model: &Model, weights: &Weights) -> f64 {
    let r = Reference::open(&fixture("anomaly").join("mnist_ood.safetensors"));
    let (shape, x) = r.get("sample");
    let kind = r.get("kind").1;
    let n = shape[0];
    let null = model
        .config
        .num_class_embeds
        .map(|k| vec![(k - 1) as u32; n]);
    let model = Model {
        weights: weights.clone(),
        ..model.clone()
    };
    let mut run = ReconstructionRun::new(
        ctx,
        &model,
        ImageBatch {
            data: &x,
            shape: &shape,
            class_labels: null.as_deref(),
        },
        ReconstructionSettings {
            t: 300,
            steps: 3,
            repeats: 1,
            seed: 0,
        },
    )
    .unwrap();
    while block_on(run.step(ctx)).unwrap().is_some() {}
    let s = run.scores();
    let pick = |real: bool| -> Vec<f64> {
        s.iter()
            .zip(&kind)
            .filter(|(_, &k)| (k == 0.0) == real)
            .map(|(&v, _)| v)
            .collect()
    };
    auroc(&pick(true), &pick(false))
}

#[test]
fn reconstruction_error_separates_real_digits_from_anomalies() {
    common::xdg();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/mnist");
    let model = Model::from_files(&read_model_dir(&dir).unwrap()).unwrap();
    let ctx = block_on(GpuContext::new()).unwrap();
    let got = auroc_of(&ctx, &model, &model.weights);
    println!("shipped model: AUROC {got:.4}");
    assert!(got >= MIN_AUROC, "AUROC {got} < {MIN_AUROC}");

    // A model that predicts ε̂ = 0 everywhere must fail the same bound.
    let mut zero = model.weights.clone();
    for name in ["conv_out.weight", "conv_out.bias"] {
        zero.get_mut(name).unwrap().1.fill(0.0);
    }
    let bad = auroc_of(&ctx, &model, &zero);
    println!("zero-output model: AUROC {bad:.4}");
    assert!(bad < MIN_AUROC, "a zero-output model reaches AUROC {bad}");
}
