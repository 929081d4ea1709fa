//! wgpu context: adapter and device, the pipeline cache, tensor buffers, recorded programs
//! and async readback. This is the only module that knows whether it runs natively or in
//! the browser, and it never blocks on wasm (readback is `map_async` + a future there).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::shaders::ShaderSource;

pub mod blit;

/// WebGPU's default `maxStorageBufferBindingSize`: we design every binding to fit in it so
/// that the same plan runs in any browser.
pub const PORTABLE_MAX_BINDING_BYTES: u64 = 128 << 20;
/// WebGPU's default `maxComputeWorkgroupsPerDimension`.
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65_535;

/// Byte alignment of every tensor view in a packed buffer: WebGPU's
/// `minStorageBufferOffsetAlignment` is at most 256, so 256 suits every device.
pub const VIEW_ALIGN_BYTES: u64 = 256;

/// The storage a tensor binds: a whole `wgpu::Buffer`, or a byte range of one (a view into
/// a packed buffer, see [`GpuContext::packed`]). Dereferences to the underlying buffer for
/// the code that only handles whole buffers; everything that binds, reads or writes a
/// tensor goes through [`offset`](Self::offset), [`size`](Self::size) and
/// [`as_entire_binding`](Self::as_entire_binding), which honour the range.
#[derive(Clone, Debug)]
pub struct BufferView {
    raw: wgpu::Buffer,
    offset: u64,
    size: u64,
}

impl BufferView {
    /// All of `raw`.
    pub fn whole(raw: wgpu::Buffer) -> Self {
        let size = raw.size();
        BufferView {
            raw,
            offset: 0,
            size,
        }
    }

    /// Bytes [offset, offset + size) of `raw`; the offset must be a multiple of
    /// [`VIEW_ALIGN_BYTES`] and the size a non-zero multiple of 4.
    pub fn range(raw: &wgpu::Buffer, offset: u64, size: u64) -> Result<Self> {
        if !offset.is_multiple_of(VIEW_ALIGN_BYTES) || size == 0 || !size.is_multiple_of(4) {
            return Err(Error::shape(format!(
                "a buffer view at byte {offset} of {size} bytes: the offset must be a multiple \
                 of {VIEW_ALIGN_BYTES} and the size a non-zero multiple of 4"
            )));
        }
        if offset + size > raw.size() {
            return Err(Error::shape(format!(
                "a buffer view at byte {offset} of {size} bytes is past the end of a {}-byte \
                 buffer",
                raw.size()
            )));
        }
        Ok(BufferView {
            raw: raw.clone(),
            offset,
            size,
        })
    }

    /// The underlying buffer (shared by every view into it).
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.raw
    }

    /// First byte of the view in [`raw`](Self::raw).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes in the view (the whole buffer's size for a whole buffer).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when the view covers its whole buffer.
    pub fn is_whole(&self) -> bool {
        self.offset == 0 && self.size == self.raw.size()
    }

    /// The binding of exactly this view (shadows `wgpu::Buffer::as_entire_binding`, so that
    /// shaders' `arrayLength` is the view's length).
    pub fn as_entire_binding(&self) -> wgpu::BindingResource<'_> {
        if self.is_whole() {
            return self.raw.as_entire_binding();
        }
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.raw,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        })
    }
}

impl std::ops::Deref for BufferView {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.raw
    }
}

/// Two handles are equal when they cover the same bytes of the same buffer.
impl PartialEq for BufferView {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw && self.offset == other.offset && self.size == other.size
    }
}

/// A dense f32 (or u32/i32, by the op's contract) tensor living in one GPU buffer, or in a
/// range of one (a view, see [`BufferView`]).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub buffer: Arc<BufferView>,
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

/// Where one tensor of a [`PackLayout`] lives: pack index and first element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackSlot {
    pub pack: usize,
    pub offset: usize,
}

/// One packed buffer of a [`PackLayout`]: its tensors (a range of indices) and its length in
/// f32 elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackSpan {
    pub tensors: std::ops::Range<usize>,
    pub floats: usize,
}

/// Tensors laid out back to back in a few buffers: each starts at a multiple of
/// [`VIEW_ALIGN_BYTES`] (the gap before the next one is padding), and a pack is closed when
/// the next tensor would take it past `max_bytes` (browsers bind at most 128 MiB). Several
/// sets of tensors with the same layout (parameters, gradients, moments, EMA) can then be
/// updated element by element over whole packs, a few dispatches for all tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackLayout {
    pub shapes: Vec<Vec<usize>>,
    pub slots: Vec<PackSlot>,
    pub packs: Vec<PackSpan>,
}

impl PackLayout {
    /// Elements per alignment unit (64 f32 for 256 bytes).
    pub const ALIGN_FLOATS: usize = (VIEW_ALIGN_BYTES / 4) as usize;

    pub fn new(shapes: &[Vec<usize>], max_bytes: u64) -> Result<PackLayout> {
        let max_floats = (max_bytes / 4) as usize;
        let mut slots = Vec::with_capacity(shapes.len());
        let mut packs: Vec<PackSpan> = Vec::new();
        let mut start = 0usize;
        let mut used = 0usize;
        for (i, shape) in shapes.iter().enumerate() {
            let numel: usize = shape.iter().product();
            if numel == 0 {
                return Err(Error::shape(format!(
                    "pack: tensor {i} of shape {shape:?} is empty"
                )));
            }
            let padded = numel.next_multiple_of(Self::ALIGN_FLOATS);
            if padded > max_floats {
                return Err(Error::shape(format!(
                    "pack: tensor {i} of shape {shape:?} ({} MiB) is over the {} MiB a storage \
                     binding may hold",
                    (numel * 4) >> 20,
                    max_bytes >> 20
                )));
            }
            if used + padded > max_floats {
                packs.push(PackSpan {
                    tensors: start..i,
                    floats: used,
                });
                start = i;
                used = 0;
            }
            slots.push(PackSlot {
                pack: packs.len(),
                offset: used,
            });
            used += padded;
        }
        if !shapes.is_empty() {
            packs.push(PackSpan {
                tensors: start..shapes.len(),
                floats: used,
            });
        }
        Ok(PackLayout {
            shapes: shapes.to_vec(),
            slots,
            packs,
        })
    }

    /// Elements of every pack together (padding included).
    pub fn total_floats(&self) -> usize {
        self.packs.iter().map(|p| p.floats).sum()
    }
}

/// Buffers made from a [`PackLayout`] ([`GpuContext::packed`]): each pack as a 1-D tensor
/// of its whole buffer, and a view per tensor. Padding is zero and stays zero under
/// element-wise updates that map 0 to 0 (AdamW with a zero gradient, the EMA).
#[derive(Clone, Debug)]
pub struct Packed {
    pub packs: Vec<Tensor>,
    pub views: Vec<Tensor>,
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
    /// Read-only storage buffers (or views), bound from `@binding(1)` on in this order (from
    /// `@binding(0)` when there are no uniforms).
    pub inputs: &'a [&'a BufferView],
    /// Read-write storage buffers (or views), bound right after the inputs.
    pub outputs: &'a [&'a BufferView],
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

/// [`GpuContext::reduction_workgroup`]'s default: 8 threads on CPU adapters, 64 on GPUs;
/// natively `KAKUSAN_REDUCTION_WORKGROUP` (8, 16, 32 or 64) replaces it (other values are
/// ignored with a warning).
fn default_reduction_workgroup(is_software: bool) -> u32 {
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(v) = std::env::var("KAKUSAN_REDUCTION_WORKGROUP") {
        match v.trim().parse::<u32>() {
            Ok(wg) if is_reduction_workgroup(wg) => return wg,
            _ => eprintln!(
                "warning: KAKUSAN_REDUCTION_WORKGROUP={v} ignored (must be 8, 16, 32 or 64)"
            ),
        }
    }
    if is_software {
        8
    } else {
        64
    }
}

/// The sizes shaders/lib/workgroup_sum.wgsl supports: a multiple of 8, at most 64.
fn is_reduction_workgroup(wg: u32) -> bool {
    matches!(wg, 8 | 16 | 32 | 64)
}

/// One buffer the context destroys explicitly once nothing uses it (see [`BufferTracker`]).
struct TrackedBuffer {
    /// The handles that use it: a tensor's buffer and any views into it (a pack's tensors),
    /// or a [`GpuContext::tracked_buffer`]; none for a buffer only recorded dispatches hold
    /// (a static uniform).
    owners: Vec<Owner>,
    /// Cloned into every recorded [`Dispatch`] that binds the buffer: a bind group must
    /// never outlive its buffers' `destroy()`.
    bound: Arc<()>,
    bytes: u64,
    /// Who made it (`GpuContext::tag_scope`), for `window.kakusanMemory()`'s breakdown.
    tag: &'static str,
}

impl TrackedBuffer {
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.bound) > 1 || self.owners.iter().any(Owner::alive)
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
    /// Keyed by the buffer (wgpu handles compare by identity; the key is also the handle
    /// `destroy()` is called on).
    buffers: HashMap<wgpu::Buffer, TrackedBuffer>,
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

/// A handle that keeps a tracked buffer in use while it lives.
enum Owner {
    View(Weak<BufferView>),
    Buffer(Weak<wgpu::Buffer>),
}

impl Owner {
    fn alive(&self) -> bool {
        match self {
            Owner::View(w) => w.strong_count() > 0,
            Owner::Buffer(w) => w.strong_count() > 0,
        }
    }
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
    /// Threads per workgroup of the reducing kernels (see [`GpuContext::reduction_workgroup`]).
    reduction_workgroup: Cell<u32>,
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
            reduction_workgroup: Cell::new(default_reduction_workgroup(is_software)),
        })
    }

    /// Threads per workgroup of the kernels that reduce with shaders/lib/workgroup_sum.wgsl
    /// (group norm and its backward, sum_axes, softmax and its backward): the override
    /// constant `WG` their launchers pass. 64 on GPUs; 8 on CPU adapters, which run a
    /// workgroup as one coroutine per 8 lanes and switch all of them at every barrier, so 8
    /// threads — one coroutine — make a barrier nearly free (the MNIST training step's group
    /// norm backward: 250 → 80 ms on llvmpipe; docs/training.md, "session 9"). Natively,
    /// `KAKUSAN_REDUCTION_WORKGROUP` (8, 16, 32 or 64) overrides it for experiments.
    pub fn reduction_workgroup(&self) -> u32 {
        self.reduction_workgroup.get()
    }

    /// Change [`GpuContext::reduction_workgroup`] for what is recorded from now on (tests
    /// run kernels at both sizes; pipelines are cached per size). Panics unless `wg` is 8,
    /// 16, 32 or 64.
    pub fn set_reduction_workgroup(&self, wg: u32) {
        assert!(
            is_reduction_workgroup(wg),
            "reduction workgroup {wg}: must be 8, 16, 32 or 64"
        );
        self.reduction_workgroup.set(wg);
    }

    /// The `WG` override constant of a reducing kernel's dispatch (see
    /// [`GpuContext::reduction_workgroup`]).
    pub fn reduction_constants(&self) -> [(&'static str, f64); 1] {
        [("WG", self.reduction_workgroup() as f64)]
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
                .map(|v| v.raw())
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
        let buffer = Arc::new(BufferView::whole(buffer));
        self.track(Owner::View(Arc::downgrade(&buffer)), buffer.raw());
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
        })
    }

    /// Tensors of the given shapes packed into as few zero-filled buffers as possible (each
    /// at most [`max_binding_bytes`](Self::max_binding_bytes)), every tensor a view starting
    /// at a multiple of [`VIEW_ALIGN_BYTES`]: see [`PackLayout`].
    pub fn packed(&self, layout: &PackLayout) -> Result<Packed> {
        let mut packs = Vec::with_capacity(layout.packs.len());
        for span in &layout.packs {
            packs.push(self.zeros(&[span.floats])?);
        }
        let mut views = Vec::with_capacity(layout.slots.len());
        for (slot, shape) in layout.slots.iter().zip(&layout.shapes) {
            let numel: usize = shape.iter().product();
            let view = BufferView::range(
                &packs[slot.pack].buffer.raw,
                (slot.offset * 4) as u64,
                (numel * 4) as u64,
            )?;
            let view = Arc::new(view);
            self.track(Owner::View(Arc::downgrade(&view)), view.raw());
            views.push(Tensor {
                buffer: view,
                shape: shape.clone(),
            });
        }
        Ok(Packed { packs, views })
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
            self.queue
                .write_buffer(t.buffer.raw(), t.buffer.offset(), bytes);
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
        self.queue.write_buffer(
            t.buffer.raw(),
            t.buffer.offset(),
            bytemuck::cast_slice(data),
        );
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
        self.queue.write_buffer(
            t.buffer.raw(),
            t.buffer.offset(),
            bytemuck::cast_slice(data),
        );
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
        self.track(Owner::Buffer(Arc::downgrade(&buffer)), &buffer);
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

    /// Register `owner` as a user of `buffer`, tracking the buffer if it is new (a view into
    /// a tracked pack only adds an owner).
    fn track(&self, owner: Owner, buffer: &wgpu::Buffer) {
        let mut t = self.tracker.borrow_mut();
        if let Some(e) = t.buffers.get_mut(buffer) {
            e.owners.push(owner);
            return;
        }
        let bytes = buffer.size();
        {
            let mut c = lock_counts(&t.counts);
            c.created += 1;
            c.created_bytes += bytes;
        }
        t.buffers.insert(
            buffer.clone(),
            TrackedBuffer {
                owners: vec![owner],
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
        t.buffers.insert(
            buffer.clone(),
            TrackedBuffer {
                owners: Vec::new(),
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
            .filter_map(|b| t.buffers.get(b).map(|e| e.bound.clone()))
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
        t.buffers.retain(|buffer, e| {
            let keep = e.in_use();
            if !keep {
                dead.push((buffer.clone(), e.bytes));
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

    async fn read_bytes(&self, buffer: &BufferView, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let staging = Staging::new(self, len);
        let staging = &staging.buffer;
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(buffer.raw(), buffer.offset(), staging, 0, len);
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

    /// The reduction workgroup sizes kernel tests run at (see
    /// [`GpuContext::reduction_workgroup`]): CPU adapters' 8 and GPUs' 64, whichever adapter
    /// runs the tests.
    pub const REDUCTION_WORKGROUPS: [u32; 2] = [8, 64];

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
mod view_tests {
    use super::test_util::{ctx, random};
    use super::*;
    use crate::ops::elementwise::scale_shift;

    #[test]
    fn pack_layout_aligns_and_splits() {
        let shapes = vec![vec![3], vec![70], vec![64], vec![2, 100], vec![5]];
        let l = PackLayout::new(&shapes, 1 << 20).unwrap();
        let offsets: Vec<usize> = l.slots.iter().map(|s| s.offset).collect();
        assert_eq!(offsets, [0, 64, 192, 256, 512]);
        assert_eq!(l.packs.len(), 1);
        assert_eq!(l.total_floats(), 576);
        // 1 KiB packs (256 floats): [3, 70] (192), [64] + ... [2, 100] needs 256 alone.
        let l = PackLayout::new(&shapes, 1024).unwrap();
        let spans: Vec<_> = l
            .packs
            .iter()
            .map(|p| (p.tensors.clone(), p.floats))
            .collect();
        assert_eq!(spans, [(0..3, 256), (3..4, 256), (4..5, 64)]);
        assert_eq!(
            l.slots[2],
            PackSlot {
                pack: 0,
                offset: 192
            }
        );
        assert_eq!(l.slots[4], PackSlot { pack: 2, offset: 0 });
        // A tensor bigger than a pack, or an empty one, is an error.
        assert!(matches!(
            PackLayout::new(&[vec![300]], 1024),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            PackLayout::new(&[vec![0]], 1024),
            Err(Error::Shape(_))
        ));
    }

    /// The paper's CIFAR-10 model (35.7 M parameters, 143 MB) needs two packs under the
    /// portable 128 MiB binding limit; the MNIST preset fits in one.
    #[test]
    fn model_layouts_fit_the_binding_limit() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = crate::model::read_config(&root.join("assets/configs/ddpm-cifar10-32")).unwrap();
        let shapes: Vec<Vec<usize>> = crate::model::weights::expected_tensors(&cfg)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let l = PackLayout::new(&shapes, PORTABLE_MAX_BINDING_BYTES).unwrap();
        assert_eq!(l.packs.len(), 2);
        assert!(l
            .packs
            .iter()
            .all(|p| p.floats * 4 <= PORTABLE_MAX_BINDING_BYTES as usize));
        let params: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        // Padding costs under 0.1 %.
        assert!(
            l.total_floats() < params + params / 1000,
            "{} vs {params}",
            l.total_floats()
        );
        let mnist = crate::train::presets::preset("mnist").unwrap();
        let shapes: Vec<Vec<usize>> = crate::model::weights::expected_tensors(&mnist)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let l = PackLayout::new(&shapes, PORTABLE_MAX_BINDING_BYTES).unwrap();
        assert_eq!(l.packs.len(), 1);
    }

    /// Kernels bind views with their byte offsets: a kernel reading one view of a pack and
    /// writing another view of a second pack touches exactly those elements; `write` and
    /// `read` honour the offsets.
    #[test]
    fn kernels_bind_views_at_their_offsets() {
        let ctx = ctx();
        let shapes = vec![vec![3], vec![70], vec![5]];
        let l = PackLayout::new(&shapes, 1 << 20).unwrap();
        let (a, b) = (ctx.packed(&l).unwrap(), ctx.packed(&l).unwrap());
        let data: Vec<Vec<f32>> = (0..3)
            .map(|i| random(l.shapes[i][0], 7 + i as u64))
            .collect();
        for (v, d) in a.views.iter().zip(&data) {
            ctx.write(v, d).unwrap();
        }
        let mut p = Program::new();
        scale_shift(&ctx, &mut p, &a.views[1], &b.views[1], 2.0, 1.0).unwrap();
        ctx.run(&p).unwrap();
        let out = block_on(ctx.read(&b.views[1])).unwrap();
        let want: Vec<f32> = data[1].iter().map(|x| 2.0 * x + 1.0).collect();
        assert_eq!(out, want);
        // Nothing else of the output pack was written; the input pack is as written.
        let all_b = block_on(ctx.read(&b.packs[0])).unwrap();
        assert!(all_b[..64].iter().chain(&all_b[134..]).all(|&x| x == 0.0));
        let all_a = block_on(ctx.read(&a.packs[0])).unwrap();
        assert_eq!(&all_a[192..197], &data[2][..]);
        assert!(all_a[3..64].iter().all(|&x| x == 0.0));
        assert_eq!(b.views[1].buffer.offset(), 256);
        assert_eq!(b.views[1].buffer.size(), 280);
    }

    #[test]
    fn views_must_be_aligned_and_inside_the_buffer() {
        let ctx = ctx();
        let t = ctx.zeros(&[256]).unwrap();
        let raw = t.buffer.raw();
        assert!(BufferView::range(raw, 256, 768).is_ok());
        assert!(BufferView::range(raw, 4, 8).is_err());
        assert!(BufferView::range(raw, 256, 6).is_err());
        assert!(BufferView::range(raw, 768, 512).is_err());
        assert!(BufferView::range(raw, 0, 0).is_err());
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
