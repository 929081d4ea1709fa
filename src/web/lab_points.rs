//! Drawing the diffusion lab on its WebGPU canvas (`shaders/lab_points.wgsl`): discs (a
//! triangle each, one draw per layer of points) read from storage buffers (data, particles at
//! a recorded step or between two, picked particles and their x̂_0) and line strips for picked
//! particles' trajectories, over an optional static [`Layer`] and field-view panels
//! (`lab::field`'s images, blitted first). Nothing is read back.

use crate::gpu::GpuContext;
use crate::lab::field::{BlitSource, FieldBlit};
use crate::shaders::LAB_POINTS;

/// Uniforms of `lab_points.wgsl` (24 scalars, 96 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PointsView {
    pub scale: [f32; 2],
    pub offset: [f32; 2],
    pub px: [f32; 2],
    pub radius_px: f32,
    pub alpha: f32,
    pub base: u32,
    pub stride: u32,
    pub count: u32,
    pub use_pick: u32,
    pub num_classes: u32,
    pub ring: u32,
    pub sqrt_ab: f32,
    pub sqrt_one_minus_ab: f32,
    pub noise_seed: u32,
    pub use_color: u32,
    pub rgb: [f32; 3],
    /// Points drawn at mix(row `base`, row `prev_base`, back): particles between their last
    /// two completed steps (0: row `base` alone).
    pub back: f32,
    pub prev_base: u32,
    pub pad: u32,
}

/// Half the width of the world square shown (x_T ~ N(0, I) lies almost entirely inside ±3).
pub const WORLD_HALF: f32 = 3.0;

impl PointsView {
    /// The view of the world square [−3, 3]² centred in a `width` × `height` canvas.
    pub fn fit(width: u32, height: u32) -> PointsView {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        let px_per_unit = w.min(h) / (2.0 * WORLD_HALF);
        PointsView {
            scale: [2.0 * px_per_unit / w, 2.0 * px_per_unit / h],
            offset: [0.0, 0.0],
            px: [2.0 / w, 2.0 / h],
            radius_px: 2.0,
            alpha: 1.0,
            stride: 4,
            sqrt_ab: 1.0,
            ..Default::default()
        }
    }

    /// World coordinates of a canvas point given in fractions of its size (0..1, y down).
    pub fn to_world(&self, fx: f32, fy: f32) -> [f32; 2] {
        let (cx, cy) = (fx * 2.0 - 1.0, 1.0 - fy * 2.0);
        [
            (cx - self.offset[0]) / self.scale[0],
            (cy - self.offset[1]) / self.scale[1],
        ]
    }
}

/// What one draw call reads and how many it draws.
pub enum Shape {
    /// `n` discs (or rings).
    Points(u32),
    /// `strips` line strips of `len` vertices.
    Lines { len: u32, strips: u32 },
}

pub struct Draw<'a> {
    pub view: PointsView,
    pub pts: &'a wgpu::Buffer,
    pub picks: &'a wgpu::Buffer,
    pub shape: Shape,
}

/// A field-view image drawn under the points: stretched over `rect` = (x, y, w, h) in target
/// pixels from the top-left corner, then `overlay` drawn with the viewport set to `rect` (clip
/// space = the panel, so a [`PointsView::fit`] of the rect's size puts the world square on the
/// panel, and whatever leaves it is clipped at its edge).
pub struct PanelDraw<'a> {
    pub blit: &'a FieldBlit,
    pub src: &'a BlitSource,
    pub rect: [f32; 4],
    pub overlay: Vec<Draw<'a>>,
}

pub struct PointsRenderer {
    points: wgpu::RenderPipeline,
    lines: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    /// Copies a [`Layer`] under the points (`vs_layer`/`fs_layer`).
    layer_pipeline: wgpu::RenderPipeline,
    layer_layout: wgpu::BindGroupLayout,
    format: wgpu::TextureFormat,
    /// One uniform buffer per draw slot (written every frame).
    uniforms: Vec<wgpu::Buffer>,
}

/// A static layer (the data points): drawn once into a texture of the target's size and
/// format by [`PointsRenderer::draw_layer`], then copied under the moving points every frame
/// (one triangle, a texel per pixel) instead of drawing thousands of quads again.
pub struct Layer {
    texture: wgpu::Texture,
    bind_group: wgpu::BindGroup,
    pub size: [u32; 2],
}

/// The most draw calls in one frame (panels' overlays included).
pub const MAX_DRAWS: usize = 16;

impl PointsRenderer {
    pub fn new(ctx: &GpuContext, format: wgpu::TextureFormat) -> PointsRenderer {
        let device = &ctx.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(LAB_POINTS.name),
            source: wgpu::ShaderSource::Wgsl(LAB_POINTS.source.into()),
        });
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let read = wgpu::BufferBindingType::Storage { read_only: true };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("lab points"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, read),
                entry(2, read),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("lab points"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let layer_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("lab layer"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 3,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: false },
                    view_dimension: wgpu::TextureViewDimension::D2,
                    multisampled: false,
                },
                count: None,
            }],
        });
        let layer_pipeline_layout =
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("lab layer"),
                bind_group_layouts: &[Some(&layer_layout)],
                immediate_size: 0,
            });
        let pipeline = |vs: &str, fs: &str, topology, layout, blend| {
            device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some("lab points"),
                layout: Some(layout),
                vertex: wgpu::VertexState {
                    module: &module,
                    entry_point: Some(vs),
                    compilation_options: Default::default(),
                    buffers: &[],
                },
                primitive: wgpu::PrimitiveState {
                    topology,
                    ..Default::default()
                },
                depth_stencil: None,
                multisample: wgpu::MultisampleState::default(),
                fragment: Some(wgpu::FragmentState {
                    module: &module,
                    entry_point: Some(fs),
                    compilation_options: Default::default(),
                    targets: &[Some(wgpu::ColorTargetState {
                        format,
                        blend,
                        write_mask: wgpu::ColorWrites::ALL,
                    })],
                }),
                multiview_mask: None,
                cache: None,
            })
        };
        let blend = Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING);
        let triangles = wgpu::PrimitiveTopology::TriangleList;
        let points = pipeline("vs_points", "fs_points", triangles, &pipeline_layout, blend);
        let lines = pipeline(
            "vs_traj",
            "fs_traj",
            wgpu::PrimitiveTopology::LineStrip,
            &pipeline_layout,
            blend,
        );
        let layer_pipeline = pipeline(
            "vs_layer",
            "fs_layer",
            triangles,
            &layer_pipeline_layout,
            None,
        );
        let uniforms = (0..MAX_DRAWS)
            .map(|_| ctx.uniform_buffer(std::mem::size_of::<PointsView>()))
            .collect();
        PointsRenderer {
            points,
            lines,
            layout,
            layer_pipeline,
            layer_layout,
            format,
            uniforms,
        }
    }

    /// A layer of `size` = (width, height) pixels for targets of this renderer's format.
    pub fn layer(&self, ctx: &GpuContext, size: [u32; 2]) -> Layer {
        let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("lab layer"),
            size: wgpu::Extent3d {
                width: size[0].max(1),
                height: size[1].max(1),
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: self.format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("lab layer"),
            layout: &self.layer_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 3,
                resource: wgpu::BindingResource::TextureView(&view),
            }],
        });
        Layer {
            texture,
            bind_group,
            size,
        }
    }

    /// Clear `layer` to the background and make the draws into it (at most [`MAX_DRAWS`]).
    pub fn draw_layer(&self, ctx: &GpuContext, layer: &Layer, draws: &[Draw]) {
        let view = layer
            .texture
            .create_view(&wgpu::TextureViewDescriptor::default());
        self.draw_with_panels(ctx, &view, layer.size, None, &[], draws);
    }

    /// Clear `target` to the background and make the draws in order (at most [`MAX_DRAWS`]).
    pub fn draw(&self, ctx: &GpuContext, target: &wgpu::TextureView, draws: &[Draw]) {
        self.draw_with_panels(ctx, target, [0, 0], None, &[], draws);
    }

    /// [`PointsRenderer::draw`] over a static `layer` (of the target's size; copied first) and
    /// field-view panels (blitted next, in the same pass); `size` = the target's (width,
    /// height) in pixels, to restore the full viewport after the panels.
    pub fn draw_with_panels(
        &self,
        ctx: &GpuContext,
        target: &wgpu::TextureView,
        size: [u32; 2],
        layer: Option<&Layer>,
        panels: &[PanelDraw],
        draws: &[Draw],
    ) {
        // Panels' overlays first, then the draws over the whole target: one uniform slot each.
        let all: Vec<&Draw> = panels
            .iter()
            .flat_map(|p| &p.overlay)
            .chain(draws)
            .collect();
        let bind_groups: Vec<wgpu::BindGroup> = all
            .iter()
            .zip(&self.uniforms)
            .map(|(d, u)| {
                ctx.queue.write_buffer(u, 0, bytemuck::bytes_of(&d.view));
                ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("lab points"),
                    layout: &self.layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: u.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: d.pts.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: d.picks.as_entire_binding(),
                        },
                    ],
                })
            })
            .collect();
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("lab points"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: target,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color {
                            r: 0.07,
                            g: 0.08,
                            b: 0.10,
                            a: 1.0,
                        }),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            if let Some(l) = layer {
                pass.set_pipeline(&self.layer_pipeline);
                pass.set_bind_group(0, &l.bind_group, &[]);
                pass.draw(0..3, 0..1);
            }
            let mut slots = bind_groups.iter();
            for p in panels {
                p.blit.draw(&mut pass, p.src, p.rect);
                for (d, bg) in p.overlay.iter().zip(slots.by_ref()) {
                    self.encode_draw(&mut pass, d, bg);
                }
            }
            if !panels.is_empty() {
                pass.set_viewport(0.0, 0.0, size[0] as f32, size[1] as f32, 0.0, 1.0);
            }
            for (d, bg) in draws.iter().zip(slots) {
                self.encode_draw(&mut pass, d, bg);
            }
        }
        ctx.queue.submit([encoder.finish()]);
    }

    fn encode_draw(&self, pass: &mut wgpu::RenderPass<'_>, d: &Draw, bg: &wgpu::BindGroup) {
        match d.shape {
            Shape::Points(n) if n > 0 => {
                pass.set_pipeline(&self.points);
                pass.set_bind_group(0, bg, &[]);
                // A triangle per point, 3n vertices in one draw, not n instances: on
                // SwiftShader each instance costs ~20 µs (10,000 instanced quads ~200 ms,
                // 10,000 triangles in one draw ~15 ms).
                pass.draw(0..3 * n, 0..1);
            }
            Shape::Lines { len, strips } if len > 1 && strips > 0 => {
                pass.set_pipeline(&self.lines);
                pass.set_bind_group(0, bg, &[]);
                pass.draw(0..len, 0..strips);
            }
            _ => {}
        }
    }
}
