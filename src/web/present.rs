//! Drawing the reverse process on the WebGPU canvas: a tiny render pipeline
//! (`shaders/present.wgsl`) that reads the sampler's x_t and x̂_0 storage buffers directly,
//! so the animation never reads anything back to the CPU.

use crate::gpu::blit::BlitPipeline;
use crate::gpu::GpuContext;
use crate::shaders::PRESENT;

/// Uniforms of `present.wgsl` (16 scalars, 64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PresentParams {
    pub n: u32,
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub cols: u32,
    pub scale: f32,
    pub inner_gap: f32,
    pub outer_gap: f32,
    pub origin_x: f32,
    pub origin_y: f32,
    pub bg: [f32; 3],
    pub pad: [f32; 3],
}

/// The grid that fits `n` pairs of (h, w) images best into a `width` × `height` canvas.
pub fn layout(n: usize, c: usize, h: usize, w: usize, width: u32, height: u32) -> PresentParams {
    let (cw, ch) = (width as f32, height as f32);
    let mut best = PresentParams::default();
    for cols in 1..=n.max(1) {
        let rows = n.div_ceil(cols);
        // Gaps scale with the image: a tenth of its size between pairs, a twentieth inside.
        let unit_w = cols as f32 * (2.0 * w as f32 * 1.05 + w as f32 * 0.15);
        let unit_h = rows as f32 * (h as f32 * 1.15);
        let scale = (cw / unit_w).min(ch / unit_h);
        if scale > best.scale {
            let inner = (w as f32 * 0.05 * scale).max(2.0);
            let outer = (w as f32 * 0.15 * scale).max(4.0);
            let img_w = w as f32 * scale;
            let img_h = h as f32 * scale;
            let grid_w = cols as f32 * (2.0 * img_w + inner + outer) - outer;
            let grid_h = rows as f32 * (img_h + outer) - outer;
            best = PresentParams {
                n: n as u32,
                c: c as u32,
                h: h as u32,
                w: w as u32,
                cols: cols as u32,
                scale,
                inner_gap: inner,
                outer_gap: outer,
                origin_x: ((cw - grid_w) / 2.0).floor(),
                origin_y: ((ch - grid_h) / 2.0).floor(),
                bg: [0.09, 0.10, 0.12],
                pad: [0.0; 3],
            };
        }
    }
    best
}

pub struct Presenter {
    blit: BlitPipeline,
    params: wgpu::Buffer,
}

impl Presenter {
    pub fn new(ctx: &GpuContext, format: wgpu::TextureFormat) -> Presenter {
        Presenter {
            blit: BlitPipeline::new(ctx, &PRESENT, 2, format),
            params: ctx.uniform_buffer(std::mem::size_of::<PresentParams>()),
        }
    }

    /// Draw x_t and x̂_0 (buffers of shape (N, C, H, W)) into `target`.
    pub fn draw(
        &self,
        ctx: &GpuContext,
        target: &wgpu::TextureView,
        params: &PresentParams,
        xt: &wgpu::Buffer,
        x0: &wgpu::Buffer,
    ) {
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(params));
        // Two storage buffers, as the pipeline was made: cannot fail.
        let Ok(bind_group) = self.blit.bind_group(ctx, &self.params, &[xt, x0]) else {
            return;
        };
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("present"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: target,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            self.blit.draw(&mut pass, &bind_group);
        }
        ctx.queue.submit([encoder.finish()]);
    }
}
