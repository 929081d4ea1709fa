//! DPM-Solver++(2M) against diffusers' `DPMSolverMultistepScheduler`: fixtures made by
//! tests/fixtures/make_solver_fixtures.py (see tests/fixtures/README.md). 20 steps from the
//! committed x_T, unguided and guided (w = 2.5): x_0 within 1e-3 relative L2. And the
//! schedule itself: timesteps equal, sigmas equal up to diffusers' float32 rounding.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{fixture, rel_l2, Reference};
use kakusan::diffusion::dpm_solver::{dpm_solver_sigmas, dpm_solver_timesteps};
use kakusan::diffusion::sampler::{SampleSettings, SamplingRun};
use kakusan::diffusion::schedule::{
    BetaSchedule, Sampler, Schedule, SchedulerConfig, TimestepSpacing,
};
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};

const MODELS: &[&str] = &["class_cond", "pad0"];

fn dpm(
    ctx: &GpuContext,
    model: &Model,
    init: &Reference,
    want_ts: &[usize],
    guidance: Option<f32>,
) -> Vec<f32> {
    let (shape, x_t) = init.get("init_noise");
    let labels = init.has("class_labels").then(|| {
        init.get("class_labels")
            .1
            .iter()
            .map(|&l| l as u32)
            .collect()
    });
    let mut run = SamplingRun::new(
        ctx,
        &model.config,
        &model.weights,
        &model.scheduler,
        SampleSettings {
            sampler: Sampler::DpmSolver,
            steps: 20,
            seed: 0,
            batch: shape[0],
            class_labels: labels,
            guidance,
        },
    )
    .unwrap();
    assert_eq!(
        run.timesteps(),
        want_ts,
        "DPM-Solver timesteps differ from diffusers'"
    );
    run.set_initial_noise(ctx, &x_t).unwrap();
    while run.step(ctx).unwrap().is_some() {}
    block_on(ctx.read(run.x_t())).unwrap()
}

#[test]
fn dpm_solver_20_steps_matches_diffusers() {
    common::xdg();
    let ctx = block_on(GpuContext::new()).unwrap();
    for name in MODELS {
        let dir = fixture(name);
        let model = Model::from_files(&read_model_dir(&dir).unwrap()).unwrap();
        let init = Reference::open(&dir.join("reference.safetensors"));
        let r = Reference::open(&fixture("dpm_solver").join(format!("{name}.safetensors")));
        let ts: Vec<usize> = r
            .get("dpm_timesteps")
            .1
            .iter()
            .map(|&t| t as usize)
            .collect();
        let got = dpm(&ctx, &model, &init, &ts, None);
        let err = rel_l2(&got, &r.get("dpm_x0").1);
        eprintln!("{name}: DPM-Solver++ x_0 relative L2 error {err:.2e}");
        assert!(err <= 1e-3, "{name}: DPM-Solver++ x_0 relative L2 {err:e}");
        if r.has("dpm_cfg_x0") {
            let got = dpm(&ctx, &model, &init, &ts, Some(2.5));
            let err = rel_l2(&got, &r.get("dpm_cfg_x0").1);
            eprintln!("{name}: guided DPM-Solver++ x_0 relative L2 error {err:.2e}");
            assert!(
                err <= 1e-3,
                "{name}: guided DPM-Solver++ (w = 2.5) x_0 relative L2 {err:e}"
            );
        }
    }
}

#[test]
fn dpm_solver_schedules_match_diffusers() {
    let text = std::fs::read_to_string(fixture("dpm_solver").join("schedules.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 90);
    let mut compared = 0;
    for c in cases {
        let cfg = SchedulerConfig {
            num_train_timesteps: c["num_train_timesteps"].as_u64().unwrap() as usize,
            beta_schedule: match c["beta_schedule"].as_str().unwrap() {
                "linear" => BetaSchedule::Linear,
                "scaled_linear" => BetaSchedule::ScaledLinear,
                _ => BetaSchedule::SquaredcosCapV2,
            },
            beta_start: c["beta_start"].as_f64().unwrap(),
            beta_end: c["beta_end"].as_f64().unwrap(),
            steps_offset: c["steps_offset"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let spacing = match c["timestep_spacing"].as_str().unwrap() {
            "linspace" => TimestepSpacing::Linspace,
            "leading" => TimestepSpacing::Leading,
            _ => TimestepSpacing::Trailing,
        };
        let steps = c["steps"].as_u64().unwrap() as usize;
        let want_ts: Vec<usize> = c["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as usize)
            .collect();
        let what = format!(
            "T {} {:?} {spacing:?} offset {} steps {steps}",
            cfg.num_train_timesteps, cfg.beta_schedule, cfg.steps_offset
        );
        let ts = dpm_solver_timesteps(&cfg, spacing, steps).unwrap();
        assert_eq!(ts, want_ts, "{what}");
        let sigmas = dpm_solver_sigmas(&Schedule::new(&cfg).unwrap(), &ts);
        let want: Vec<f64> = c["sigmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        assert_eq!(sigmas.len(), want.len(), "{what}");
        assert_eq!(*sigmas.last().unwrap(), 0.0);
        // diffusers computes ᾱ (cumprod) and σ in float32: up to 1.6e-5 relative from f64
        // (`max_rel_f32_vs_f64`, largest where ᾱ is tiny); we compute in f64.
        let tol = 2.0 * c["max_rel_f32_vs_f64"].as_f64().unwrap() + 1e-7;
        for (k, (g, w)) in sigmas.iter().zip(&want).enumerate() {
            let rel = (g - w).abs() / w.abs().max(1e-30);
            assert!(
                *w == 0.0 && *g == 0.0 || rel <= tol,
                "{what}: sigma[{k}] {g} vs {w}"
            );
            compared += 1;
        }
    }
    assert!(compared > 1000);
}
