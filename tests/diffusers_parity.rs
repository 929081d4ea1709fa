//! The whole network against diffusers: fixtures made by tests/fixtures/make_fixtures.py
//! (pinned torch/diffusers, float64 references). Tolerances from the engine issue:
//! U-Net output relative L2 ≤ 1e-4, 20-step DDIM η=0 x_0 ≤ 1e-3.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{fixture, rel_l2, Reference};
use kakusan::diffusion::sampler::{SampleSettings, SamplingRun};
use kakusan::diffusion::schedule::Sampler;
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};
use kakusan::unet::UNet;

const FIXTURES: &[&str] = &["attn", "class_cond", "legacy", "mnist28", "pad0"];
/// Fixtures whose random-weight 20-step DDIM chain is chaotic: diffusers' own float32 run
/// misses its float64 reference by 2.1e-3 (attn) and 5.4e-3 (legacy), and scaling x_T by
/// 1 + 1e-7 moves x_0 by 9e-5 / 4.4e-4 (tests/fixtures/README.md). For them each step is
/// checked from the reference trajectory instead of the whole chain.
const CHAOTIC: &[&str] = &["attn", "legacy"];

fn load(name: &str) -> (Model, Reference) {
    let dir = fixture(name);
    let model = Model::from_files(&read_model_dir(&dir).unwrap()).unwrap();
    (model, Reference::open(&dir.join("reference.safetensors")))
}

fn labels(r: &Reference) -> Option<Vec<u32>> {
    r.has("class_labels")
        .then(|| r.get("class_labels").1.iter().map(|&l| l as u32).collect())
}

#[test]
fn unet_forward_matches_diffusers() {
    common::xdg();
    let ctx = block_on(GpuContext::new()).unwrap();
    for name in FIXTURES {
        let (model, r) = load(name);
        let (shape, sample) = r.get("sample");
        let (_, timesteps) = r.get("timesteps");
        let (_, want) = r.get("unet_out");
        let unet = UNet::new(&ctx, &model.config, &model.weights, shape[0]).unwrap();
        let got = block_on(unet.predict(&ctx, &sample, &timesteps, labels(&r).as_deref())).unwrap();
        let err = rel_l2(&got, &want);
        eprintln!("{name}: U-Net relative L2 error {err:.2e}");
        assert!(
            err <= 1e-4,
            "{name}: U-Net output relative L2 error {err:e} > 1e-4"
        );
    }
}

fn ddim_run(ctx: &GpuContext, model: &Model, r: &Reference, guidance: Option<f32>) -> SamplingRun {
    let (shape, _) = r.get("init_noise");
    let run = SamplingRun::new(
        ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        SampleSettings {
            sampler: Sampler::Ddim { eta: 0.0 },
            steps: 20,
            seed: 0,
            batch: shape[0],
            class_labels: labels(r),
            guidance,
        },
    )
    .unwrap();
    let (_, want_ts) = r.get("ddim_timesteps");
    let ts: Vec<usize> = want_ts.iter().map(|&t| t as usize).collect();
    assert_eq!(
        run.timesteps(),
        &ts[..],
        "DDIM timesteps differ from diffusers'"
    );
    run
}

fn ddim(ctx: &GpuContext, model: &Model, r: &Reference, guidance: Option<f32>) -> Vec<f32> {
    let mut run = ddim_run(ctx, model, r, guidance);
    run.set_initial_noise(ctx, &r.get("init_noise").1).unwrap();
    while run.step(ctx).unwrap().is_some() {}
    block_on(ctx.read(run.x_t())).unwrap()
}

#[test]
fn ddim_20_steps_matches_diffusers() {
    common::xdg();
    let ctx = block_on(GpuContext::new()).unwrap();
    for name in FIXTURES.iter().filter(|n| !CHAOTIC.contains(n)) {
        let (model, r) = load(name);
        let got = ddim(&ctx, &model, &r, None);
        let err = rel_l2(&got, &r.get("ddim_x0").1);
        eprintln!("{name}: DDIM x_0 relative L2 error {err:.2e}");
        assert!(
            err <= 1e-3,
            "{name}: DDIM x_0 relative L2 error {err:e} > 1e-3"
        );
        if r.has("ddim_cfg_x0") {
            let got = ddim(&ctx, &model, &r, Some(2.5));
            let err = rel_l2(&got, &r.get("ddim_cfg_x0").1);
            eprintln!("{name}: guided DDIM x_0 relative L2 error {err:.2e}");
            assert!(
                err <= 1e-3,
                "{name}: guided DDIM (w = 2.5) relative L2 error {err:e} > 1e-3"
            );
        }
    }
}

#[test]
fn every_ddim_step_matches_diffusers_trajectory() {
    common::xdg();
    let ctx = block_on(GpuContext::new()).unwrap();
    for name in FIXTURES {
        let (model, r) = load(name);
        let mut run = ddim_run(&ctx, &model, &r, None);
        let (_, init) = r.get("init_noise");
        let (shape, traj) = r.get("ddim_traj");
        let per = init.len();
        assert_eq!(shape[0], 20);
        let mut worst = 0.0f64;
        for k in 0..20 {
            let x_in = if k == 0 {
                &init[..]
            } else {
                &traj[(k - 1) * per..k * per]
            };
            run.set_state(&ctx, k, x_in).unwrap();
            run.step(&ctx).unwrap();
            let got = block_on(ctx.read(run.x_t())).unwrap();
            let err = rel_l2(&got, &traj[k * per..(k + 1) * per]);
            worst = worst.max(err);
            assert!(
                err <= 1e-4,
                "{name}: DDIM step {k}: relative L2 error {err:e} > 1e-4"
            );
        }
        eprintln!("{name}: worst single DDIM step relative L2 error {worst:.2e}");
    }
}
