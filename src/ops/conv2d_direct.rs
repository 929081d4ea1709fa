//! Direct convolutions for CPU adapters (`shaders/conv2d_direct.wgsl`): the forward
//! (3x3 stride 1 or 2, 1x1 stride 1), the input gradient of a stride-1 convolution (the
//! same kernel on `dout` with the weight read flipped and transposed through its strides)
//! and the weight gradient's per-image partial sums. The launchers in `conv2d.rs` and
//! `conv2d_backward.rs` choose these kernels over the implicit GEMMs by
//! [`prefer_direct`]; the shader explains why they are faster on CPU adapters.
//!
//! Tests: the forward and both gradients run through the public launchers with the path
//! forced (see [`tests::force`]), in `conv2d.rs` and `conv2d_backward.rs`, against f64
//! references and finite differences.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::CONV2D_DIRECT;

/// Output channels per forward invocation (`co0` blocks of 16 in the shader).
pub const CHANNEL_BLOCK: usize = 16;
/// (output channels, input channels) per weight-gradient invocation that the shader has
/// entry points for (index into [`WEIGHT_ENTRIES`]' rows); [`weight_block`] picks one.
const WEIGHT_BLOCKS: [(usize, usize); 2] = [(4, 1), (16, 2)];
/// Output rows per forward invocation that the shader has entry points for, largest first.
const FORWARD_ROWS: [usize; 3] = [4, 2, 1];
/// Invocations per workgroup of the forward kernel and of the weight-gradient kernel. The
/// forward's are small so that a batch-1 8x8 or 4x4 image still makes several workgroups
/// (a CPU adapter runs each workgroup on one thread).
const FORWARD_WORKGROUP: usize = 16;
const WEIGHT_WORKGROUP: usize = 16;

/// Mirrors `Params` in conv2d_direct.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct DirectParams {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    groups_per_row: u32,
    n_lanes: u32,
    flags: u32,
    pad_top: i32,
    pad_left: i32,
    ws_o: i32,
    ws_i: i32,
    ws_y: i32,
    ws_x: i32,
    w_off: i32,
    cpad4: u32,
    out_scale: f32,
    k: u32,
    row_groups: u32,
    _pad: [u32; 3],
}

/// The entry-point suffix for a square kernel of size `k` and `stride`, if there is one.
fn variant(kh: usize, kw: usize, stride: usize) -> Option<usize> {
    match (kh, kw, stride) {
        (3, 3, 1) => Some(0),
        (3, 3, 2) => Some(1),
        (1, 1, 1) => Some(2),
        _ => None,
    }
}

/// Forward entry points by [variant] and index in [FORWARD_ROWS].
const FORWARD_ENTRIES: [[&str; 3]; 3] = [
    [
        "conv2d_direct_k3s1_r4",
        "conv2d_direct_k3s1_r2",
        "conv2d_direct_k3s1_r1",
    ],
    [
        "conv2d_direct_k3s2_r4",
        "conv2d_direct_k3s2_r2",
        "conv2d_direct_k3s2_r1",
    ],
    [
        "conv2d_direct_k1s1_r4",
        "conv2d_direct_k1s1_r2",
        "conv2d_direct_k1s1_r1",
    ],
];
/// Weight-gradient entry points by index in [`WEIGHT_BLOCKS`] and [variant].
const WEIGHT_ENTRIES: [[&str; 3]; 2] = [
    [
        "conv2d_direct_dw_k3s1_c4",
        "conv2d_direct_dw_k3s2_c4",
        "conv2d_direct_dw_k1s1_c4",
    ],
    [
        "conv2d_direct_dw_k3s1_c16x2",
        "conv2d_direct_dw_k3s2_c16x2",
        "conv2d_direct_dw_k1s1_c16x2",
    ],
];
/// The same reading dout in place (Wo a multiple of 4): no staging pass.
const WEIGHT_ENTRIES_NCHW: [[&str; 3]; 2] = [
    [
        "conv2d_direct_dw_k3s1_nchw_c4",
        "conv2d_direct_dw_k3s2_nchw_c4",
        "conv2d_direct_dw_k1s1_nchw_c4",
    ],
    [
        "conv2d_direct_dw_k3s1_nchw_c16x2",
        "conv2d_direct_dw_k3s2_nchw_c16x2",
        "conv2d_direct_dw_k1s1_nchw_c16x2",
    ],
];

/// The weight gradient's channels per invocation (index into [`WEIGHT_BLOCKS`]): 16 output
/// channels, which load an input row once for twice the multiply-adds of session 5's 8, and
/// 2 input channels, which load dout once for both (docs/training.md, session 6); 4 output
/// channels (and 1 input channel) for Cout <= 4 (conv_out), where 16 would compute padding.
/// conv_in (Cin = 1) masks its second input channel: its weight gradient is a few ms.
fn weight_block(cout: usize) -> usize {
    #[cfg(test)]
    if let Some(b) = tests::forced_weight_block() {
        return WEIGHT_BLOCKS.iter().position(|&x| x == b).unwrap_or(1);
    }
    if cout <= 4 {
        0
    } else {
        1
    }
}

/// Whether a convolution takes the direct kernels: a kernel size and stride they have, on
/// a CPU adapter (llvmpipe, SwiftShader), where they were measured to be faster than the
/// GEMM tiles (docs/training.md, "Training speed"; on GPUs the GEMM tiles stay, unmeasured
/// against these), when it has at least `MIN_LANES` invocations (`lanes`: for the forward
/// [`forward_invocations`], output pixel groups of 4 times blocks of 16 output channels; for
/// the stride-1 input gradient [`forward_lanes`], pixel groups only; images × input channels
/// for the weight gradient). Before the forward counted channel blocks in its lanes (session
/// 6) a 64-wide workgroup ran mostly empty at the CIFAR-10 model's 8x8 and 4x4 levels at
/// batch 1 (2–6× slower direct); now they fill workgroups of 16 and run ~2–3× faster direct
/// than on the GEMM tiles (`bench_direct_vs_gemm`, `BENCH_SHAPES=cifar BENCH_N=1`).
pub fn prefer_direct(ctx: &GpuContext, kh: usize, kw: usize, stride: usize, lanes: usize) -> bool {
    if variant(kh, kw, stride).is_none() {
        return false;
    }
    #[cfg(test)]
    if let Some(forced) = tests::forced() {
        return forced;
    }
    ctx.adapter.is_software && lanes >= MIN_LANES
}

/// See [`prefer_direct`].
const MIN_LANES: usize = 64;

/// The forward kernel's pixel-group invocations for an output (N, ·, Ho, Wo) with one
/// output row per invocation, per block of 16 output channels.
pub fn forward_lanes(n: usize, ho: usize, wo: usize) -> usize {
    n * ho * wo.div_ceil(4)
}

/// The forward kernel's invocations for an output (N, Cout, Ho, Wo) with one output row per
/// invocation (the most it launches): every block of 16 output channels has its own lanes,
/// so the 256-channel 8x8 and 4x4 levels of the CIFAR-10 model fill workgroups at batch 1.
pub fn forward_invocations(n: usize, cout: usize, ho: usize, wo: usize) -> usize {
    forward_lanes(n, ho, wo) * cout.div_ceil(CHANNEL_BLOCK)
}

/// Output rows per forward invocation: the most (fewest weight loads per multiply-add) that
/// still launches [`MIN_FORWARD_INVOCATIONS`]; returns the index into [`FORWARD_ROWS`].
fn forward_rows(n: usize, ho: usize, wo: usize, channel_blocks: usize) -> usize {
    #[cfg(test)]
    if let Some(r) = tests::forced_rows() {
        return FORWARD_ROWS.iter().position(|&x| x == r).unwrap_or(2);
    }
    FORWARD_ROWS
        .iter()
        .position(|&r| {
            channel_blocks * n * ho.div_ceil(r) * wo.div_ceil(4) >= min_forward_invocations()
        })
        .unwrap_or(FORWARD_ROWS.len() - 1)
}

/// Invocations the forward wants at least before it takes more rows per invocation
/// (`MIN_FORWARD_INVOCATIONS`; `KAKUSAN_DIRECT_MIN` overrides it natively, for measuring).
fn min_forward_invocations() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(v) = std::env::var("KAKUSAN_DIRECT_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    MIN_FORWARD_INVOCATIONS
}

/// See [`forward_rows`]: 8 workgroups of [`FORWARD_WORKGROUP`].
const MIN_FORWARD_INVOCATIONS: usize = 128;

/// The forward kernel's operands: out (N, Co, Ho, Wo) from x (N, Ci, H, W) and a weight
/// addressed as `w_off + o·ws[0] + i·ws[1] + ky·ws[2] + kx·ws[3]`.
pub(crate) struct Forward<'a> {
    pub x: &'a Tensor,
    pub weight: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub channel_bias: Option<&'a Tensor>,
    pub residual: Option<&'a Tensor>,
    pub out: &'a Tensor,
    pub k: usize,
    pub stride: usize,
    /// May be negative (the input gradient's padding is k − 1 − pad).
    pub pad_top: i64,
    pub pad_left: i64,
    pub ws: [i64; 4],
    pub w_off: i64,
    pub out_scale: f32,
    pub accumulate: bool,
}

fn i32_of(v: i64, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::shape(format!("conv2d_direct: {what} {v} is too large")))
}

/// Record a staging pass: `entry` writes `out` (elements) from `src` with `p`.
fn record_stage(
    ctx: &GpuContext,
    program: &mut Program,
    entry: &'static str,
    p: &DirectParams,
    src: &Tensor,
    out: &Tensor,
) -> Result<()> {
    // The vec4 binding is unused by the staging passes; give it a buffer of whole vec4s.
    let unused = ctx.zeros(&[4])?;
    ctx.record(
        program,
        DispatchDesc {
            label: "conv2d_direct_stage",
            shader: &CONV2D_DIRECT,
            entry,
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(p)),
            inputs: &[
                &src.buffer,
                &unused.buffer,
                &src.buffer,
                &src.buffer,
                &src.buffer,
            ],
            outputs: &[&out.buffer],
            workgroups: grid_1d((p.n_lanes as u64).div_ceil(64))?,
        },
    )
}

/// Cout rounded up to the channel block.
fn padded_channels(cout: usize) -> usize {
    cout.div_ceil(CHANNEL_BLOCK) * CHANNEL_BLOCK
}

/// Record the forward kernel (shapes already checked by the caller): the weight staged as
/// [Ci][k][k][Co padded to 16], then the convolution.
pub(crate) fn record_forward(ctx: &GpuContext, program: &mut Program, f: &Forward) -> Result<()> {
    record_forward_with_setup(ctx, program, None, f)
}

/// [`record_forward`] with the weight staging recorded into `setup` when given (run once
/// by a caller whose weights do not change between runs of `program`).
pub(crate) fn record_forward_with_setup(
    ctx: &GpuContext,
    program: &mut Program,
    setup: Option<&mut Program>,
    f: &Forward,
) -> Result<()> {
    let [n, cin, h, w] = shape4(f.x)?;
    let [_, cout, ho, wo] = shape4(f.out)?;
    let v = variant(f.k, f.k, f.stride)
        .ok_or_else(|| Error::shape("conv2d_direct: unsupported kernel size or stride"))?;
    let groups_per_row = wo.div_ceil(4);
    let cpad = padded_channels(cout);
    let channel_blocks = cpad / CHANNEL_BLOCK;
    let ri = forward_rows(n, ho, wo, channel_blocks);
    let row_groups = ho.div_ceil(FORWARD_ROWS[ri]);
    let lanes = channel_blocks * n * row_groups * groups_per_row;
    if lanes == 0 || cout == 0 {
        return Ok(());
    }
    let staged_len = cin * f.k * f.k * cpad;
    if lanes >= 1 << 31 || staged_len >= 1 << 31 {
        return Err(Error::shape(
            "conv2d_direct: too many pixels or weights for one kernel",
        ));
    }
    let staged = ctx.zeros(&[staged_len.max(4)])?;
    let flags = f.bias.map_or(0, |_| 1)
        | f.channel_bias.map_or(0, |_| 2)
        | f.residual.map_or(0, |_| 4)
        | if f.accumulate { 8 } else { 0 };
    let mut p = DirectParams {
        batch: n as u32,
        cin: cin as u32,
        h: h as u32,
        w: w as u32,
        cout: cout as u32,
        ho: ho as u32,
        wo: wo as u32,
        groups_per_row: groups_per_row as u32,
        n_lanes: staged_len as u32,
        flags,
        pad_top: i32_of(f.pad_top, "padding")?,
        pad_left: i32_of(f.pad_left, "padding")?,
        ws_o: i32_of(f.ws[0], "weight stride")?,
        ws_i: i32_of(f.ws[1], "weight stride")?,
        ws_y: i32_of(f.ws[2], "weight stride")?,
        ws_x: i32_of(f.ws[3], "weight stride")?,
        w_off: i32_of(f.w_off, "weight offset")?,
        cpad4: (cpad / 4) as u32,
        out_scale: f.out_scale,
        k: f.k as u32,
        row_groups: row_groups as u32,
        _pad: [0; 3],
    };
    record_stage(
        ctx,
        setup.unwrap_or(&mut *program),
        "stage_weight",
        &p,
        f.weight,
        &staged,
    )?;
    p.n_lanes = lanes as u32;
    let [gx, gy, gz] = grid_1d(lanes.div_ceil(FORWARD_WORKGROUP) as u64)?;
    let dummy = f.weight;
    ctx.record(
        program,
        DispatchDesc {
            label: "conv2d_direct",
            shader: &CONV2D_DIRECT,
            entry: FORWARD_ENTRIES[v][ri],
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&p)),
            inputs: &[
                &f.x.buffer,
                &staged.buffer,
                &f.bias.unwrap_or(dummy).buffer,
                &f.channel_bias.unwrap_or(dummy).buffer,
                &f.residual.unwrap_or(dummy).buffer,
            ],
            outputs: &[&f.out.buffer],
            workgroups: [gx, gy, gz],
        },
    )
}

/// Record the weight gradient's per-image partial sums: partials (N, Cout, Cin·k·k)
/// (at least that many elements) from x (N, Cin, H, W) and dout (N, Cout, Ho, Wo), read in
/// place when Wo is a multiple of 4, else staged as [N][Ho][Wo padded to 4][Cout padded to the
/// channel block] first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_weight_partials(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    dout: &Tensor,
    partials: &Tensor,
    k: usize,
    stride: usize,
    padding: [usize; 4],
) -> Result<()> {
    let [n, cin, h, w] = shape4(x)?;
    let [_, cout, ho, wo] = shape4(dout)?;
    let v = variant(k, k, stride)
        .ok_or_else(|| Error::shape("conv2d_direct: unsupported kernel size or stride"))?;
    if partials.numel() < n * cout * cin * k * k {
        return Err(Error::shape(format!(
            "conv2d_direct: {} partial sums for {n}x{cout}x{}",
            partials.numel(),
            cin * k * k
        )));
    }
    let bi = weight_block(cout);
    let (block, cin_block) = WEIGHT_BLOCKS[bi];
    let lanes = n * cin.div_ceil(cin_block);
    if lanes == 0 || cout == 0 || ho * wo == 0 {
        return Ok(());
    }
    if lanes.div_ceil(WEIGHT_WORKGROUP) > crate::gpu::MAX_WORKGROUPS_PER_DIM as usize {
        return Err(Error::shape(format!(
            "conv2d_direct: {n} images x {cin} channels is more than one dispatch can launch"
        )));
    }
    let cpad = cout.div_ceil(block) * block;
    let groups_per_row = wo.div_ceil(4);
    let staged_len = n * ho * groups_per_row * 4 * cpad;
    if staged_len >= 1 << 31 {
        return Err(Error::shape(
            "conv2d_direct: dout is too large for one kernel",
        ));
    }
    let mut p = DirectParams {
        batch: n as u32,
        cin: cin as u32,
        h: h as u32,
        w: w as u32,
        cout: cout as u32,
        ho: ho as u32,
        wo: wo as u32,
        groups_per_row: groups_per_row as u32,
        n_lanes: staged_len as u32,
        pad_top: padding[0] as i32,
        pad_left: padding[1] as i32,
        cpad4: (cpad / 4) as u32,
        out_scale: 1.0,
        k: k as u32,
        ..Default::default()
    };
    // With Wo a multiple of 4 the kernel reads dout in place as vec4 of 4 pixels (the
    // tensor is then whole vec4s); otherwise dout is restaged, padded.
    let in_place = wo.is_multiple_of(4);
    let (staged, entry) = if in_place {
        (dout.clone(), WEIGHT_ENTRIES_NCHW[bi][v])
    } else {
        let staged = ctx.zeros(&[staged_len])?;
        record_stage(ctx, program, "stage_dout", &p, dout, &staged)?;
        (staged, WEIGHT_ENTRIES[bi][v])
    };
    p.n_lanes = lanes as u32;
    ctx.record(
        program,
        DispatchDesc {
            label: "conv2d_direct_dw",
            shader: &CONV2D_DIRECT,
            entry,
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&p)),
            inputs: &[&x.buffer, &staged.buffer, &x.buffer, &x.buffer, &x.buffer],
            outputs: &[&partials.buffer],
            workgroups: [
                lanes.div_ceil(WEIGHT_WORKGROUP) as u32,
                1,
                (cpad / block) as u32,
            ],
        },
    )
}

fn shape4(t: &Tensor) -> Result<[usize; 4]> {
    crate::ops::elementwise::nchw(t, "conv2d_direct")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    thread_local! {
        static FORCED: Cell<Option<bool>> = const { Cell::new(None) };
    }

    /// The path forced on this thread: Some(true) = direct, Some(false) = GEMM.
    pub(crate) fn forced() -> Option<bool> {
        FORCED.with(|f| f.get())
    }

    thread_local! {
        static ROWS: Cell<Option<usize>> = const { Cell::new(None) };
    }

    /// The forward's output rows per invocation forced on this thread (1, 2 or 4).
    pub(crate) fn forced_rows() -> Option<usize> {
        ROWS.with(|f| f.get())
    }

    /// Run `f` with the forward's output rows per invocation forced to `rows`.
    pub(crate) fn force_rows<R>(rows: usize, f: impl FnOnce() -> R) -> R {
        let old = ROWS.with(|c| c.replace(Some(rows)));
        let r = f();
        ROWS.with(|c| c.set(old));
        r
    }

    thread_local! {
        static WEIGHT_BLOCK: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
    }

    /// The weight gradient's (output, input) channels per invocation forced on this thread.
    pub(crate) fn forced_weight_block() -> Option<(usize, usize)> {
        WEIGHT_BLOCK.with(|f| f.get())
    }

    /// Run `f` with the weight gradient's (output, input) channel block forced to `block`.
    pub(crate) fn force_weight_block<R>(block: (usize, usize), f: impl FnOnce() -> R) -> R {
        let old = WEIGHT_BLOCK.with(|c| c.replace(Some(block)));
        let r = f();
        WEIGHT_BLOCK.with(|c| c.set(old));
        r
    }

    /// Run `f` with the direct kernels forced on (where they apply) or off, on this thread.
    pub(crate) fn force<R>(direct: bool, f: impl FnOnce() -> R) -> R {
        let old = FORCED.with(|c| c.replace(Some(direct)));
        let r = f();
        FORCED.with(|c| c.set(old));
        r
    }

    /// GEMM tiles vs the direct kernels on the default MNIST model's convolutions (N = 64):
    /// forward, input and weight gradient, timed interleaved in one process (best of
    /// BENCH_REPS), so that other load on the machine hits both alike. BENCH_ROWS=1|2|4
    /// forces the direct forward's output rows per invocation; BENCH_PASSES=forward,input
    /// times only those passes.
    /// `cargo test --lib ops::conv2d_direct::tests::bench_direct_vs_gemm -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_direct_vs_gemm() {
        use crate::gpu::test_util::{ctx, random};
        use crate::gpu::Program;
        use crate::ops::conv2d::{conv2d, Conv2dArgs};
        use crate::ops::conv2d_backward::{conv2d_backward_input, conv2d_backward_weight};
        use crate::ops::matmul::tests::time_program;
        let ctx = ctx();
        let reps = std::env::var("BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let n = std::env::var("BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        // (cin, cout, hw, stride); BENCH_SHAPES=cifar: the CIFAR-10 model's (N = 1).
        let cifar = [
            (3, 128, 32, 1),
            (128, 128, 32, 1),
            (128, 256, 16, 1),
            (256, 256, 8, 1),
            (256, 256, 4, 1),
            (256, 256, 16, 2),
            (256, 256, 8, 2),
            (128, 3, 32, 1),
        ];
        let mnist = [
            (1, 16, 28, 1),
            (16, 16, 28, 1),
            (16, 16, 28, 2),
            (16, 32, 14, 1),
            (32, 32, 14, 1),
            (32, 32, 7, 1),
            (64, 32, 7, 1),
            (48, 16, 28, 1),
            (16, 1, 28, 1),
        ];
        let shapes: &[(usize, usize, usize, usize)] =
            if std::env::var("BENCH_SHAPES").is_ok_and(|v| v == "cifar") {
                &cifar
            } else {
                &mnist
            };
        let mut rows: Vec<(String, [Program; 2])> = Vec::new();
        let mut keep = Vec::new();
        for &(cin, cout, hw, stride) in shapes {
            let ho = (hw + 2 - 3) / stride + 1;
            let x = ctx
                .upload(&random(n * cin * hw * hw, 1), &[n, cin, hw, hw])
                .unwrap();
            let dout = ctx
                .upload(&random(n * cout * ho * ho, 2), &[n, cout, ho, ho])
                .unwrap();
            let w = ctx
                .upload(&random(cout * cin * 9, 3), &[cout, cin, 3, 3])
                .unwrap();
            let y = ctx.zeros(&[n, cout, ho, ho]).unwrap();
            let dx = ctx.zeros(&[n, cin, hw, hw]).unwrap();
            let dw = ctx.zeros(&[cout, cin, 3, 3]).unwrap();
            let what = format!("{cin}->{cout} {hw}x{hw} s{stride}");
            let forced_rows = std::env::var("BENCH_ROWS")
                .ok()
                .and_then(|v| v.parse().ok());
            let mk = |direct: bool, which: usize| {
                let run = || {
                    let mut p = Program::new();
                    match which {
                        0 => conv2d(
                            &ctx,
                            &mut p,
                            &Conv2dArgs {
                                x: &x,
                                weight: &w,
                                bias: None,
                                channel_bias: None,
                                residual: None,
                                out: &y,
                                stride,
                                padding: [1; 4],
                                out_scale: 1.0,
                            },
                        )
                        .unwrap(),
                        1 => conv2d_backward_input(
                            &ctx, &mut p, &dout, &w, &dx, stride, [1; 4], 1.0, false,
                        )
                        .unwrap(),
                        _ => conv2d_backward_weight(
                            &ctx, &mut p, &x, &dout, &dw, stride, [1; 4], 1.0, false,
                        )
                        .unwrap(),
                    }
                    p
                };
                let run = || match forced_rows {
                    Some(r) if direct => force(direct, || force_rows(r, run)),
                    _ => force(direct, run),
                };
                // BENCH_DW_BLOCK=co,ci (4,1 or 16,2) forces the direct weight gradient's
                // channel block.
                let block = std::env::var("BENCH_DW_BLOCK").ok().and_then(|v| {
                    let (a, b) = v.split_once(',')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                });
                match block {
                    Some(b) => force_weight_block(b, run),
                    None => run(),
                }
            };
            // BENCH_WHICH=forward|input|weight: that pass only.
            let only = std::env::var("BENCH_WHICH").ok();
            for (which, name) in ["forward", "input", "weight"].iter().enumerate() {
                if std::env::var("BENCH_PASSES").is_ok_and(|v| !v.contains(name))
                    || only.as_deref().is_some_and(|o| o != *name)
                {
                    continue;
                }
                rows.push((
                    format!("{what} {name}"),
                    [mk(false, which), mk(true, which)],
                ));
            }
            keep.push((x, dout, w, y, dx, dw));
        }
        let mut best = vec![[f64::INFINITY; 2]; rows.len()];
        for _ in 0..reps {
            for (i, (_, ps)) in rows.iter().enumerate() {
                for j in 0..2 {
                    best[i][j] = best[i][j].min(time_program(&ctx, &ps[j], 1));
                }
            }
        }
        println!(
            "best ms wall on {}, N = {n}: gemm / direct",
            ctx.adapter.name
        );
        let mut total = [0.0; 2];
        for (i, (name, _)) in rows.iter().enumerate() {
            println!(
                "{name:32} {:8.1} {:8.1}",
                best[i][0] * 1e3,
                best[i][1] * 1e3
            );
            total[0] += best[i][0];
            total[1] += best[i][1];
        }
        println!(
            "{:32} {:8.1} {:8.1}",
            "total",
            total[0] * 1e3,
            total[1] * 1e3
        );
    }
}
