//! Browser smoke test: the engine on WebGPU in headless Chromium (SwiftShader in CI).
//!
//! Run with `CHROMEDRIVER=/usr/bin/chromedriver cargo test --target wasm32-unknown-unknown
//! --test web_smoke` (`.cargo/config.toml` names wasm-bindgen-test-runner as the runner and
//! `webdriver.json` passes Chromium the flags that enable WebGPU headless). Natively this file
//! compiles to nothing: the native tests cover the same kernels on llvmpipe.
#![cfg(target_arch = "wasm32")]

mod common;

use common::{rel_l2, Reference};
use kakusan::gpu::{GpuContext, Program};
use kakusan::ops::elementwise;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// `elementwise::add` on WebGPU: out = (a + b) * scale, read back with `map_async`.
/// 1000 elements is not a multiple of the 256-wide workgroup, so the bounds check runs too.
#[wasm_bindgen_test]
async fn elementwise_add_on_webgpu() {
    let ctx = GpuContext::new().await.expect(
        "no WebGPU adapter: Chromium needs --enable-unsafe-webgpu --enable-features=Vulkan",
    );
    let n = 1000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 100.0).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
    let scale = 0.25f32;
    let shape = [2, 5, 100];
    let ta = ctx.upload(&a, &shape).unwrap();
    let tb = ctx.upload(&b, &shape).unwrap();
    let out = ctx.zeros(&shape).unwrap();
    let mut program = Program::new();
    elementwise::add(&ctx, &mut program, &ta, &tb, &out, scale).unwrap();
    ctx.run(&program).unwrap();
    let got = ctx.read(&out).await.unwrap();
    assert_eq!(got.len(), n);
    // Every input is a multiple of 0.5 within ±600, so the f32 result is exact.
    for i in 0..n {
        let want = (a[i] as f64 + b[i] as f64) * scale as f64;
        assert!(
            (got[i] as f64 - want).abs() <= 1e-6,
            "add: element {i}: got {}, want {want} (adapter {})",
            got[i],
            ctx.adapter.name
        );
    }
}

/// A diffusers fixture embedded in the test binary (the browser has no file system).
struct Fixture {
    name: &'static str,
    files: kakusan::model::ModelFiles,
    reference: Reference,
}

macro_rules! fixture {
    ($name:literal) => {
        Fixture {
            name: $name,
            files: kakusan::model::ModelFiles {
                config_json: include_str!(concat!("fixtures/", $name, "/config.json")).to_string(),
                weights: include_bytes!(concat!(
                    "fixtures/",
                    $name,
                    "/diffusion_pytorch_model.safetensors"
                ))
                .to_vec(),
                scheduler_json: Some(
                    include_str!(concat!("fixtures/", $name, "/scheduler_config.json")).to_string(),
                ),
            },
            reference: Reference::from_bytes(include_bytes!(concat!(
                "fixtures/",
                $name,
                "/reference.safetensors"
            ))),
        }
    };
}

/// The same five fixtures as tests/diffusers_parity.rs.
fn fixtures() -> Vec<Fixture> {
    vec![
        fixture!("attn"),
        fixture!("class_cond"),
        fixture!("legacy"),
        fixture!("mnist28"),
        fixture!("pad0"),
    ]
}

/// Chaotic random-weight DDIM chains (see tests/diffusers_parity.rs): U-Net call only.
const CHAOTIC: &[&str] = &["attn", "legacy"];

/// One full U-Net call per fixture on WebGPU against diffusers, same tolerance as natively:
/// relative L2 ≤ 1e-4.
#[wasm_bindgen_test]
async fn unet_forward_matches_diffusers_on_webgpu() {
    use kakusan::model::Model;
    use kakusan::unet::UNet;

    let ctx = GpuContext::new().await.unwrap();
    for f in fixtures() {
        let model = Model::from_files(&f.files).expect("fixture model loads");
        let r = &f.reference;
        let (shape, sample) = r.get("sample");
        let (_, timesteps) = r.get("timesteps");
        let (_, want) = r.get("unet_out");
        let unet = UNet::new(&ctx, &model.config, &model.weights, shape[0]).unwrap();
        let got = unet
            .predict(&ctx, &sample, &timesteps, r.class_labels().as_deref())
            .await
            .unwrap();
        let err = rel_l2(&got, &want);
        assert!(
            err <= 1e-4,
            "{}: U-Net on WebGPU: relative L2 error {err:e} > 1e-4",
            f.name
        );
    }
}

/// 20 DDIM steps (η = 0) from diffusers' x_T on WebGPU against diffusers' x_0, guided too
/// where the fixture has a reference for it; same tolerance as natively: 1e-3.
#[wasm_bindgen_test]
async fn ddim_20_steps_matches_diffusers_on_webgpu() {
    use kakusan::diffusion::sampler::{SampleSettings, SamplingRun};
    use kakusan::diffusion::schedule::Sampler;
    use kakusan::model::Model;

    let ctx = GpuContext::new().await.unwrap();
    for f in fixtures()
        .into_iter()
        .filter(|f| !CHAOTIC.contains(&f.name))
    {
        let model = Model::from_files(&f.files).unwrap();
        let r = &f.reference;
        let (shape, init) = r.get("init_noise");
        let mut cases = vec![(None, "ddim_x0")];
        if r.has("ddim_cfg_x0") {
            cases.push((Some(2.5), "ddim_cfg_x0"));
        }
        for (guidance, reference) in cases {
            let mut run = SamplingRun::new(
                &ctx,
                &model.config,
                &model.weights,
                &model.scheduler,
                SampleSettings {
                    sampler: Sampler::Ddim { eta: 0.0 },
                    steps: 20,
                    seed: 0,
                    batch: shape[0],
                    class_labels: r.class_labels(),
                    guidance,
                },
            )
            .unwrap();
            run.set_initial_noise(&ctx, &init).unwrap();
            while run.step(&ctx).unwrap().is_some() {}
            let got = ctx.read(run.x_t()).await.unwrap();
            let err = rel_l2(&got, &r.get(reference).1);
            assert!(
                err <= 1e-3,
                "{}: {reference} on WebGPU: relative L2 error {err:e} > 1e-3",
                f.name
            );
        }
    }
}

/// The likelihood panel's jobs (`web::engine::{anomaly_run, nll_run}`, what its buttons
/// start) condition on the chosen class and draw their noise from the chosen seed: on the
/// class-conditional fixture, class 3 gives another anomaly score and other bound terms than
/// the null class, the same as the engine given label 3 directly, and another seed another
/// score. A job that ignored the class (or the seed) fails here.
#[wasm_bindgen_test]
async fn likelihood_panel_jobs_take_class_and_seed() {
    use kakusan::diffusion::anomaly::{ReconstructionRun, ReconstructionSettings};
    use kakusan::diffusion::likelihood::ImageBatch;
    use kakusan::model::Model;
    use kakusan::web::engine::{anomaly_run, nll_run, tool_labels, NllMode, ToolImage};
    use kakusan::web::forward::Image;

    let ctx = GpuContext::new().await.unwrap();
    let model = Model::from_files(&fixture!("class_cond").files).unwrap();
    // A 16×16 image on the 8-bit grid.
    let image = Image {
        c: 1,
        h: 16,
        w: 16,
        data: (0..256)
            .map(|i| ((i * 37 + (i / 16) * 11) % 256) as f32 / 127.5 - 1.0)
            .collect(),
    };
    let job = |class: Option<u32>, seed: u64| ToolImage {
        image: image.clone(),
        class,
        seed,
    };
    let (t, steps) = (300, 3);
    let mut scores = Vec::new();
    for j in [job(None, 0), job(Some(3), 0), job(Some(3), 1)] {
        let mut run = anomaly_run(&ctx, &model, &j, t, steps).unwrap();
        while run.step(&ctx).await.unwrap().is_some() {}
        scores.push(run.scores()[0]);
    }
    let mut direct = ReconstructionRun::new(
        &ctx,
        &model,
        ImageBatch {
            data: &image.data,
            shape: &[1, 1, 16, 16],
            class_labels: Some(&[3]),
        },
        ReconstructionSettings {
            t,
            steps,
            repeats: 1,
            seed: 0,
        },
    )
    .unwrap();
    while direct.step(&ctx).await.unwrap().is_some() {}
    let want = direct.scores()[0];
    assert_eq!(scores[1], want, "class 3: the job's score is not label 3's");
    assert_ne!(scores[0], scores[1], "class 3 scored as the null class");
    assert_ne!(scores[1], scores[2], "seed 1 scored as seed 0");

    // The bound: a strided plan (L_0 and a few KL terms), null class vs class 3.
    let mode = NllMode {
        stride: 250,
        per_call: 8,
    };
    let mut terms = Vec::new();
    for j in [job(None, 0), job(Some(3), 0)] {
        let mut run = nll_run(&ctx, &model, &j, mode).unwrap();
        while run.step(&ctx).await.unwrap().is_some() {}
        let got: Vec<f64> = run
            .terms()
            .iter()
            .filter_map(|v| v.first().copied())
            .collect();
        assert!(
            got.len() >= 4 && got.iter().all(|v| v.is_finite()),
            "{got:?}"
        );
        terms.push(got);
    }
    assert_ne!(terms[0], terms[1], "the bound's terms ignore the class");

    // The null class (10 of 11 embeddings) is not a class one can pick.
    assert_eq!(tool_labels(&model, None).unwrap(), Some(vec![10]));
    assert_eq!(tool_labels(&model, Some(9)).unwrap(), Some(vec![9]));
    assert!(tool_labels(&model, Some(10)).is_err());
}
