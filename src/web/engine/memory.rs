//! `window.kakusanMemory()`: the GPU memory the engine holds, for the page soak
//! (tests/e2e/soak.mjs) and for anyone curious in the console.
//!
//! Owns nothing: it adds up what the other parts hold — the live run's tensors (counted by
//! the context as they are planned: weights, activations, noise, sampler state) and the
//! timeline's recorded frames. Uniform buffers (a few hundred bytes each) and the canvas's
//! swap-chain textures are not counted. A buffer the engine has dropped no longer counts,
//! even though on WebGPU wgpu leaves freeing it to the browser's garbage collector (the
//! soak also counts from the browser's side).

use wasm_bindgen::prelude::*;

use super::with_engine;

/// `{ engine_bytes, run_bytes, timeline_bytes, timeline_frames, device_tensor_bytes }`:
/// engine_bytes = run_bytes + timeline_bytes, what the engine holds now;
/// device_tensor_bytes, every tensor created on the current device since it was opened
/// (freed ones included). All zero before a device is open.
pub fn memory() -> JsValue {
    let (run, (frames, timeline), device) = with_engine(|e| {
        (
            e.live.as_ref().map_or(0, |l| l.tensor_bytes),
            e.timeline.held(),
            e.session.ctx().allocated_bytes(),
        )
    })
    .unwrap_or((0, (0, 0), 0));
    let o = js_sys::Object::new();
    for (k, v) in [
        ("engine_bytes", run + timeline),
        ("run_bytes", run),
        ("timeline_bytes", timeline),
        ("timeline_frames", frames as u64),
        ("device_tensor_bytes", device),
    ] {
        let _ = js_sys::Reflect::set(&o, &k.into(), &JsValue::from_f64(v as f64));
    }
    o.into()
}

/// Put [`memory`] on `window` as `kakusanMemory`.
pub(super) fn install() {
    if let Some(w) = web_sys::window() {
        let f = Closure::<dyn Fn() -> JsValue>::new(memory);
        let _ = js_sys::Reflect::set(&w, &"kakusanMemory".into(), f.as_ref());
        f.forget();
    }
}
