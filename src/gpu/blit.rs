//! Full-viewport blits: a render pipeline whose vertex shader `vs` covers the viewport with one
//! triangle and whose fragment shader `fs` reads a uniform (`@binding(0)`) and read-only
//! storage buffers (`@binding(1)`…) to colour each pixel. The page's two pictures drawn
//! straight from GPU buffers use it: the sampler's x_t | x̂_0 (`web::present`,
//! `shaders/present.wgsl`) and the lab's field panels (`lab::field::FieldBlit`,
//! `shaders/lab_blit.wgsl`).

use crate::error::{Error, Result};
use crate::shaders::ShaderSource;

use super::GpuContext;

/// One blit pipeline (made once per shader and target format) and its bind group layout.
pub struct BlitPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    storage_buffers: usize,
}

impl BlitPipeline {
    /// The pipeline of `shader` (entry points `vs` and `fs`) drawing into targets of `format`
    /// without blending, with a uniform at binding 0 and `storage_buffers` read-only storage
    /// buffers at bindings 1…, all visible to the fragment stage.
    pub fn new(
        ctx: &GpuContext,
        shader: &ShaderSource,
        storage_buffers: usize,
        format: wgpu::TextureFormat,
    ) -> BlitPipeline {
        let device = &ctx.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(shader.source.into()),
        });
        let entry = |binding: usize, ty| wgpu::BindGroupLayoutEntry {
            binding: binding as u32,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> =
            std::iter::once(entry(0, wgpu::BufferBindingType::Uniform))
                .chain(
                    (1..=storage_buffers)
                        .map(|b| entry(b, wgpu::BufferBindingType::Storage { read_only: true })),
                )
                .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(shader.name),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(shader.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some(shader.name),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs"),
                compilation_options: Default::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        BlitPipeline {
            pipeline,
            layout,
            storage_buffers,
        }
    }

    /// A bind group of `uniforms` and the storage buffers (whole buffers, in binding order).
    pub fn bind_group(
        &self,
        ctx: &GpuContext,
        uniforms: &wgpu::Buffer,
        storage: &[&wgpu::Buffer],
    ) -> Result<wgpu::BindGroup> {
        if storage.len() != self.storage_buffers {
            return Err(Error::shape(format!(
                "blit: {} storage buffers given to a pipeline with {}",
                storage.len(),
                self.storage_buffers
            )));
        }
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(uniforms)
            .chain(storage.iter().copied())
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        Ok(ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("blit"),
            layout: &self.layout,
            entries: &entries,
        }))
    }

    /// Draw over the pass's current viewport (the whole target unless the caller set one).
    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>, bind_group: &wgpu::BindGroup) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}
