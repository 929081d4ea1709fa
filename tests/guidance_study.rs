//! A measurement, not a CI test (ignored): why DDIM with guidance ≥ 2 degrades on the shipped
//! MNIST model, and whether the guidance options help. For each setting it samples
//! `KAKUSAN_STUDY_PER_CLASS` (default 2) digits of every class from one seed and prints
//! the class check of tests/shipped_model.rs (label of the nearest of the 10,000 embedded
//! digits) and the median pixel (MNIST's background is −1). Results: docs/sampling.md.
//!
//! `nice -n 5 cargo test --test guidance_study -- --ignored --nocapture`
//! (`KAKUSAN_STUDY_ONLY=name1,name2` runs only those settings.)
#![cfg(not(target_arch = "wasm32"))]

mod common;

use kakusan::data::load_default_mnist;
use kakusan::diffusion::sampler::{GuidanceOptions, SampleSettings, SamplingRun};
use kakusan::diffusion::schedule::Sampler;
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};

struct Setting {
    name: &'static str,
    sampler: Sampler,
    steps: usize,
    guidance: f32,
    clip: bool,
    options: GuidanceOptions,
}

fn settings() -> Vec<Setting> {
    let ddim = Sampler::Ddim { eta: 0.0 };
    let s = |name, sampler, steps, guidance, clip, rescale, interval| Setting {
        name,
        sampler,
        steps,
        guidance,
        clip,
        options: GuidanceOptions { rescale, interval },
    };
    vec![
        s("ddim20-w1", ddim, 20, 1.0, true, 0.0, None),
        s("ddim20-w3", ddim, 20, 3.0, true, 0.0, None),
        s("ddim20-w3-noclip", ddim, 20, 3.0, false, 0.0, None),
        s("ddim20-w3-rescale0.7", ddim, 20, 3.0, true, 0.7, None),
        s(
            "ddim20-w3-interval0-600",
            ddim,
            20,
            3.0,
            true,
            0.0,
            Some((0, 600)),
        ),
        s("dpm20-w3", Sampler::DpmSolver, 20, 3.0, true, 0.0, None),
        s("ddim20-w2", ddim, 20, 2.0, true, 0.0, None),
        s("dpm20-w1", Sampler::DpmSolver, 20, 1.0, true, 0.0, None),
        s(
            "ddim20-w3-rescale0.7-interval0-600",
            ddim,
            20,
            3.0,
            true,
            0.7,
            Some((0, 600)),
        ),
    ]
}

#[test]
#[ignore]
fn guidance_study() {
    common::xdg();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/models/mnist");
    let mut model = Model::from_files(&read_model_dir(dir.as_ref()).unwrap()).unwrap();
    let data = load_default_mnist().unwrap();
    let pix = data.image_len();
    let train: Vec<f32> = data
        .images
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    let per_class: usize = std::env::var("KAKUSAN_STUDY_PER_CLASS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let only = std::env::var("KAKUSAN_STUDY_ONLY").ok();
    let ctx = block_on(GpuContext::new()).unwrap();
    let labels: Vec<u32> = (0..10 * per_class).map(|i| (i % 10) as u32).collect();
    for st in settings() {
        if let Some(o) = &only {
            if !o.split(',').any(|n| n == st.name) {
                continue;
            }
        }
        let t0 = std::time::Instant::now();
        model.scheduler.clip_sample = st.clip;
        let mut run = SamplingRun::new(
            &ctx,
            &model.config,
            &model.weights,
            &model.scheduler,
            SampleSettings {
                sampler: st.sampler,
                steps: st.steps,
                seed: 0,
                batch: labels.len(),
                class_labels: Some(labels.clone()),
                guidance: Some(st.guidance),
            },
        )
        .unwrap();
        run.set_guidance_options(&ctx, st.options.clone()).unwrap();
        while run.step(&ctx).unwrap().is_some() {}
        let x0 = block_on(ctx.read(run.x_t())).unwrap();
        let mut right = 0;
        for (i, &want) in labels.iter().enumerate() {
            let s = &x0[i * pix..(i + 1) * pix];
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
            right += (nearest == want) as usize;
        }
        let mut sorted: Vec<f32> = x0.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = sorted[sorted.len() / 2];
        let near_bg = sorted.iter().filter(|&&v| v < -0.9).count() as f64 / sorted.len() as f64;
        let line = format!(
            "{:<36} class check {right:>3}/{:<3} median pixel {median:+.3}  pixels < -0.9: {:.1} %  ({:.0} s)",
            st.name,
            labels.len(),
            100.0 * near_bg,
            t0.elapsed().as_secs_f64()
        );
        println!("{line}");
        if let Ok(p) = std::env::var("KAKUSAN_STUDY_LOG") {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        }
    }
}
