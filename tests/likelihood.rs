//! The variational bound (bits/dim) against the float64 PyTorch reference of
//! tests/fixtures/make_likelihood_fixture.py: a tiny random-weight model, T = 20, the same
//! noise at every timestep, two scheduler variants (fixed_small + clipping, fixed_large).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{fixture, Reference};
use kakusan::diffusion::likelihood::{LikelihoodRun, TermNoise, VlbReport};
use kakusan::diffusion::schedule::VarianceType;
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};

const RTOL: f64 = 1e-4;

fn run(model: &Model, ctx: &GpuContext, variant: &serde_json::Value) -> VlbReport {
    let dir = fixture("likelihood");
    let r = Reference::open(&dir.join("reference.safetensors"));
    let (shape, x0) = r.get("sample");
    let labels: Vec<u32> = r.get("class_labels").1.iter().map(|&v| v as u32).collect();
    let noise = r.get("noise").1;
    let mut sched = model.scheduler.clone();
    sched.variance_type = match variant["variance_type"].as_str().unwrap() {
        "fixed_small" => VarianceType::FixedSmall,
        _ => VarianceType::FixedLarge,
    };
    sched.clip_sample = variant["clip_sample"].as_bool().unwrap();
    let mut run = LikelihoodRun::new(
        ctx,
        &model.config,
        &model.weights,
        &sched,
        &x0,
        &shape,
        Some(&labels),
        TermNoise::Given(noise),
    )
    .unwrap();
    while block_on(run.step(ctx)).unwrap().is_some() {}
    run.report().unwrap()
}

fn close(got: f64, want: f64, what: &str) {
    let rel = (got - want).abs() / want.abs().max(1e-3);
    assert!(rel <= RTOL, "{what}: got {got}, want {want} (rel {rel:e})");
}

#[test]
fn bits_per_dim_match_the_float64_reference() {
    common::xdg();
    let dir = fixture("likelihood");
    let model = Model::from_files(&read_model_dir(&dir).unwrap()).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ctx = block_on(GpuContext::new()).unwrap();
    for (name, variant) in reference["results"].as_object().unwrap() {
        let got = run(&model, &ctx, variant);
        let want = |k: &str| -> Vec<f64> {
            variant[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        for (i, (&g, &w)) in got
            .bits_per_dim
            .iter()
            .zip(&want("bits_per_dim"))
            .enumerate()
        {
            close(g, w, &format!("{name}: bits/dim of image {i}"));
        }
        for (i, (&g, &w)) in got.prior.iter().zip(&want("prior")).enumerate() {
            close(g, w, &format!("{name}: prior of image {i}"));
        }
        let terms = variant["terms"].as_array().unwrap();
        assert_eq!(terms.len(), got.terms.len());
        for (t, row) in terms.iter().enumerate() {
            for (i, w) in row.as_array().unwrap().iter().enumerate() {
                close(
                    got.terms[t][i],
                    w.as_f64().unwrap(),
                    &format!("{name}: term t={t} of image {i}"),
                );
            }
        }
        println!("{name}: bits/dim {:?}", got.bits_per_dim);
    }
}
