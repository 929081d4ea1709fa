//! Guidance options in a whole sampling run (tiny `class_cond` fixture, 4 DDIM steps): a
//! guidance interval that excludes every step is the conditional model alone, one that
//! includes every step is plain guidance, and guidance rescale changes the result. The
//! rescale arithmetic itself is checked against a CPU f64 reference in src/ops/sampler.rs.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::fixture;
use kakusan::diffusion::sampler::{GuidanceOptions, SampleSettings, SamplingRun};
use kakusan::diffusion::schedule::Sampler;
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};

fn run(ctx: &GpuContext, model: &Model, guidance: Option<f32>, opts: GuidanceOptions) -> Vec<f32> {
    let mut run = SamplingRun::new(
        ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        SampleSettings {
            sampler: Sampler::Ddim { eta: 0.0 },
            steps: 4,
            seed: 11,
            batch: 2,
            class_labels: Some(vec![3, 5]),
            guidance,
        },
    )
    .unwrap();
    run.set_guidance_options(ctx, opts).unwrap();
    while run.step(ctx).unwrap().is_some() {}
    block_on(ctx.read(run.x_t())).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn guidance_interval_and_rescale_act_on_the_run() {
    common::xdg();
    let ctx = block_on(GpuContext::new()).unwrap();
    let model = Model::from_files(&read_model_dir(&fixture("class_cond")).unwrap()).unwrap();
    let none = GuidanceOptions::default();
    let cond = run(&ctx, &model, None, none.clone());
    let guided = run(&ctx, &model, Some(3.0), none.clone());
    assert!(max_diff(&cond, &guided) > 1e-2, "guidance must matter here");
    let outside = GuidanceOptions {
        interval: Some((2000, 3000)),
        ..Default::default()
    };
    let d = max_diff(&run(&ctx, &model, Some(3.0), outside), &cond);
    assert!(d <= 1e-5, "no step in the interval: conditional only ({d})");
    let all = GuidanceOptions {
        interval: Some((0, 999)),
        ..Default::default()
    };
    let d = max_diff(&run(&ctx, &model, Some(3.0), all), &guided);
    assert!(
        d <= 1e-6,
        "every step in the interval: plain guidance ({d})"
    );
    let rescaled = GuidanceOptions {
        rescale: 0.7,
        ..Default::default()
    };
    let r = run(&ctx, &model, Some(3.0), rescaled);
    assert!(max_diff(&r, &guided) > 1e-3, "rescale must change the run");
    let mut bad = SamplingRun::new(
        &ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        SampleSettings {
            sampler: Sampler::DpmSolver,
            steps: 4,
            seed: 0,
            batch: 1,
            class_labels: None,
            guidance: Some(2.0),
        },
    )
    .unwrap();
    for opts in [
        GuidanceOptions {
            rescale: 1.5,
            ..Default::default()
        },
        GuidanceOptions {
            interval: Some((700, 100)),
            ..Default::default()
        },
    ] {
        assert!(bad.set_guidance_options(&ctx, opts).is_err());
    }
}
