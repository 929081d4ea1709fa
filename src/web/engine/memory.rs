//! `window.kakusanMemory()`: the GPU memory the engine holds, for the page soak
//! (tests/e2e/soak.mjs) and for anyone curious in the console.
//!
//! Owns nothing: it adds up what the other parts hold — the live run's tensors (counted by
//! the context as they are planned: weights, activations, noise, sampler state), the
//! timeline's recorded frames — and asks the context for its tracked buffers: every tensor,
//! static uniform, timeline frame and readback buffer, destroyed explicitly with
//! `Buffer::destroy()` once nothing uses it (`gpu::BufferTracker`), so the live figures
//! below do not wait for the browser's garbage collector. Uniform buffers the ops own
//! (`GpuContext::uniform_buffer`, tens of bytes each) and the canvases' swap-chain textures
//! are not tracked; the former are counted as `untracked_*`.

use wasm_bindgen::prelude::*;

use super::{lab::LAB_TAG, with_engine};
use crate::gpu::BufferReport;

/// An object of numbers (all zero before a device is open):
/// - `engine_bytes` = `run_bytes` + `timeline_bytes`: the sampler's live run (tensors
///   planned for it) and its recorded frames (`timeline_frames`);
/// - `device_tensor_bytes`: every tensor created on the current device (freed ones included);
/// - `gpu_live_buffers` / `gpu_live_bytes`: tracked buffers still in use, all views together,
///   and the same split by who made them: `sampler_bytes`, `timeline_buffer_bytes`,
///   `lab_bytes` (the diffusion lab: trainer, data, particles and their history, field views,
///   picks, drawing), `other_bytes` (toolbox and likelihood runs, temporary buffers);
/// - `gpu_created` / `gpu_created_bytes`, `gpu_destroyed` / `gpu_destroyed_bytes`: tracked
///   buffers made and explicitly destroyed on this device; `gpu_dying` / `gpu_dying_bytes`:
///   unused, waiting for the queue's work before their `destroy()`;
/// - `untracked_created` / `untracked_bytes`: the ops' uniform buffers (freed by the garbage
///   collector).
pub fn memory() -> JsValue {
    let (run, (frames, timeline), device, report) = with_engine(|e| {
        let ctx = e.session.ctx();
        (
            e.live.as_ref().map_or(0, |l| l.tensor_bytes),
            e.timeline.held(),
            ctx.allocated_bytes(),
            ctx.buffer_report(),
        )
    })
    .unwrap_or((0, (0, 0), 0, BufferReport::default()));
    let tag = |t: &str| report.by_tag.iter().find(|x| x.0 == t).map_or(0, |x| x.2);
    let c = report.counts;
    let o = js_sys::Object::new();
    for (k, v) in [
        ("engine_bytes", run + timeline),
        ("run_bytes", run),
        ("timeline_bytes", timeline),
        ("timeline_frames", frames as u64),
        ("device_tensor_bytes", device),
        ("gpu_live_buffers", report.live),
        ("gpu_live_bytes", report.live_bytes),
        ("sampler_bytes", tag("sampler")),
        ("timeline_buffer_bytes", tag("timeline")),
        ("lab_bytes", tag(LAB_TAG)),
        ("other_bytes", tag("other")),
        ("gpu_created", c.created),
        ("gpu_created_bytes", c.created_bytes),
        ("gpu_destroyed", c.destroyed),
        ("gpu_destroyed_bytes", c.destroyed_bytes),
        ("gpu_dying", c.dying),
        ("gpu_dying_bytes", c.dying_bytes),
        ("untracked_created", c.untracked),
        ("untracked_bytes", c.untracked_bytes),
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
