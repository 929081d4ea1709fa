//! The browser app (Leptos, client-side rendering): watch DDPM/DDIM denoise live on WebGPU
//! and explore the forward process. Built with `trunk build --release` (see docs/web.md).
//!
//! - [`engine`]: the page's GPU side, one file per concern: the GPU session (device,
//!   canvas, device loss), the sampling run and its animation loop, the timeline, model
//!   loading, the benchmark and the snapshot (see its module doc for who owns what).
//! - [`loader`]: getting model files into the page (fetch with progress, picked files).
//! - [`present`]: the render pipeline that draws x_t and x̂_0 straight from GPU buffers.
//! - [`forward`], [`plots`]: the forward-process explorer and SVG plots (CPU only).
//! - [`lab`], [`lab_points`]: the diffusion lab's view (controls, text, plots) and its
//!   point renderer; its GPU side is `engine::lab`.
//! - [`toolbox`]: the toolbox panel (inpainting with a painted mask, interpolation).
//! - [`likelihood`]: the likelihood and anomaly panel (bits/dim per t, reconstruction score).
//! - [`controls`]: form rows both of those panels use (number fields, class select).
//! - [`app`]: the page (components, controls with the contract's DOM ids).

pub mod app;
pub mod controls;
pub mod engine;
pub mod forward;
pub mod lab;
pub mod lab_points;
pub mod likelihood;
pub mod loader;
pub mod plots;
pub mod present;
pub mod toolbox;

#[cfg(feature = "web-app")]
use wasm_bindgen::prelude::*;

/// Writes a panic's message into #error (and the console) so that nothing fails silently.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        let msg = format!("Internal error — please reload the page (and report this): {info}");
        if let Some(el) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("error"))
        {
            el.set_text_content(Some(&msg));
            let _ = el.remove_attribute("hidden");
        }
    }));
}

#[cfg_attr(feature = "web-app", wasm_bindgen(start))]
pub fn start_app() {
    install_panic_hook();
    leptos::mount::mount_to_body(app::App);
    app::after_mount();
}
