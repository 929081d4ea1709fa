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
