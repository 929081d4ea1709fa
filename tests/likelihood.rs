//! The variational bound (bits/dim) against the float64 PyTorch reference of
//! tests/fixtures/make_likelihood_fixture.py: a tiny random-weight model, T = 20, the same
//! noise at every timestep, two scheduler variants (fixed_small + clipping, fixed_large).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{fixture, Reference};
use kakusan::diffusion::likelihood::{ImageBatch, LikelihoodRun, TermNoise, TermPlan, VlbReport};
use kakusan::diffusion::schedule::VarianceType;
use kakusan::gpu::{block_on, GpuContext};
use kakusan::model::{read_model_dir, Model};

const RTOL: f64 = 1e-4;

fn run(model: &Model, ctx: &GpuContext, variant: &serde_json::Value, plan: TermPlan) -> VlbReport {
    let dir = fixture("likelihood");
    let r = Reference::open(&dir.join("reference.safetensors"));
    let (shape, x0) = r.get("sample");
    let labels: Vec<u32> = r.get("class_labels").1.iter().map(|&v| v as u32).collect();
    let noise = r.get("noise").1;
    let mut model = model.clone();
    model.scheduler.variance_type = match variant["variance_type"].as_str().unwrap() {
        "fixed_small" => VarianceType::FixedSmall,
        _ => VarianceType::FixedLarge,
    };
    model.scheduler.clip_sample = variant["clip_sample"].as_bool().unwrap();
    let mut run = LikelihoodRun::with_plan(
        ctx,
        &model,
        ImageBatch {
            data: &x0,
            shape: &shape,
            class_labels: Some(&labels),
        },
        TermNoise::Given(noise),
        plan,
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
        let got = run(&model, &ctx, variant, TermPlan::default());
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

/// Many timesteps per U-Net call (the network takes one timestep per sample) give the same
/// terms; a strided plan evaluates the reference's terms at its timesteps and sums them with
/// the block weights. 7 timesteps per call does not divide T = 20, so the padded last call
/// is exercised too.
#[test]
fn batched_and_strided_plans_match_the_reference() {
    common::xdg();
    let dir = fixture("likelihood");
    let model = Model::from_files(&read_model_dir(&dir).unwrap()).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let ctx = block_on(GpuContext::new()).unwrap();
    let variant = &reference["results"]["fixed_small_clip"];
    let want_terms: Vec<Vec<f64>> = variant["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    let want_prior: Vec<f64> = variant["prior"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let batched = run(
        &model,
        &ctx,
        variant,
        TermPlan {
            per_call: 7,
            ..TermPlan::default()
        },
    );
    for (t, row) in want_terms.iter().enumerate() {
        for (i, &w) in row.iter().enumerate() {
            close(
                batched.terms[t][i],
                w,
                &format!("7 per call: term t={t} of image {i}"),
            );
        }
    }
    for (i, w) in variant["bits_per_dim"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        close(
            batched.bits_per_dim[i],
            w.as_f64().unwrap(),
            &format!("7 per call: bits/dim of image {i}"),
        );
    }
    let strided = run(
        &model,
        &ctx,
        variant,
        TermPlan {
            per_call: 4,
            stride: 3,
            seed: 2,
        },
    );
    let evaluated: Vec<usize> = (0..20).filter(|&t| strided.weights[t] > 0.0).collect();
    assert_eq!(evaluated.len(), 1 + 19usize.div_ceil(3), "{evaluated:?}");
    assert_eq!(strided.weights.iter().sum::<f64>(), 20.0);
    for i in 0..want_prior.len() {
        let mut want = want_prior[i];
        for &t in &evaluated {
            close(
                strided.terms[t][i],
                want_terms[t][i],
                &format!("stride 3: term t={t} of image {i}"),
            );
            want += strided.weights[t] * want_terms[t][i];
        }
        close(
            strided.bits_per_dim[i],
            want,
            &format!("stride 3: estimate for image {i}"),
        );
    }
}
