//! wgpu context: adapter and device, the pipeline cache, tensor buffers, recorded programs
//! and async readback. This is the only module that knows whether it runs natively or in
//! the browser, and it never blocks on wasm (readback is `map_async` + a future there).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::shaders::ShaderSource;

/// WebGPU's default `maxStorageBufferBindingSize`: we design every binding to fit in it so
/// that the same plan runs in any browser.
pub const PORTABLE_MAX_BINDING_BYTES: u64 = 128 << 20;
/// WebGPU's default `maxComputeWorkgroupsPerDimension`.
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

/// A dense f32 (or u32/i32, by the op's contract) tensor living in one GPU buffer.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: Arc<wgpu::Buffer>,
    pub shape: Vec<usize>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        (self.numel() * 4) as u64
    }
    /// The same buffer seen with another shape of equal element count.
    pub fn reshaped(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::shape(format!(
                "cannot view {:?} as {:?}",
                self.shape, shape
            )));
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
        })
    }
}

/// Check that a tensor has exactly the expected shape; `what` names it in the error.
pub fn expect_shape(t: &Tensor, shape: &[usize], what: &str) -> Result<()> {
    if t.shape != shape {
        return Err(Error::shape(format!(
            "{what}: expected shape {shape:?}, got {:?}",
            t.shape
        )));
    }
    Ok(())
}

/// Pipelines are cached by (shader, entry point, override constants).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
    layout: LayoutKey,
}

/// Explicit bind group layouts, so that a binding an entry point does not use is still
/// part of its layout: (uniform at 0?, read-only storage count, read-write storage count).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LayoutKey {
    pub uniform: bool,
    pub inputs: u32,
    pub outputs: u32,
}

/// One recorded compute dispatch: pipeline, its bind group (created once) and grid size.
/// Cloning is cheap (wgpu handles are reference-counted).
#[derive(Clone)]
pub struct Dispatch {
    pub label: &'static str,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl Dispatch {
    /// The same pipeline and bindings over another grid (e.g. a chunk of the rows, when the
    /// kernel reads where the chunk starts from a buffer).
    pub fn with_workgroups(mut self, workgroups: [u32; 3]) -> Dispatch {
        self.workgroups = workgroups;
        self
    }
}

/// A list of dispatches recorded once (at plan time) and replayed every step: no buffer,
/// bind group or pipeline is created when it runs.
#[derive(Default, Clone)]
pub struct Program {
    pub steps: Vec<Dispatch>,
}

impl Program {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
    /// Append another program's dispatches after this one's.
    pub fn extend(&mut self, other: &Program) {
        self.steps.extend(other.steps.iter().cloned());
    }
    /// Encode every dispatch, in order, into one compute pass.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("kakusan program"),
            timestamp_writes: None,
        });
        for d in &self.steps {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
        }
    }
}

/// A shader's WGSL as compiled: the embedded text, or natively, when `KAKUSAN_SHADER_DIR` is
/// set, the files in that folder assembled the same way ([`ShaderSource::read_from_dir`]; for
/// editing kernels and timing them with `kakusan bench --profile` without rebuilding).
fn shader_text(shader: &ShaderSource) -> std::borrow::Cow<'static, str> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(dir) = std::env::var_os("KAKUSAN_SHADER_DIR") {
        return shader.read_from_dir(std::path::Path::new(&dir)).into();
    }
    shader.source.into()
}

/// Where an op's uniform parameters come from.
pub enum Params<'a> {
    /// No uniform binding.
    None,
    /// Bytes fixed at record time (a uniform buffer is created once, now).
    Static(&'a [u8]),
    /// A uniform buffer the caller rewrites between runs (e.g. per-step sampler coefficients).
    Buffer(&'a wgpu::Buffer),
}

/// Description of one dispatch to record; see [`GpuContext::record`].
pub struct DispatchDesc<'a> {
    pub label: &'static str,
    pub shader: &'static ShaderSource,
    pub entry: &'static str,
    /// Pipeline-overridable constants (part of the pipeline cache key).
    pub constants: &'a [(&'static str, f64)],
    /// Uniforms, bound at `@binding(0)` when present.
    pub params: Params<'a>,
    /// Read-only storage buffers, bound from `@binding(1)` on in this order (from
    /// `@binding(0)` when there are no uniforms).
    pub inputs: &'a [&'a wgpu::Buffer],
    /// Read-write storage buffers, bound right after the inputs.
    pub outputs: &'a [&'a wgpu::Buffer],
    pub workgroups: [u32; 3],
}

/// Split a 1-D workgroup count into a grid that respects the per-dimension limit. Kernels
/// recover the linear workgroup index as `wg.x + wg.y * num_workgroups.x` and return early
/// when it is past the real count.
pub fn grid_1d(workgroups: u64) -> Result<[u32; 3]> {
    let max = MAX_WORKGROUPS_PER_DIM as u64;
    if workgroups == 0 {
        return Ok([0, 1, 1]);
    }
    if workgroups <= max {
        return Ok([workgroups as u32, 1, 1]);
    }
    let y = workgroups.div_ceil(max);
    if y > max {
        return Err(Error::shape(format!(
            "{workgroups} workgroups is more than one dispatch can launch"
        )));
    }
    Ok([max as u32, y as u32, 1])
}

pub fn div_ceil(a: usize, b: usize) -> usize {
    a.div_ceil(b)
}

/// Facts about the adapter, for the CLI's notices and the benchmark report.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    /// True for CPU adapters such as llvmpipe or SwiftShader.
    pub is_software: bool,
}

/// A bind group layout and the pipeline layout made from it.
type Layouts = (Arc<wgpu::BindGroupLayout>, Arc<wgpu::PipelineLayout>);

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    modules: RefCell<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    layouts: RefCell<HashMap<LayoutKey, Layouts>>,
    pipelines: RefCell<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// First uncaptured device error (validation, OOM) or device loss, turned into `Err` by `check`.
    error_slot: Arc<Mutex<Option<String>>>,
    /// Bytes of every tensor created through this context so far (see `allocated_bytes`).
    allocated: std::cell::Cell<u64>,
}

impl GpuContext {
    /// Create a context on the best adapter available: a hardware GPU when there is one,
    /// otherwise a software adapter (see [`AdapterSummary::is_software`]).
    pub async fn new() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| {
                Error::NoGpu(format!(
                    "no WebGPU/Vulkan/Metal/DX12 adapter was found ({e}). Natively, install a GPU \
                     driver or Mesa's Vulkan drivers (Debian: mesa-vulkan-drivers); in a browser, \
                     use one with WebGPU (Chrome/Edge 113+, Safari 26+, Firefox 141+ on Windows)"
                ))
            })?;
        Self::from_adapter(adapter).await
    }

    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        let adapter_limits = adapter.limits();
        // Take what the adapter offers for the limits we care about; everything else default.
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: adapter_limits.max_storage_buffer_binding_size,
            max_buffer_size: adapter_limits.max_buffer_size,
            max_storage_buffers_per_shader_stage: adapter_limits
                .max_storage_buffers_per_shader_stage
                .min(8),
            max_compute_workgroup_storage_size: adapter_limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: adapter_limits
                .max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: adapter_limits.max_compute_workgroup_size_x,
            max_compute_workgroup_size_y: adapter_limits.max_compute_workgroup_size_y,
            max_compute_workgroup_size_z: adapter_limits.max_compute_workgroup_size_z,
            ..wgpu::Limits::default()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kakusan"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::NoGpu(format!("could not open the GPU device: {e}")))?;
        let error_slot: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        {
            let slot = error_slot.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                if s.is_none() {
                    *s = Some(e.to_string());
                }
            }));
            let slot = error_slot.clone();
            device.set_device_lost_callback(move |reason, msg| {
                let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                if s.is_none() && reason != wgpu::DeviceLostReason::Destroyed {
                    *s = Some(format!("the GPU device was lost ({reason:?}): {msg}"));
                }
            });
        }
        let is_software = info.device_type == wgpu::DeviceType::Cpu
            || info.name.to_lowercase().contains("llvmpipe")
            || info.name.to_lowercase().contains("swiftshader");
        Ok(Self {
            device,
            queue,
            adapter: AdapterSummary {
                name: if info.name.is_empty() {
                    "unnamed adapter".into()
                } else {
                    info.name.clone()
                },
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                is_software,
            },
            limits,
            modules: RefCell::new(HashMap::new()),
            layouts: RefCell::new(HashMap::new()),
            pipelines: RefCell::new(HashMap::new()),
            error_slot,
            allocated: std::cell::Cell::new(0),
        })
    }

    /// The largest buffer one storage binding may hold on this device, never more than
    /// WebGPU's portable default so that plans made natively also fit in browsers.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(PORTABLE_MAX_BINDING_BYTES)
    }

    /// Turn the first error the device reported since the last call into `Err`.
    pub fn check(&self) -> Result<()> {
        let mut s = self.error_slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.take() {
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }

    fn module(&self, shader: &'static ShaderSource) -> Arc<wgpu::ShaderModule> {
        let mut modules = self.modules.borrow_mut();
        modules
            .entry(shader.name)
            .or_insert_with(|| {
                Arc::new(
                    self.device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(shader.name),
                            source: wgpu::ShaderSource::Wgsl(shader_text(shader)),
                        }),
                )
            })
            .clone()
    }

    fn layout(&self, key: LayoutKey) -> Layouts {
        let mut layouts = self.layouts.borrow_mut();
        layouts
            .entry(key)
            .or_insert_with(|| {
                let mut entries = Vec::new();
                let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let mut binding = 0;
                if key.uniform {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    });
                    binding = 1;
                }
                for _ in 0..key.inputs {
                    entries.push(storage(binding, true));
                    binding += 1;
                }
                for _ in 0..key.outputs {
                    entries.push(storage(binding, false));
                    binding += 1;
                }
                let bgl = self
                    .device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: None,
                        entries: &entries,
                    });
                let pl = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: None,
                        bind_group_layouts: &[Some(&bgl)],
                        immediate_size: 0,
                    });
                (Arc::new(bgl), Arc::new(pl))
            })
            .clone()
    }

    /// The pipeline for (shader, entry point, constants, layout), created on first use and cached.
    pub fn pipeline(
        &self,
        shader: &'static ShaderSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        layout: LayoutKey,
    ) -> Arc<wgpu::ComputePipeline> {
        let key = PipelineKey {
            shader: shader.name,
            entry,
            constants: constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
            layout,
        };
        if let Some(p) = self.pipelines.borrow().get(&key) {
            return p.clone();
        }
        let module = self.module(shader);
        let (_, pipeline_layout) = self.layout(layout);
        let pipeline = Arc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            },
        ));
        self.pipelines.borrow_mut().insert(key, pipeline.clone());
        pipeline
    }

    pub fn pipeline_count(&self) -> usize {
        self.pipelines.borrow().len()
    }

    /// Record one dispatch into `program`: the pipeline comes from the cache, the bind group
    /// (and a static uniform buffer, if any) is created now, once.
    pub fn record(&self, program: &mut Program, desc: DispatchDesc<'_>) -> Result<()> {
        let max = self.max_binding_bytes();
        for b in desc.inputs.iter().chain(desc.outputs) {
            if b.size() > max {
                return Err(Error::shape(format!(
                    "{}: a {} MiB buffer is over the {} MiB a storage binding may hold; use a smaller batch",
                    desc.label,
                    b.size() >> 20,
                    max >> 20
                )));
            }
        }
        let key = LayoutKey {
            uniform: !matches!(desc.params, Params::None),
            inputs: desc.inputs.len() as u32,
            outputs: desc.outputs.len() as u32,
        };
        let pipeline = self.pipeline(desc.shader, desc.entry, desc.constants, key);
        let (layout, _) = self.layout(key);
        let static_uniform;
        let mut entries = Vec::with_capacity(desc.inputs.len() + desc.outputs.len() + 1);
        let first = match desc.params {
            Params::None => 0,
            Params::Static(bytes) => {
                // Uniform buffers must be a multiple of 16 bytes.
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
                static_uniform =
                    self.device
                        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: Some(desc.label),
                            contents: &padded,
                            usage: wgpu::BufferUsages::UNIFORM,
                        });
                entries.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: static_uniform.as_entire_binding(),
                });
                1
            }
            Params::Buffer(buf) => {
                entries.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: buf.as_entire_binding(),
                });
                1
            }
        };
        for (i, b) in desc.inputs.iter().chain(desc.outputs).enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: first + i as u32,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(desc.label),
            layout: &layout,
            entries: &entries,
        });
        program.steps.push(Dispatch {
            label: desc.label,
            pipeline,
            bind_group,
            workgroups: desc.workgroups,
        });
        Ok(())
    }

    /// A zero-filled tensor (storage, copy source and destination).
    pub fn zeros(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let bytes = (n.max(1) * 4) as u64;
        if bytes > self.limits.max_buffer_size {
            return Err(Error::shape(format!(
                "a tensor of shape {shape:?} ({} MiB) is larger than this device's largest buffer",
                bytes >> 20
            )));
        }
        self.allocated.set(self.allocated.get() + bytes);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer: Arc::new(buffer),
            shape: shape.to_vec(),
        })
    }

    /// Upload f32 data as a new tensor.
    pub fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload_bytes(bytemuck::cast_slice(data), data.len(), shape)
    }

    /// Upload u32 data (indices, labels) as a new tensor.
    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        self.upload_bytes(bytemuck::cast_slice(data), data.len(), shape)
    }

    fn upload_bytes(&self, bytes: &[u8], len: usize, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != len {
            return Err(Error::shape(format!(
                "upload: {len} values given for shape {shape:?}"
            )));
        }
        let t = self.zeros(shape)?;
        if !bytes.is_empty() {
            self.queue.write_buffer(&t.buffer, 0, bytes);
        }
        Ok(t)
    }

    /// Overwrite a tensor's contents (same element count).
    pub fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        if data.len() != t.numel() {
            return Err(Error::shape(format!(
                "write: {} values for a tensor of shape {:?}",
                data.len(),
                t.shape
            )));
        }
        self.queue
            .write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    pub fn write_u32(&self, t: &Tensor, data: &[u32]) -> Result<()> {
        if data.len() != t.numel() {
            return Err(Error::shape(format!(
                "write: {} values for a tensor of shape {:?}",
                data.len(),
                t.shape
            )));
        }
        self.queue
            .write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    /// A uniform buffer the caller rewrites with `queue.write_buffer` between runs.
    /// Total bytes of the tensors created through this context so far (freed ones included).
    /// Training and sampling plan every buffer before their first step and create none per
    /// step, so read right after planning this is their peak GPU memory for tensors.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.get()
    }

    pub fn uniform_buffer(&self, bytes: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: (bytes.div_ceil(16).max(1) * 16) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Encode and submit a program.
    pub fn run(&self, program: &Program) -> Result<()> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        program.encode(&mut encoder);
        self.queue.submit([encoder.finish()]);
        self.check()
    }

    /// Run a program one dispatch at a time, waiting after each, and return each dispatch's
    /// label and wall time in seconds (a profiler for `kakusan bench --profile`; slow, since
    /// it serialises everything, but it shows where a step's time goes on any adapter).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn profile(&self, program: &Program) -> Result<Vec<(&'static str, [u32; 3], f64)>> {
        let mut out = Vec::with_capacity(program.len());
        for d in &program.steps {
            let one = Program {
                steps: vec![d.clone()],
            };
            let t0 = std::time::Instant::now();
            self.run(&one)?;
            self.finish().await?;
            out.push((d.label, d.workgroups, t0.elapsed().as_secs_f64()));
        }
        Ok(out)
    }

    /// Wait until the GPU has finished all submitted work. Natively this blocks; in the
    /// browser it awaits the queue's completion callback.
    pub async fn finish(&self) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.poll_native();
        rx.await
            .map_err(|_| Error::Gpu("the GPU device went away while waiting".into()))?;
        self.check()
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn poll_native(&self) {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }

    #[cfg(target_arch = "wasm32")]
    fn poll_native(&self) {}

    /// Copy a tensor back to the CPU as f32.
    pub async fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(&t.buffer, t.bytes()).await?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    /// Copy a tensor back to the CPU as u32.
    pub async fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(&t.buffer, t.bytes()).await?;
        Ok(bytemuck::cast_slice(&bytes).to_vec())
    }

    async fn read_bytes(&self, buffer: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, len);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.poll_native();
        rx.await
            .map_err(|_| Error::Gpu("the GPU device went away during readback".into()))?
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?;
        self.check()?;
        let data = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("readback failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }
}

/// Run a future to completion on native targets (CLI, tests).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// A context for kernel tests (llvmpipe in CI).
    pub fn ctx() -> GpuContext {
        block_on(GpuContext::new()).expect("tests need a GPU adapter (install mesa-vulkan-drivers)")
    }

    /// Deterministic uniform values in [-1, 1).
    pub fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Max |a - b| / (atol + rtol |b|) must be <= 1; reports the worst element.
    pub fn assert_close(got: &[f32], want: &[f64], atol: f64, rtol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let mut worst = (0.0f64, 0usize);
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let d = (g as f64 - w).abs();
            let r = if d == 0.0 {
                0.0
            } else {
                d / (atol + rtol * w.abs())
            };
            // A NaN is the worst element and stays so (`r > NaN` is false).
            if r.is_nan() || r > worst.0 {
                worst = (r, i);
            }
        }
        let i = worst.1;
        assert!(
            worst.0 <= 1.0,
            "{what}: element {i}: got {}, want {} (|diff| {:e}, atol {atol:e}, rtol {rtol:e})",
            got[i],
            want[i],
            (got[i] as f64 - want[i]).abs()
        );
    }
}
