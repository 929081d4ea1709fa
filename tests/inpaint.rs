//! RePaint inpainting: known pixels come back exactly (tiny fixture model, with jumps and
//! guidance), and on the shipped MNIST model digits with the bottom half removed get a
//! bottom half of the right class.
//!
//! The class check looks at the generated region only: the label of the training digit
//! whose bottom half is nearest (Euclidean) to the generated bottom half, the source digit
//! itself left out. (Judging the whole image, as tests/shipped_model.rs does, cannot fail
//! here: the kept top half decides the nearest digit even when the bottom is plain grey or
//! noise — 7–10 of 10 right in a numpy check. On bottom halves only, the true bottoms score
//! 82 % and grey, black or noise fills ~10 % over 500 digits; see docs/toolbox.md.)
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::fixture;
use kakusan::data::load_default_mnist;
use kakusan::diffusion::repaint::{RepaintRun, RepaintSettings};
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};

fn inpaint(
    ctx: &GpuContext,
    model: &Model,
    image: &[f32],
    mask: &[f32],
    shape: &[usize],
    settings: RepaintSettings,
) -> Vec<f32> {
    let mut run = RepaintRun::new(
        ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        image,
        mask,
        shape,
        settings,
    )
    .unwrap();
    while block_on(run.step(ctx)).unwrap().is_some() {}
    run.result()
}

#[test]
fn known_pixels_come_back_exactly() {
    common::xdg();
    let dir = fixture("likelihood");
    let model = Model::from_files(&read_model_dir(&dir).unwrap()).unwrap();
    let ctx = block_on(GpuContext::new()).unwrap();
    let shape = [2, 1, 8, 8];
    // Arbitrary f32 values (not on the 8-bit grid) and an irregular mask.
    let image: Vec<f32> = (0..128)
        .map(|i| ((i * 7919) % 1000) as f32 / 499.7 - 1.0)
        .collect();
    let mask: Vec<f32> = (0..128).map(|i| ((i * 13) % 5 < 2) as u8 as f32).collect();
    let out = inpaint(
        &ctx,
        &model,
        &image,
        &mask,
        &shape,
        RepaintSettings {
            steps: 6,
            jump_length: 2,
            jump_n_sample: 2,
            class_labels: Some(vec![1, 2]),
            guidance: Some(2.0),
            seed: 5,
        },
    );
    let (mut kept, mut filled_changed) = (0, 0);
    for i in 0..128 {
        assert!(out[i].is_finite());
        if mask[i] == 1.0 {
            assert_eq!(
                out[i].to_bits(),
                image[i].to_bits(),
                "known pixel {i} changed"
            );
            kept += 1;
        } else if out[i] != image[i] {
            filled_changed += 1;
        }
    }
    assert!(kept > 20);
    assert!(filled_changed > 20, "the unknown pixels were not generated");
}

/// Digits 8100..8110 of the embedded set (one per class), bottom 14 rows removed and
/// regenerated (conditioned on the digit's class with guidance w, or on the null class);
/// returns how many generated bottom halves are nearest to the bottom half of a training
/// digit of their own class, the source digit itself excluded.
fn completed_digits_right(
    steps: usize,
    jump_length: usize,
    jump_n_sample: usize,
    guidance: Option<f32>,
) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/mnist");
    let model = Model::from_files(&read_model_dir(&dir).unwrap()).unwrap();
    let data = load_default_mnist().unwrap();
    let pix = data.image_len();
    let idx: Vec<usize> = (8100..8110).collect();
    let mut image = vec![0.0f32; idx.len() * pix];
    data.batch(&idx, &mut image).unwrap();
    let mask: Vec<f32> = (0..idx.len() * pix)
        .map(|i| ((i % pix) / 28 < 14) as u8 as f32)
        .collect();
    let ctx = block_on(GpuContext::new()).unwrap();
    let out = inpaint(
        &ctx,
        &model,
        &image,
        &mask,
        &[idx.len(), 1, 28, 28],
        RepaintSettings {
            steps,
            jump_length,
            jump_n_sample,
            class_labels: guidance.map(|_| idx.iter().map(|&i| data.labels[i]).collect()),
            guidance,
            seed: 0,
        },
    );
    let train: Vec<f32> = data
        .images
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    let half = 14 * 28;
    let mut right = 0;
    let mut seen = Vec::new();
    for (k, &src) in idx.iter().enumerate() {
        let s = &out[k * pix + half..(k + 1) * pix];
        let nearest = (0..data.len())
            .filter(|&j| j != src)
            .map(|j| {
                let d: f32 = train[j * pix + half..(j + 1) * pix]
                    .iter()
                    .zip(s)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                (d, data.labels[j])
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap()
            .1;
        right += (nearest == data.labels[src]) as usize;
        seen.push(format!("{}→{nearest}", data.labels[src]));
    }
    println!(
        "steps {steps}, jump {jump_length}×{jump_n_sample}, guidance {guidance:?}: {right}/10 \
         right: {}",
        seen.join(" ")
    );
    right
}

#[test]
fn shipped_model_completes_half_digits_cheap() {
    common::xdg();
    let right = completed_digits_right(10, 5, 2, Some(2.5));
    assert!(
        right >= 7,
        "only {right}/10 completed digits have the right class"
    );
}

#[test]
#[ignore = "about 65 U-Net calls of 10 digits; run with --ignored"]
fn shipped_model_completes_half_digits() {
    common::xdg();
    let right = completed_digits_right(25, 5, 3, Some(2.5));
    assert!(
        right >= 8,
        "only {right}/10 completed digits have the right class"
    );
}
