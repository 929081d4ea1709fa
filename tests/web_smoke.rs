//! Browser smoke test: the engine on WebGPU in headless Chromium (SwiftShader in CI).
//!
//! Run with `CHROMEDRIVER=/usr/bin/chromedriver cargo test --target wasm32-unknown-unknown
//! --test web_smoke` (`.cargo/config.toml` names wasm-bindgen-test-runner as the runner and
//! `webdriver.json` passes Chromium the flags that enable WebGPU headless). Natively this file
//! compiles to nothing: the native tests cover the same kernels on llvmpipe.
#![cfg(target_arch = "wasm32")]

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

/// One full U-Net call on WebGPU against diffusers: the `attn` fixture (multi-head attention,
/// 16x16, batch 2), embedded in the test binary. Same tolerance as natively: relative L2 ≤ 1e-4.
#[wasm_bindgen_test]
async fn unet_forward_matches_diffusers_on_webgpu() {
    use kakusan::model::{Model, ModelFiles};
    use kakusan::unet::UNet;
    use safetensors::SafeTensors;

    let files = ModelFiles {
        config_json: include_str!("fixtures/attn/config.json").to_string(),
        weights: include_bytes!("fixtures/attn/diffusion_pytorch_model.safetensors").to_vec(),
        scheduler_json: Some(include_str!("fixtures/attn/scheduler_config.json").to_string()),
    };
    let model = Model::from_files(&files).expect("fixture model loads");
    let reference = include_bytes!("fixtures/attn/reference.safetensors");
    let st = SafeTensors::deserialize(reference).unwrap();
    let f32s = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (t.shape().to_vec(), v)
    };
    let (shape, sample) = f32s("sample");
    let (_, want) = f32s("unet_out");
    let ts = st.tensor("timesteps").unwrap();
    let timesteps: Vec<f32> = ts
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
        .collect();

    let ctx = GpuContext::new().await.unwrap();
    let unet = UNet::new(&ctx, &model.config, &model.weights, shape[0]).unwrap();
    let got = unet.predict(&ctx, &sample, &timesteps, None).await.unwrap();
    let num: f64 = got
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|&b| (b as f64).powi(2)).sum();
    let err = (num / den).sqrt();
    assert!(
        err <= 1e-4,
        "U-Net on WebGPU: relative L2 error {err:e} > 1e-4"
    );
}
