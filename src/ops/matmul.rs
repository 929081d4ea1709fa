//! Batched strided GEMM (`shaders/matmul.wgsl`): linear layers (the time-embedding MLP),
//! attention scores Q·Kᵀ and P·V, and 1x1 projections on NCHW tensors, all through element
//! strides so that transposed views need no copies.

use crate::error::{Error, Result};
use crate::gpu::{
    grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor, MAX_WORKGROUPS_PER_DIM,
};
use crate::shaders::MATMUL;

/// Which output dimension a bias vector runs along.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasAlong {
    /// One bias per row `m` (e.g. output channels when `m` is Cout).
    M,
    /// One bias per column `n` (e.g. a linear layer's output features).
    N,
}

/// out[b, m, n] = (alpha · Σ_k A[b, m, k] B[b, k, n] + bias + residual) · out_scale
/// (+ the old out[b, m, n] when `accumulate`).
#[derive(Clone, Copy)]
pub struct MatmulArgs<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub out: &'a Tensor,
    /// Length `m` ([`BiasAlong::M`]) or `n` ([`BiasAlong::N`]).
    pub bias: Option<&'a Tensor>,
    pub bias_along: BiasAlong,
    /// Addressed with `out_strides`. No input may share a buffer with `out`.
    pub residual: Option<&'a Tensor>,
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Element strides of A[b, m, k].
    pub a_strides: [usize; 3],
    /// Element strides of B[b, k, n].
    pub b_strides: [usize; 3],
    /// Element strides of out[b, m, n].
    pub out_strides: [usize; 3],
    pub alpha: f32,
    pub out_scale: f32,
    /// out += result instead of out = result: gradients of a tensor consumed twice sum.
    pub accumulate: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    n_tiles: u32,
    a_sb: u32,
    a_sm: u32,
    a_sk: u32,
    m_tiles: u32,
    b_sb: u32,
    b_sk: u32,
    b_sn: u32,
    flags: u32,
    o_sb: u32,
    o_sm: u32,
    o_sn: u32,
    _pad0: u32,
    alpha: f32,
    out_scale: f32,
    _pad1: u32,
    _pad2: u32,
}

/// Output tile of one workgroup (see the shader): 128 columns and [`tile_rows`] rows.
const TILE_N: usize = 128;

/// Rows of the output tile the GEMM-like kernels (matmul, conv2d and its gradients) use for
/// `m` rows: 16, 32 or 64. Each has its own entry point (suffix `_m16`, `_m32`, none) with
/// a 8x16 register tile per thread and 8·rows/8 threads; the small ones exist because a
/// 64-row tile for the MNIST model's 32 channels (or conv_out's single one) computes mostly
/// masked rows. Smaller tiles re-gather the B tile more often per FLOP, so larger M keeps the
/// 64-row tile.
pub(crate) fn tile_rows(m: usize) -> usize {
    #[cfg(test)]
    {
        let forced = tests::FORCE_TILE_ROWS.load(std::sync::atomic::Ordering::Relaxed);
        if forced != 0 {
            return forced;
        }
    }
    match m {
        0..=16 => 16,
        17..=32 => 32,
        _ => 64,
    }
}

/// (rows, columns) of the small-N entry point `matmul_n64`, which `matmul` uses for n ≤ 64
/// (attention at 7×7: n = 49 tokens or 32 channels), where the 128-column tile would compute
/// mostly masked columns. Same sums in the same order, so the same bits.
const SMALL_N_TILE: (usize, usize) = (32, 64);

fn use_small_n(n: usize) -> bool {
    #[cfg(test)]
    {
        if tests::FORCE_WIDE_N.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
    }
    n <= SMALL_N_TILE.1
}

/// The entry point `base` for a tile of `rows` rows (see [`tile_rows`]).
pub(crate) fn tile_entry(base: &'static str, rows: usize) -> &'static str {
    match (base, rows) {
        ("matmul", 16) => "matmul_m16",
        ("matmul", 32) => "matmul_m32",
        ("conv2d", 16) => "conv2d_m16",
        ("conv2d", 32) => "conv2d_m32",
        ("conv2d_backward_input", 16) => "conv2d_backward_input_m16",
        ("conv2d_backward_input", 32) => "conv2d_backward_input_m32",
        ("conv2d_backward_weight", 16) => "conv2d_backward_weight_m16",
        ("conv2d_backward_weight", 32) => "conv2d_backward_weight_m32",
        _ => base,
    }
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(format!("matmul: {what} = {v} does not fit in u32")))
}

/// Check that the largest element a strided 3-D view addresses lies inside `t`.
fn check_extent(t: &Tensor, dims: [usize; 3], strides: [usize; 3], what: &str) -> Result<()> {
    if dims.contains(&0) {
        return Ok(());
    }
    let max = dims.iter().zip(strides).try_fold(0usize, |acc, (&d, s)| {
        acc.checked_add((d - 1).checked_mul(s)?)
    });
    match max {
        Some(max) if max < t.numel() && max <= u32::MAX as usize => Ok(()),
        _ => Err(Error::shape(format!(
            "matmul: {what} of shape {:?} is too small for dims {dims:?} with strides {strides:?}",
            t.shape
        ))),
    }
}

/// Record `out = (alpha · A·B + bias + residual) · out_scale (+ out)` for every batch entry.
pub fn matmul(ctx: &GpuContext, program: &mut Program, args: &MatmulArgs) -> Result<()> {
    let &MatmulArgs { batch, m, n, k, .. } = args;
    check_extent(args.a, [batch, m, k], args.a_strides, "A")?;
    check_extent(args.b, [batch, k, n], args.b_strides, "B")?;
    check_extent(args.out, [batch, m, n], args.out_strides, "out")?;
    if let Some(r) = args.residual {
        check_extent(r, [batch, m, n], args.out_strides, "residual")?;
    }
    if let Some(bias) = args.bias {
        let want = match args.bias_along {
            BiasAlong::M => m,
            BiasAlong::N => n,
        };
        if bias.numel() != want {
            return Err(Error::shape(format!(
                "matmul: bias has {} elements, expected {want} ({:?})",
                bias.numel(),
                args.bias_along
            )));
        }
    }
    // wgpu forbids one buffer bound both read-only and read-write in a dispatch.
    for (t, what) in [
        (Some(args.a), "A"),
        (Some(args.b), "B"),
        (args.bias, "bias"),
        (args.residual, "residual"),
    ] {
        if t.is_some_and(|t| t.buffer.as_ref() == args.out.buffer.as_ref()) {
            return Err(Error::shape(format!(
                "matmul: {what} must be a different buffer from out"
            )));
        }
    }
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    let (tile_n, rows, entry) = if use_small_n(n) {
        (SMALL_N_TILE.1, SMALL_N_TILE.0, "matmul_n64")
    } else {
        let rows = tile_rows(m);
        (TILE_N, rows, tile_entry("matmul", rows))
    };
    let n_tiles = n.div_ceil(tile_n);
    let m_tiles = m.div_ceil(rows);
    let z = batch * m_tiles;
    if z > MAX_WORKGROUPS_PER_DIM as usize {
        return Err(Error::shape(format!(
            "matmul: batch {batch} x {m_tiles} row tiles is more than one dispatch can launch"
        )));
    }
    let [gx, gy, _] = grid_1d(n_tiles as u64)?;
    let flags = args.bias.map_or(0, |_| 1)
        | if args.bias_along == BiasAlong::N {
            2
        } else {
            0
        }
        | args.residual.map_or(0, |_| 4)
        | if args.accumulate { 8 } else { 0 };
    let params = MatmulParams {
        m: u32_of(m, "m")?,
        n: u32_of(n, "n")?,
        k: u32_of(k, "k")?,
        n_tiles: n_tiles as u32,
        a_sb: u32_of(args.a_strides[0], "A batch stride")?,
        a_sm: u32_of(args.a_strides[1], "A m stride")?,
        a_sk: u32_of(args.a_strides[2], "A k stride")?,
        m_tiles: m_tiles as u32,
        b_sb: u32_of(args.b_strides[0], "B batch stride")?,
        b_sk: u32_of(args.b_strides[1], "B k stride")?,
        b_sn: u32_of(args.b_strides[2], "B n stride")?,
        flags,
        o_sb: u32_of(args.out_strides[0], "out batch stride")?,
        o_sm: u32_of(args.out_strides[1], "out m stride")?,
        o_sn: u32_of(args.out_strides[2], "out n stride")?,
        _pad0: 0,
        alpha: args.alpha,
        out_scale: args.out_scale,
        _pad1: 0,
        _pad2: 0,
    };
    // Absent optional operands are bound to A (never read: the flags say so).
    let bias = args.bias.unwrap_or(args.a);
    let residual = args.residual.unwrap_or(args.a);
    ctx.record(
        program,
        DispatchDesc {
            label: "matmul",
            shader: &MATMUL,
            entry,
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[
                &args.a.buffer,
                &args.b.buffer,
                &bias.buffer,
                &residual.buffer,
            ],
            outputs: &[&args.out.buffer],
            workgroups: [gx, gy, z as u32],
        },
    )
}

/// PyTorch `nn.Linear`: out (M, N) = x (M, K) · weightᵀ + bias, with weight (N, K).
pub fn linear(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    out: &Tensor,
) -> Result<()> {
    let (m, k) = match x.shape[..] {
        [m, k] => (m, k),
        _ => {
            return Err(Error::shape(format!(
                "linear: x: expected (M, K), got {:?}",
                x.shape
            )))
        }
    };
    let n = match weight.shape[..] {
        [n, kw] if kw == k => n,
        _ => {
            return Err(Error::shape(format!(
                "linear: weight: expected (N, {k}), got {:?}",
                weight.shape
            )))
        }
    };
    crate::gpu::expect_shape(out, &[m, n], "linear: out")?;
    matmul(
        ctx,
        program,
        &MatmulArgs {
            a: x,
            b: weight,
            out,
            bias,
            bias_along: BiasAlong::N,
            residual: None,
            batch: 1,
            m,
            n,
            k,
            a_strides: [0, k, 1],
            // B[k, n] = weight[n, k]
            b_strides: [0, 1, k],
            out_strides: [0, n, 1],
            alpha: 1.0,
            out_scale: 1.0,
            accumulate: false,
        },
    )
}

/// out (M, N) = A·B for one 2-D product with row-major B and out, A read through `a_strides`.
fn plain_2d<'a>(
    a: &'a Tensor,
    b: &'a Tensor,
    out: &'a Tensor,
    (m, n, k): (usize, usize, usize),
    a_strides: [usize; 3],
) -> MatmulArgs<'a> {
    MatmulArgs {
        a,
        b,
        out,
        bias: None,
        bias_along: BiasAlong::N,
        residual: None,
        batch: 1,
        m,
        n,
        k,
        a_strides,
        b_strides: [0, n, 1],
        out_strides: [0, n, 1],
        alpha: 1.0,
        out_scale: 1.0,
        accumulate: false,
    }
}

/// The gradients of [`linear`] from dy = ∂L/∂out (M, N), each overwritten: dW (N, K) = dyᵀ·x,
/// db (N) = Σ_rows dy and dx (M, K) = dy·weight (the last two when given).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    db: Option<&Tensor>,
    dx: Option<&Tensor>,
) -> Result<()> {
    let (m, n, k) = match (&x.shape[..], &weight.shape[..]) {
        (&[m, k], &[n, kw]) if kw == k => (m, n, k),
        _ => {
            return Err(Error::shape(format!(
                "linear_backward: x {:?} and weight {:?} are not (M, K) and (N, K)",
                x.shape, weight.shape
            )))
        }
    };
    crate::gpu::expect_shape(dy, &[m, n], "linear_backward: dy")?;
    crate::gpu::expect_shape(dw, &[n, k], "linear_backward: dw")?;
    // dW[j, kk] = Σ_rows dy[row, j] x[row, kk]: A = dyᵀ (N, M) as a strided view.
    matmul(ctx, program, &plain_2d(dy, x, dw, (n, k, m), [0, 1, n]))?;
    if let Some(db) = db {
        crate::gpu::expect_shape(db, &[n], "linear_backward: db")?;
        crate::ops::reduce::sum_axes(ctx, program, dy, [m, n, 1], db, 1.0, false)?;
    }
    if let Some(dx) = dx {
        crate::gpu::expect_shape(dx, &[m, k], "linear_backward: dx")?;
        // dx[row, kk] = Σ_j dy[row, j] weight[j, kk].
        matmul(
            ctx,
            program,
            &plain_2d(dy, weight, dx, (m, k, n), [0, n, 1]),
        )?;
    }
    Ok(())
}

/// 2·m·n·k·batch: the FLOP count benchmarks quote.
pub fn matmul_flops(batch: usize, m: usize, n: usize, k: usize) -> u64 {
    2 * (batch * m * n * k) as u64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    /// Benchmarks only: when nonzero, [`tile_rows`] returns this (16, 32 or 64) for every
    /// m, to compare the variants in one process. Every variant is correct for any m, so a
    /// test running meanwhile only gets slower or faster.
    pub(crate) static FORCE_TILE_ROWS: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);
    /// When set, n ≤ 64 takes the 128-column tile too (only `matmul_small_n_tile` sets it,
    /// to compare the two; either is correct for any n).
    pub(crate) static FORCE_WIDE_N: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    /// f64 reference of the same strided contract.
    fn reference(
        args: &MatmulArgs,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
        res: Option<&[f32]>,
        out_init: &[f32],
    ) -> Vec<f64> {
        let mut out: Vec<f64> = out_init.iter().map(|&v| v as f64).collect();
        let [asb, asm, ask] = args.a_strides;
        let [bsb, bsk, bsn] = args.b_strides;
        let [osb, osm, osn] = args.out_strides;
        for bt in 0..args.batch {
            for i in 0..args.m {
                for j in 0..args.n {
                    let mut s = 0.0f64;
                    for l in 0..args.k {
                        s += a[bt * asb + i * asm + l * ask] as f64
                            * b[bt * bsb + l * bsk + j * bsn] as f64;
                    }
                    let o = bt * osb + i * osm + j * osn;
                    let mut v = args.alpha as f64 * s;
                    if let Some(bias) = bias {
                        v += bias[if args.bias_along == BiasAlong::M {
                            i
                        } else {
                            j
                        }] as f64;
                    }
                    if let Some(r) = res {
                        v += r[o] as f64;
                    }
                    out[o] = v * args.out_scale as f64 + if args.accumulate { out[o] } else { 0.0 };
                }
            }
        }
        out
    }

    /// Tolerance: f32 accumulation of k products of values in [-1, 1): atol ~ 1e-5·sqrt(k)
    /// on top of a small relative term.
    fn atol(k: usize) -> f64 {
        1e-5 * (k as f64).sqrt().max(1.0)
    }

    struct Case {
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a_strides: [usize; 3],
        b_strides: [usize; 3],
        out_strides: [usize; 3],
        bias: Option<BiasAlong>,
        residual: bool,
        alpha: f32,
        out_scale: f32,
        accumulate: bool,
    }

    fn run_case(ctx: &GpuContext, c: &Case, seed: u64, what: &str) -> Vec<f32> {
        let numel =
            |d: [usize; 3], s: [usize; 3]| (0..3).map(|i| (d[i] - 1) * s[i]).sum::<usize>() + 1;
        let a_len = numel([c.batch, c.m, c.k], c.a_strides);
        let b_len = numel([c.batch, c.k, c.n], c.b_strides);
        let o_len = numel([c.batch, c.m, c.n], c.out_strides);
        let a = random(a_len, seed);
        let b = random(b_len, seed + 1);
        let bias_len = match c.bias {
            Some(BiasAlong::M) => c.m,
            _ => c.n,
        };
        let bias = random(bias_len, seed + 2);
        let res = random(o_len, seed + 3);
        // out starts non-zero so that elements the kernel must not touch are checked too.
        let out_init = random(o_len, seed + 4);
        let ta = ctx.upload(&a, &[a_len]).unwrap();
        let tb = ctx.upload(&b, &[b_len]).unwrap();
        let tbias = ctx.upload(&bias, &[bias_len]).unwrap();
        let tres = ctx.upload(&res, &[o_len]).unwrap();
        let tout = ctx.upload(&out_init, &[o_len]).unwrap();
        let args = MatmulArgs {
            a: &ta,
            b: &tb,
            out: &tout,
            bias: c.bias.map(|_| &tbias),
            bias_along: c.bias.unwrap_or(BiasAlong::N),
            residual: c.residual.then_some(&tres),
            batch: c.batch,
            m: c.m,
            n: c.n,
            k: c.k,
            a_strides: c.a_strides,
            b_strides: c.b_strides,
            out_strides: c.out_strides,
            alpha: c.alpha,
            out_scale: c.out_scale,
            accumulate: c.accumulate,
        };
        let mut p = Program::new();
        matmul(ctx, &mut p, &args).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&tout)).unwrap();
        let want = reference(
            &args,
            &a,
            &b,
            c.bias.map(|_| &bias[..]),
            c.residual.then_some(&res[..]),
            &out_init,
        );
        assert_close(&got, &want, atol(c.k), 1e-5, what);
        got
    }

    #[test]
    fn matmul_contiguous_odd_sizes() {
        let ctx = ctx();
        for (i, &(m, n, k)) in [
            (37, 45, 29),
            (1, 1, 1),
            (64, 64, 16),
            (65, 130, 33),
            (3, 200, 7),
        ]
        .iter()
        .enumerate()
        {
            run_case(
                &ctx,
                &Case {
                    batch: 1,
                    m,
                    n,
                    k,
                    a_strides: [0, k, 1],
                    b_strides: [0, n, 1],
                    out_strides: [0, n, 1],
                    bias: None,
                    residual: false,
                    alpha: 1.0,
                    out_scale: 1.0,
                    accumulate: false,
                },
                10 * i as u64,
                &format!("matmul {m}x{n}x{k}"),
            );
        }
    }

    /// Every row-tile variant (16, 32, 64 rows) at and around its edges: m in
    /// {1, 3, 16, 17, 33}, batched, with bias along M, a residual and accumulation so the
    /// epilogue's row masking is exercised too; n and k are not multiples of the tiles.
    #[test]
    fn matmul_small_m_tiles() {
        let ctx = ctx();
        for (i, m) in [1, 3, 16, 17, 32, 33].into_iter().enumerate() {
            assert_eq!(
                tile_rows(m),
                if m <= 16 {
                    16
                } else if m <= 32 {
                    32
                } else {
                    64
                }
            );
            let (batch, n, k) = (2, 301, 37);
            run_case(
                &ctx,
                &Case {
                    batch,
                    m,
                    n,
                    k,
                    a_strides: [m * k, k, 1],
                    b_strides: [k * n, n, 1],
                    out_strides: [m * n, n, 1],
                    bias: Some(BiasAlong::M),
                    residual: true,
                    alpha: 0.5,
                    out_scale: 2.0,
                    accumulate: i % 2 == 1,
                },
                200 + 10 * i as u64,
                &format!("matmul small m {m}x{n}x{k} batch {batch}"),
            );
        }
    }

    /// The small-N tile (`matmul_n64`, 32 x 64) at and around its edges — m in {1, 31, 32, 33,
    /// 70}, n in {1, 5, 49, 63, 64}, k in {1, 16, 17, 49}, transposed operands as in attention,
    /// bias along either axis, residual, accumulation — against f64 and bit for bit against
    /// the 128-column tile it replaces.
    #[test]
    fn matmul_small_n_tile() {
        let ctx = ctx();
        let cases = [
            (2, 49, 49, 32),
            (3, 1, 1, 1),
            (1, 31, 63, 16),
            (2, 32, 64, 17),
            (2, 33, 5, 49),
            (1, 70, 49, 49),
        ];
        for (i, (batch, m, n, k)) in cases.into_iter().enumerate() {
            assert!(use_small_n(n));
            let c = Case {
                batch,
                m,
                n,
                k,
                // A transposed (stored (B, K, M), like attention's qᵀ), B and out plain.
                a_strides: [k * m, 1, m],
                b_strides: [k * n, n, 1],
                out_strides: [m * n, n, 1],
                bias: [None, Some(BiasAlong::N), Some(BiasAlong::M)][i % 3],
                residual: i % 2 == 0,
                alpha: 0.7,
                out_scale: 1.5,
                accumulate: i % 2 == 1,
            };
            let what = format!("matmul_n64 {batch}x{m}x{n}x{k}");
            let small = run_case(&ctx, &c, 300 + 10 * i as u64, &what);
            FORCE_WIDE_N.store(true, std::sync::atomic::Ordering::Relaxed);
            let wide = run_case(&ctx, &c, 300 + 10 * i as u64, &what);
            FORCE_WIDE_N.store(false, std::sync::atomic::Ordering::Relaxed);
            let differ = small
                .iter()
                .zip(&wide)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{what}: {differ} elements differ from the 128-column tile"
            );
        }
    }

    #[test]
    fn matmul_batched_transposed_bias_residual() {
        let ctx = ctx();
        let (batch, m, n, k) = (3, 37, 45, 29);
        // Attention scores: A[b, i, d] = q[b, d, i] (q stored (B, D, I)), B[b, d, j] = k[b, d, j].
        run_case(
            &ctx,
            &Case {
                batch,
                m,
                n,
                k,
                a_strides: [k * m, 1, m],
                b_strides: [k * n, n, 1],
                out_strides: [m * n, n, 1],
                bias: None,
                residual: false,
                alpha: 0.125,
                out_scale: 1.0,
                accumulate: false,
            },
            100,
            "scores (transposed A)",
        );
        // Transposed out (out[b, m, n] stored at (b, n, m)) with bias along M and a residual.
        run_case(
            &ctx,
            &Case {
                batch,
                m,
                n,
                k,
                a_strides: [m * k, k, 1],
                b_strides: [k * n, n, 1],
                out_strides: [m * n, 1, m],
                bias: Some(BiasAlong::M),
                residual: true,
                alpha: 1.0,
                out_scale: 0.5,
                accumulate: false,
            },
            200,
            "transposed out, bias M, residual",
        );
        // Bias along N, transposed B, shared (batch stride 0) A.
        run_case(
            &ctx,
            &Case {
                batch,
                m,
                n,
                k,
                a_strides: [0, k, 1],
                b_strides: [k * n, 1, k],
                out_strides: [m * n, n, 1],
                bias: Some(BiasAlong::N),
                residual: true,
                alpha: -2.0,
                out_scale: 1.0,
                accumulate: true,
            },
            300,
            "bias N, transposed B, broadcast A, accumulate",
        );
    }

    #[test]
    fn linear_matches_reference() {
        let ctx = ctx();
        let (m, k, n) = (5, 67, 130);
        let x = random(m * k, 1);
        let w = random(n * k, 2);
        let bias = random(n, 3);
        let tx = ctx.upload(&x, &[m, k]).unwrap();
        let tw = ctx.upload(&w, &[n, k]).unwrap();
        let tb = ctx.upload(&bias, &[n]).unwrap();
        let out = ctx.zeros(&[m, n]).unwrap();
        let mut p = Program::new();
        linear(&ctx, &mut p, &tx, &tw, Some(&tb), &out).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&out)).unwrap();
        let mut want = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = bias[j] as f64
                    + (0..k)
                        .map(|l| x[i * k + l] as f64 * w[j * k + l] as f64)
                        .sum::<f64>();
            }
        }
        assert_close(&got, &want, atol(k), 1e-5, "linear");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let ctx = ctx();
        let a = ctx.zeros(&[4, 5]).unwrap();
        let w = ctx.zeros(&[6, 4]).unwrap();
        let out = ctx.zeros(&[4, 6]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            linear(&ctx, &mut p, &a, &w, None, &out),
            Err(Error::Shape(_))
        ));
        let b = ctx.zeros(&[5, 6]).unwrap();
        let args = MatmulArgs {
            a: &a,
            b: &b,
            out: &out,
            bias: None,
            bias_along: BiasAlong::N,
            residual: None,
            batch: 1,
            m: 4,
            n: 6,
            k: 6, // one more than A has
            a_strides: [0, 5, 1],
            b_strides: [0, 6, 1],
            out_strides: [0, 6, 1],
            alpha: 1.0,
            out_scale: 1.0,
            accumulate: false,
        };
        assert!(matches!(matmul(&ctx, &mut p, &args), Err(Error::Shape(_))));
        assert!(matches!(
            matmul(
                &ctx,
                &mut p,
                &MatmulArgs {
                    k: 5,
                    residual: Some(&out),
                    ..args
                }
            ),
            Err(Error::Shape(_))
        ));
        assert!(matmul(&ctx, &mut p, &MatmulArgs { k: 5, ..args }).is_ok());
    }

    /// Best wall time of `reps` runs (the best is the steadiest number on a shared machine).
    pub(crate) fn time_program(ctx: &GpuContext, p: &Program, reps: usize) -> f64 {
        ctx.run(p).unwrap();
        block_on(ctx.finish()).unwrap();
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = std::time::Instant::now();
            ctx.run(p).unwrap();
            block_on(ctx.finish()).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    }

    /// `BENCH_N=1024 cargo test --lib ops::matmul::tests::bench_matmul -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_matmul() {
        let ctx = ctx();
        let s: usize = std::env::var("BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512);
        let a = ctx.upload(&random(s * s, 1), &[s, s]).unwrap();
        let b = ctx.upload(&random(s * s, 2), &[s, s]).unwrap();
        let out = ctx.zeros(&[s, s]).unwrap();
        let mut p = Program::new();
        let args = MatmulArgs {
            a: &a,
            b: &b,
            out: &out,
            bias: None,
            bias_along: BiasAlong::N,
            residual: None,
            batch: 1,
            m: s,
            n: s,
            k: s,
            a_strides: [0, s, 1],
            b_strides: [0, s, 1],
            out_strides: [0, s, 1],
            alpha: 1.0,
            out_scale: 1.0,
            accumulate: false,
        };
        matmul(&ctx, &mut p, &args).unwrap();
        let wall = time_program(
            &ctx,
            &p,
            std::env::var("BENCH_REPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(5),
        );
        let gflop = matmul_flops(1, s, s, s) as f64 / 1e9;
        println!(
            "matmul {s}x{s}x{s} on {}: best {:.1} ms wall, {:.2} GFLOP/s",
            ctx.adapter.name,
            wall * 1e3,
            gflop / wall
        );
    }
}
