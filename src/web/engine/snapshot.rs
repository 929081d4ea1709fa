//! `window.kakusanSnapshot()`: a PNG data URL of what #reverse-canvas shows, rendered
//! offscreen by the same pipeline and read back once. For tests and screenshots only
//! (headless browsers often cannot capture WebGPU canvases); the animation never reads back.
//!
//! Owns no state: it reads the shown pair ([`timeline`](super::timeline)) and draws with
//! the [`session`](super::session)'s presenter into a texture of its own.

use wasm_bindgen::{JsCast, JsValue};

use super::{with_engine, Engine};

/// An offscreen render of the canvas, being copied into a mappable buffer.
struct Readback {
    buffer: wgpu::Buffer,
    width: u32,
    height: u32,
    /// Row pitch of `buffer` (a multiple of 256 bytes, as texture copies require).
    bytes_per_row: u32,
    bgra: bool,
    /// Kept alive until the copy has run.
    _texture: wgpu::Texture,
}

impl Engine {
    /// Render what the canvas shows into an offscreen texture and start copying it into a
    /// buffer. None without a run.
    fn start_readback(&self) -> Option<Readback> {
        let (shape, xt, x0) = self.pair(self.timeline.shown())?;
        let session = &self.session;
        let ctx = session.ctx();
        let config = session.surface_config();
        let (width, height) = (config.width, config.height);
        let size = wgpu::Extent3d {
            width,
            height,
            depth_or_array_layers: 1,
        };
        let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("snapshot"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: config.format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        session.render(&view, (width, height), shape, xt, x0);
        let bytes_per_row = (width * 4).div_ceil(256) * 256;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("snapshot readback"),
            size: (bytes_per_row * height) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(bytes_per_row),
                    rows_per_image: Some(height),
                },
            },
            size,
        );
        ctx.queue.submit([enc.finish()]);
        let bgra = matches!(
            config.format,
            wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
        );
        Some(Readback {
            buffer,
            width,
            height,
            bytes_per_row,
            bgra,
            _texture: texture,
        })
    }
}

fn js_err(msg: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&msg.to_string())
}

/// Resolves to a PNG data URL of the canvas's content, or an empty string when no run
/// exists.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = kakusanSnapshot)]
pub async fn snapshot() -> Result<JsValue, JsValue> {
    let Some((readback, scope, ctx)) = with_engine(|e| {
        let ctx = e.session.ctx().clone();
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        (e.start_readback(), scope.pop(), ctx)
    }) else {
        return Ok("".into());
    };
    if let Some(err) = scope.await {
        return Err(js_err(format!("snapshot: {err}")));
    }
    let Some(rb) = readback else {
        return Ok("".into());
    };
    ctx.finish().await.map_err(js_err)?;
    let (tx, rx) = futures_channel::oneshot::channel();
    rb.buffer.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    rx.await.map_err(|_| js_err("device lost"))?.map_err(|e| {
        let gpu = ctx.check().err().map(|x| x.to_string());
        js_err(format!("{e} {}", gpu.unwrap_or_default()))
    })?;
    let (w, h) = (rb.width as usize, rb.height as usize);
    let mut rgba = vec![0u8; w * h * 4];
    {
        let data = rb.buffer.get_mapped_range(..).map_err(js_err)?;
        for y in 0..h {
            let start = y * rb.bytes_per_row as usize;
            let out = &mut rgba[y * w * 4..(y + 1) * w * 4];
            out.copy_from_slice(&data[start..start + w * 4]);
            if rb.bgra {
                for p in out.chunks_mut(4) {
                    p.swap(0, 2);
                }
            }
        }
    }
    rb.buffer.unmap();
    let doc = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let canvas: web_sys::HtmlCanvasElement = doc.create_element("canvas")?.unchecked_into();
    canvas.set_width(rb.width);
    canvas.set_height(rb.height);
    let ctx2d: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")?
        .ok_or("no 2-D canvas")?
        .unchecked_into();
    let img = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
        wasm_bindgen::Clamped(&rgba),
        rb.width,
        rb.height,
    )?;
    ctx2d.put_image_data(&img, 0.0, 0.0)?;
    Ok(canvas.to_data_url()?.into())
}
