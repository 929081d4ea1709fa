//! wgpu context: adapter and device, the pipeline cache, tensor buffers, recorded programs
//! and async readback. This is the only module that knows whether it runs natively or in
//! the browser, and it never blocks on wasm (readback is `map_async` + a future there).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

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
    /// Keeps the tracked buffers its bind group uses (tensors, its static uniforms) from
    /// being destroyed while this dispatch may still run (see [`BufferTracker`]).
    _bound: Vec<Arc<()>>,
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

/// One buffer the context destroys explicitly once nothing uses it (see [`BufferTracker`]).
struct TrackedBuffer {
    /// The tensor's buffer (`Tensor::buffer`); None for a buffer only recorded dispatches
    /// hold (a static uniform).
    owner: Option<Weak<wgpu::Buffer>>,
    /// A second handle to the same buffer, to call `destroy()` on.
    handle: wgpu::Buffer,
    /// Cloned into every recorded [`Dispatch`] that binds the buffer: a bind group must
    /// never outlive its buffers' `destroy()`.
    bound: Arc<()>,
    bytes: u64,
    /// Who made it (`GpuContext::tag_scope`), for `window.kakusanMemory()`'s breakdown.
    tag: &'static str,
}

impl TrackedBuffer {
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.bound) > 1
            || self.owner.as_ref().is_some_and(|w| w.strong_count() > 0)
    }
}

/// Counters of the buffers the context made, shared with the destroy callbacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferCounts {
    /// Tracked buffers created (tensors, static uniforms, readback staging), and their bytes.
    pub created: u64,
    pub created_bytes: u64,
    /// Of those, destroyed with `Buffer::destroy()`.
    pub destroyed: u64,
    pub destroyed_bytes: u64,
    /// Unused and waiting for the queue's work to finish before their `destroy()`.
    pub dying: u64,
    pub dying_bytes: u64,
    /// Uniform buffers made by [`GpuContext::uniform_buffer`]: owned by their callers as plain
    /// `wgpu::Buffer`s and not tracked (on WebGPU the garbage collector frees them).
    pub untracked: u64,
    pub untracked_bytes: u64,
}

/// What [`GpuContext::buffer_report`] returns: the counters and the live tracked buffers
/// per tag (count, bytes), tags in first-seen order.
#[derive(Clone, Debug, Default)]
pub struct BufferReport {
    pub counts: BufferCounts,
    pub live: u64,
    pub live_bytes: u64,
    pub by_tag: Vec<(&'static str, u64, u64)>,
}

/// Explicit `destroy()` of GPU buffers nobody uses any more.
///
/// wgpu frees a dropped buffer natively, but on WebGPU (wgpu 30) dropping a `wgpu::Buffer`
/// does nothing: the GPU memory waits for the browser's garbage collector. So every tensor
/// buffer, static uniform and readback buffer the context makes is registered here. A
/// tensor's buffer is unused once no `Tensor` holds it (the registry keeps only a `Weak`)
/// and no recorded dispatch binds it (dispatches hold `bound`). [`GpuContext::sweep`] —
/// called after every submission of a program, in `finish` and before a report — takes the
/// unused ones out and destroys them at a later sweep, once a `queue.on_submitted_work_done`
/// callback registered when they were found has run, i.e. only after every submission that
/// could still read or write them has completed (WebGPU would allow an earlier `destroy()`,
/// but this way no in-flight work ever sees a destroyed buffer). Readback buffers are
/// destroyed right after their mapping was read and unmapped.
#[derive(Default)]
struct BufferTracker {
    /// Keyed by the buffer's address inside its `Arc` (the `Weak` keeps that allocation, so
    /// a key is never reused while its entry exists); static uniforms by a counter with the
    /// top bit set.
    buffers: HashMap<u64, TrackedBuffer>,
    next_static: u64,
    counts: Arc<Mutex<BufferCounts>>,
    /// Unused buffers by sweep (batch number), waiting for the queue's work.
    dying: Vec<(u64, Vec<(wgpu::Buffer, u64)>)>,
    next_batch: u64,
    /// The last batch whose `on_submitted_work_done` callback has run.
    done_batch: Arc<std::sync::atomic::AtomicU64>,
}

/// Restores the previous tag when dropped; see [`GpuContext::tag_scope`].
pub struct TagScope<'a> {
    ctx: &'a GpuContext,
    previous: &'static str,
}

impl Drop for TagScope<'_> {
    fn drop(&mut self) {
        self.ctx.tag.set(self.previous);
    }
}

fn buffer_key(b: &wgpu::Buffer) -> u64 {
    b as *const wgpu::Buffer as usize as u64
}

fn lock_counts(c: &Mutex<BufferCounts>) -> std::sync::MutexGuard<'_, BufferCounts> {
    c.lock().unwrap_or_else(|p| p.into_inner())
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
    /// Buffers destroyed explicitly once unused (see [`BufferTracker`]).
    tracker: RefCell<BufferTracker>,
    /// The tag new tracked buffers get (see [`GpuContext::tag_scope`]).
    tag: Cell<&'static str>,
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
            tracker: RefCell::new(BufferTracker::default()),
            tag: Cell::new("other"),
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
        let uniform = match desc.params {
            Params::Buffer(b) => Some(b),
            _ => None,
        };
        let mut bound = self.bound_tokens(
            desc.inputs
                .iter()
                .chain(desc.outputs)
                .copied()
                .chain(uniform),
        );
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
                bound.push(self.track_static(&static_uniform));
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
            _bound: bound,
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
        let buffer = Arc::new(buffer);
        self.track(&buffer);
        Ok(Tensor {
            buffer,
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

    /// Total bytes of the tensors created through this context so far (freed ones included).
    /// Training and sampling plan every buffer before their first step and create none per
    /// step, so read right after planning this is their peak GPU memory for tensors.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.get()
    }

    /// A uniform buffer the caller rewrites with `queue.write_buffer` between runs. Not
    /// tracked (the caller owns it as a plain `wgpu::Buffer`); only counted.
    pub fn uniform_buffer(&self, bytes: usize) -> wgpu::Buffer {
        let size = (bytes.div_ceil(16).max(1) * 16) as u64;
        {
            let t = self.tracker.borrow();
            let mut c = lock_counts(&t.counts);
            c.untracked += 1;
            c.untracked_bytes += size;
        }
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer of `bytes` (at least 4) that is destroyed explicitly once the
    /// returned `Arc` and every recorded dispatch binding it are gone (e.g. the page's
    /// timeline frames).
    pub fn tracked_buffer(
        &self,
        label: &'static str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Arc<wgpu::Buffer> {
        let buffer = Arc::new(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage,
            mapped_at_creation: false,
        }));
        self.track(&buffer);
        buffer
    }

    /// New tracked buffers made until the returned guard is dropped get `tag` (the page's
    /// memory report sums live bytes per tag: "sampler", "timeline", "lab", …; "other"
    /// otherwise). Hold it only in synchronous code: an await would let other tasks'
    /// buffers take the tag.
    pub fn tag_scope(&self, tag: &'static str) -> TagScope<'_> {
        TagScope {
            ctx: self,
            previous: self.tag.replace(tag),
        }
    }

    fn track(&self, buffer: &Arc<wgpu::Buffer>) {
        let mut t = self.tracker.borrow_mut();
        let bytes = buffer.size();
        {
            let mut c = lock_counts(&t.counts);
            c.created += 1;
            c.created_bytes += bytes;
        }
        t.buffers.insert(
            buffer_key(buffer),
            TrackedBuffer {
                owner: Some(Arc::downgrade(buffer)),
                handle: (**buffer).clone(),
                bound: Arc::new(()),
                bytes,
                tag: self.tag.get(),
            },
        );
    }

    /// Track a buffer that only recorded dispatches hold; returns their token.
    fn track_static(&self, buffer: &wgpu::Buffer) -> Arc<()> {
        let mut t = self.tracker.borrow_mut();
        let bytes = buffer.size();
        {
            let mut c = lock_counts(&t.counts);
            c.created += 1;
            c.created_bytes += bytes;
        }
        let bound = Arc::new(());
        let key = (1 << 63) | t.next_static;
        t.next_static += 1;
        t.buffers.insert(
            key,
            TrackedBuffer {
                owner: None,
                handle: buffer.clone(),
                bound: bound.clone(),
                bytes,
                tag: self.tag.get(),
            },
        );
        bound
    }

    /// The tokens that keep the tracked buffers among `buffers` alive for a dispatch.
    fn bound_tokens<'b>(&self, buffers: impl Iterator<Item = &'b wgpu::Buffer>) -> Vec<Arc<()>> {
        let t = self.tracker.borrow();
        buffers
            .filter_map(|b| t.buffers.get(&buffer_key(b)).map(|e| e.bound.clone()))
            .collect()
    }

    /// Destroy every tracked buffer nothing uses any more, once the queue's work submitted
    /// before it became unused has completed: the unused ones found now are destroyed by a
    /// later sweep, after `on_submitted_work_done` said so (its callback must be `Send`, which
    /// a WebGPU buffer is not, so it only raises a counter). Cheap enough to call after every
    /// submission (one pass over the tracked buffers).
    pub fn sweep(&self) {
        let mut t = self.tracker.borrow_mut();
        let mut dead = Vec::new();
        t.buffers.retain(|_, e| {
            let keep = e.in_use();
            if !keep {
                dead.push((e.handle.clone(), e.bytes));
            }
            keep
        });
        if !dead.is_empty() {
            t.next_batch += 1;
            let batch = t.next_batch;
            {
                let mut c = lock_counts(&t.counts);
                c.dying += dead.len() as u64;
                c.dying_bytes += dead.iter().map(|d| d.1).sum::<u64>();
            }
            t.dying.push((batch, dead));
            let done = t.done_batch.clone();
            // Natively the callback may run at once; it only touches the atomic.
            self.queue.on_submitted_work_done(move || {
                done.fetch_max(batch, std::sync::atomic::Ordering::Relaxed);
            });
        }
        let done = t.done_batch.load(std::sync::atomic::Ordering::Relaxed);
        if t.dying.first().is_some_and(|b| b.0 <= done) {
            let counts = t.counts.clone();
            let mut c = lock_counts(&counts);
            t.dying.retain(|(batch, buffers)| {
                if *batch > done {
                    return true;
                }
                for (buffer, bytes) in buffers {
                    buffer.destroy();
                    c.dying -= 1;
                    c.dying_bytes -= bytes;
                    c.destroyed += 1;
                    c.destroyed_bytes += bytes;
                }
                false
            });
        }
    }

    /// Sweep, then count: created/destroyed/dying buffers and the live tracked ones by tag.
    pub fn buffer_report(&self) -> BufferReport {
        self.sweep();
        let t = self.tracker.borrow();
        let mut r = BufferReport {
            counts: *lock_counts(&t.counts),
            ..Default::default()
        };
        for e in t.buffers.values() {
            r.live += 1;
            r.live_bytes += e.bytes;
            match r.by_tag.iter_mut().find(|x| x.0 == e.tag) {
                Some(x) => {
                    x.1 += 1;
                    x.2 += e.bytes;
                }
                None => r.by_tag.push((e.tag, 1, e.bytes)),
            }
        }
        r.by_tag.sort_by_key(|x| x.0);
        r
    }

    /// Encode and submit a program.
    pub fn run(&self, program: &Program) -> Result<()> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        program.encode(&mut encoder);
        self.queue.submit([encoder.finish()]);
        self.sweep();
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
        self.sweep();
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
        let staging = Staging::new(self, len);
        let staging = &staging.buffer;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(buffer, 0, staging, 0, len);
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

/// A readback buffer, destroyed (and counted) when dropped: after its mapping was read and
/// unmapped, or when the readback failed or its future was dropped (then the pending
/// `map_async` is aborted, which is what a dropped readback wants).
struct Staging {
    buffer: wgpu::Buffer,
    counts: Arc<Mutex<BufferCounts>>,
}

impl Staging {
    fn new(ctx: &GpuContext, len: u64) -> Staging {
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let counts = ctx.tracker.borrow().counts.clone();
        {
            let mut c = lock_counts(&counts);
            c.created += 1;
            c.created_bytes += len;
        }
        Staging { buffer, counts }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        self.buffer.destroy();
        let mut c = lock_counts(&self.counts);
        c.destroyed += 1;
        c.destroyed_bytes += self.buffer.size();
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

#[cfg(test)]
mod tests {
    use super::test_util::ctx;
    use super::*;

    /// A tensor dropped while a recorded program still binds it is not destroyed (the program
    /// runs on and reads it); once the program is gone too, a sweep destroys its buffers after
    /// the queue's work, and only unused ones.
    #[test]
    fn unused_buffers_are_destroyed_and_bound_ones_kept() {
        let ctx = ctx();
        let _tag = ctx.tag_scope("test");
        let before = ctx.buffer_report();
        let a = ctx.upload(&[1.0, -2.0, 3.0], &[3]).unwrap();
        let out = ctx.zeros(&[3]).unwrap();
        let mut program = Program::new();
        crate::ops::elementwise::scale_shift(&ctx, &mut program, &a, &out, 2.0, 1.0).unwrap();
        let kept = ctx.zeros(&[5]).unwrap();
        // Only the program holds `a` now.
        drop(a);
        block_on(ctx.finish()).unwrap();
        let r = ctx.buffer_report();
        assert_eq!(r.counts.destroyed, before.counts.destroyed, "{r:?}");
        // a, out, kept and the program's static uniform.
        let test = r.by_tag.iter().find(|x| x.0 == "test").copied();
        assert_eq!(test, Some(("test", 4, 12 + 12 + 20 + 32)), "{r:?}");
        ctx.run(&program).unwrap();
        assert_eq!(block_on(ctx.read(&out)).unwrap(), vec![3.0, -3.0, 7.0]);
        // A readback's staging buffer is destroyed as soon as it was read.
        let r = ctx.buffer_report();
        assert_eq!(r.counts.created, before.counts.created + 4 + 1);
        assert_eq!(r.counts.destroyed, before.counts.destroyed + 1);
        drop(program);
        drop(out);
        ctx.sweep();
        block_on(ctx.finish()).unwrap();
        let r = ctx.buffer_report();
        assert_eq!(r.counts.dying, 0, "{r:?}");
        assert_eq!(r.counts.destroyed, before.counts.destroyed + 1 + 3, "{r:?}");
        assert_eq!(
            r.counts.destroyed_bytes,
            before.counts.destroyed_bytes + 12 + (12 + 12 + 32),
            "{r:?}"
        );
        let test = r.by_tag.iter().find(|x| x.0 == "test").copied();
        assert_eq!(test, Some(("test", 1, 20)), "{r:?}");
        assert_eq!(r.live, before.live + 1);
        ctx.check().unwrap();
        drop(kept);
    }
}
