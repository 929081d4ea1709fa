//! Gradients of the 2-D convolution (`shaders/conv2d_backward.wgsl`), both as implicit
//! GEMMs tiled like the forward: the input gradient is the transposed convolution of
//! `dout · scale` with the weights, the weight gradient a GEMM over the long
//! batch·pixels dimension, split over K with a deterministic second pass when the output
//! (Cout·Cin·KH·KW) alone would not fill the GPU.

use crate::error::{Error, Result};
use crate::gpu::{
    grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor, MAX_WORKGROUPS_PER_DIM,
};
use crate::ops::conv2d::conv_out_size;
use crate::ops::conv2d_direct;
use crate::ops::elementwise::nchw;
use crate::ops::matmul::{tile_entry, tile_rows};
use crate::shaders::CONV2D_BACKWARD;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BwdParams {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    m: u32,
    n: u32,
    k: u32,
    n_tiles: u32,
    m_tiles: u32,
    k_chunk: u32,
    flags: u32,
    splits: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    y0: u32,
    x0: u32,
    hc: u32,
    wc: u32,
    ky0: u32,
    kx0: u32,
    taps_y: u32,
    taps_x: u32,
    qy0: u32,
    qx0: u32,
    _pad3: u32,
    _pad4: u32,
}

/// Output tile of one workgroup (see the shader: `tile_rows(M)` rows) and its K step.
const TILE_N: usize = 128;
const TILE_K: usize = 16;
/// Split K until about this many workgroups run (an H100 has 132 SMs; several resident
/// workgroups each hide latency) ...
const TARGET_WORKGROUPS: usize = 512;
/// ... but keep at least this much K per split, so the extra partial traffic stays small.
const MIN_K_CHUNK: usize = 512;
/// And never more scratch than this for the partial sums.
const MAX_SCRATCH_BYTES: usize = 64 << 20;

/// Shapes shared by both gradients: ([N, Cin, H, W], [Cout, KH, KW], (Ho, Wo)).
fn check_shapes(
    x_shape: [usize; 4],
    weight: &Tensor,
    dout: &Tensor,
    stride: usize,
    padding: [usize; 4],
    what: &str,
) -> Result<([usize; 3], (usize, usize))> {
    let [n, cin, h, w] = x_shape;
    let [cout, wcin, kh, kw] = nchw(weight, &format!("{what}: weight"))?;
    if wcin != cin {
        return Err(Error::shape(format!(
            "{what}: weight {:?} expects {wcin} input channels, x has {cin}",
            weight.shape
        )));
    }
    let (ho, wo) = conv_out_size(h, w, kh, kw, stride, padding).ok_or_else(|| {
        Error::shape(format!(
            "{what}: a {kh}x{kw} kernel with stride {stride} and padding {padding:?} does not \
             fit x {x_shape:?}"
        ))
    })?;
    crate::gpu::expect_shape(dout, &[n, cout, ho, wo], &format!("{what}: dout"))?;
    // Indices are u32 and divided through f32 reciprocals in the shader (exact below 2^24).
    let biggest = [n * cin * h * w, n * cout * ho * wo, cout * cin * kh * kw]
        .into_iter()
        .max()
        .unwrap_or(0);
    if biggest >= 1 << 24 || cout * kh * kw >= 1 << 24 {
        return Err(Error::shape(format!(
            "{what}: a tensor of {biggest} elements is too large for one kernel; split the batch"
        )));
    }
    Ok(([cout, kh, kw], (ho, wo)))
}

#[allow(clippy::too_many_arguments)]
fn params(
    x_shape: [usize; 4],
    ck: [usize; 3],
    (ho, wo): (usize, usize),
    stride: usize,
    padding: [usize; 4],
    mnk: [usize; 3],
    tiles: [usize; 2],
    k_chunk: usize,
    flags: u32,
    splits: usize,
    scale: f32,
) -> BwdParams {
    let [n, cin, h, w] = x_shape;
    let [cout, kh, kw] = ck;
    BwdParams {
        batch: n as u32,
        cin: cin as u32,
        h: h as u32,
        w: w as u32,
        cout: cout as u32,
        ho: ho as u32,
        wo: wo as u32,
        kh: kh as u32,
        kw: kw as u32,
        stride: stride as u32,
        pad_top: padding[0] as u32,
        pad_left: padding[1] as u32,
        m: mnk[0] as u32,
        n: mnk[1] as u32,
        k: mnk[2] as u32,
        n_tiles: tiles[1] as u32,
        m_tiles: tiles[0] as u32,
        k_chunk: k_chunk as u32,
        flags,
        splits: splits as u32,
        scale,
        ..bytemuck::Zeroable::zeroed()
    }
}

fn distinct(out: &Tensor, out_what: &str, inputs: &[(&Tensor, &str)], what: &str) -> Result<()> {
    // wgpu forbids one buffer bound both read-only and read-write in a dispatch.
    for (t, name) in inputs {
        if t.buffer.as_ref() == out.buffer.as_ref() {
            return Err(Error::shape(format!(
                "{what}: {name} must be a different buffer from {out_what}"
            )));
        }
    }
    Ok(())
}

/// dx = ∂L/∂x of `out = conv2d(x, weight, stride, padding) · scale` given dout = ∂L/∂out:
/// the transposed convolution of `dout · scale` with `weight`. dout (N, Cout, Ho, Wo),
/// weight (Cout, Cin, KH, KW), dx (N, Cin, H, W); padding is [top, left, bottom, right] as
/// in the forward. Input pixels no output reads (a stride-2 window not reaching the last
/// row/column) get gradient 0. With `accumulate`, dx += the gradient. Records stride²
/// dispatches (one per sub-pixel phase class, so stride 2 wastes no zero taps).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input(
    ctx: &GpuContext,
    program: &mut Program,
    dout: &Tensor,
    weight: &Tensor,
    dx: &Tensor,
    stride: usize,
    padding: [usize; 4],
    scale: f32,
    accumulate: bool,
) -> Result<()> {
    let what = "conv2d_backward_input";
    let x_shape = nchw(dx, &format!("{what}: dx"))?;
    let (ck, (ho, wo)) = check_shapes(x_shape, weight, dout, stride, padding, what)?;
    distinct(dx, "dx", &[(dout, "dout"), (weight, "weight")], what)?;
    let [n, cin, h, w] = x_shape;
    let [cout, kh, kw] = ck;
    let m = cin;
    if m == 0 || n * h * w == 0 {
        return Ok(());
    }
    if stride == 1
        && conv2d_direct::prefer_direct(ctx, kh, kw, 1, conv2d_direct::forward_lanes(n, h, w))
    {
        // The transposed convolution of a stride-1 convolution is a convolution of dout
        // with the weight flipped in space and its channel axes swapped, padding k − 1 − pad.
        let khw = (kh * kw) as i64;
        return conv2d_direct::record_forward(
            ctx,
            program,
            &conv2d_direct::Forward {
                x: dout,
                weight,
                bias: None,
                channel_bias: None,
                residual: None,
                out: dx,
                k: kh,
                stride: 1,
                pad_top: kh as i64 - 1 - padding[0] as i64,
                pad_left: kw as i64 - 1 - padding[1] as i64,
                ws: [khw, cin as i64 * khw, -(kw as i64), -1],
                w_off: khw - 1,
                out_scale: scale,
                accumulate,
            },
        );
    }
    let rows = tile_rows(m);
    let m_tiles = m.div_ceil(rows);
    if m_tiles > MAX_WORKGROUPS_PER_DIM as usize {
        return Err(Error::shape(format!(
            "{what}: {cin} input channels is more than one dispatch can launch"
        )));
    }
    // One dispatch per phase class (see the shader): x rows iy with (iy + pad_top) mod
    // stride = py see only the taps ky = py, py + stride, ...
    let s = stride;
    let class = |py: usize, pad: usize, size: usize, ksize: usize| {
        let first = (py + s - pad % s) % s;
        let count = if first < size {
            (size - first).div_ceil(s)
        } else {
            0
        };
        let taps = if py < ksize {
            (ksize - py).div_ceil(s)
        } else {
            0
        };
        (first, count, taps, (first + pad - py) / s)
    };
    for py in 0..s {
        let (y0, hc, taps_y, qy0) = class(py, padding[0], h, kh);
        for px in 0..s {
            let (x0, wc, taps_x, qx0) = class(px, padding[1], w, kw);
            let (ncols, k) = (n * hc * wc, cout * taps_y * taps_x);
            if ncols == 0 {
                continue;
            }
            let n_tiles = ncols.div_ceil(TILE_N);
            let [gx, gy, _] = grid_1d(n_tiles as u64)?;
            let p = BwdParams {
                y0: y0 as u32,
                x0: x0 as u32,
                hc: hc as u32,
                wc: wc as u32,
                ky0: py as u32,
                kx0: px as u32,
                taps_y: taps_y as u32,
                taps_x: taps_x as u32,
                qy0: qy0 as u32,
                qx0: qx0 as u32,
                ..params(
                    x_shape,
                    ck,
                    (ho, wo),
                    stride,
                    padding,
                    [m, ncols, k],
                    [m_tiles, n_tiles],
                    0,
                    accumulate as u32,
                    1,
                    scale,
                )
            };
            ctx.record(
                program,
                DispatchDesc {
                    label: what,
                    shader: &CONV2D_BACKWARD,
                    entry: tile_entry(what, rows),
                    constants: &[],
                    params: Params::Static(bytemuck::bytes_of(&p)),
                    inputs: &[&dout.buffer, &weight.buffer],
                    outputs: &[&dx.buffer],
                    workgroups: [gx, gy, m_tiles as u32],
                },
            )?;
        }
    }
    Ok(())
}

/// How many K splits the weight gradient uses for a (m × n) output and K = `k`, with room
/// for `max_scratch` partial-sum elements, and the K chunk per split.
fn weight_splits(m: usize, n: usize, k: usize, max_scratch: usize) -> (usize, usize) {
    let m_tiles = m.div_ceil(tile_rows(m));
    let tiles = m_tiles * n.div_ceil(TILE_N);
    let by_occupancy = TARGET_WORKGROUPS.div_ceil(tiles);
    let by_chunk = k / MIN_K_CHUNK;
    let by_scratch = max_scratch / (m * n).max(1);
    let by_grid = MAX_WORKGROUPS_PER_DIM as usize / m_tiles;
    let splits = by_occupancy
        .min(by_chunk)
        .min(by_scratch)
        .min(by_grid)
        .max(1);
    let k_chunk = k.div_ceil(splits).div_ceil(TILE_K) * TILE_K;
    (k.div_ceil(k_chunk.max(1)).max(1), k_chunk.max(TILE_K))
}

/// dW = Σ over batch and output pixels of `dout · scale` ⊗ the input patch, the weight
/// gradient of `out = conv2d(x, W, stride, padding) · scale`: x (N, Cin, H, W),
/// dout (N, Cout, Ho, Wo), dw (Cout, Cin, KH, KW). With `accumulate`, dw += the gradient.
/// Deterministic: a split K is summed by a second pass in a fixed order. The scratch for
/// the partial sums (at most 64 MiB) is allocated now, at record time, and kept alive by
/// the program; see [`conv2d_backward_weight_with_scratch`] to share one between layers.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    dout: &Tensor,
    dw: &Tensor,
    stride: usize,
    padding: [usize; 4],
    scale: f32,
    accumulate: bool,
) -> Result<()> {
    conv2d_backward_weight_with_scratch(
        ctx, program, x, dout, dw, stride, padding, scale, accumulate, None,
    )
}

/// Whether the weight gradient takes the direct kernel (per-image partial sums, see
/// `conv2d_direct.rs`): x (N, Cin, H, W), ck = [Cout, KH, KW].
fn use_direct_weight(ctx: &GpuContext, x_shape: [usize; 4], ck: [usize; 3], stride: usize) -> bool {
    let [n, cin, _, _] = x_shape;
    let [cout, kh, kw] = ck;
    n * cout * cin * kh * kw * 4 <= MAX_SCRATCH_BYTES
        && conv2d_direct::prefer_direct(ctx, kh, kw, stride, n * cin)
}

/// Scratch elements [`conv2d_backward_weight`] would allocate for these shapes (0 when K is
/// not split): x (N, Cin, H, W), dw (Cout, Cin, KH, KW). A training graph can allocate the
/// maximum over its convolutions once and pass it to every
/// [`conv2d_backward_weight_with_scratch`]: dispatches run in order, so sharing is safe.
pub fn conv2d_backward_weight_scratch_len(
    ctx: &GpuContext,
    x_shape: [usize; 4],
    dw_shape: [usize; 4],
    stride: usize,
    padding: [usize; 4],
) -> usize {
    let [n, cin, h, w] = x_shape;
    let [cout, _, kh, kw] = dw_shape;
    let Some((ho, wo)) = conv_out_size(h, w, kh, kw, stride, padding) else {
        return 0;
    };
    let (m, ncols) = (cout, cin * kh * kw);
    if use_direct_weight(ctx, x_shape, [cout, kh, kw], stride) {
        return n * m * ncols;
    }
    let (splits, _) = weight_splits(m, ncols, n * ho * wo, MAX_SCRATCH_BYTES / 4);
    if splits > 1 {
        splits * m * ncols
    } else {
        0
    }
}

/// [`conv2d_backward_weight`] with a caller-provided scratch buffer for the split-K partial
/// sums (any shape; fewer splits are used when it is smaller than
/// [`conv2d_backward_weight_scratch_len`], none when it holds less than two copies of dw).
/// `None` allocates one.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight_with_scratch(
    ctx: &GpuContext,
    program: &mut Program,
    x: &Tensor,
    dout: &Tensor,
    dw: &Tensor,
    stride: usize,
    padding: [usize; 4],
    scale: f32,
    accumulate: bool,
    scratch: Option<&Tensor>,
) -> Result<()> {
    let what = "conv2d_backward_weight";
    let x_shape = nchw(x, &format!("{what}: x"))?;
    let (ck, (ho, wo)) = check_shapes(x_shape, dw, dout, stride, padding, what)?;
    distinct(dw, "dw", &[(x, "x"), (dout, "dout")], what)?;
    if let Some(t) = scratch {
        distinct(t, "scratch", &[(x, "x"), (dout, "dout"), (dw, "dw")], what)?;
    }
    let [n, cin, _, _] = x_shape;
    let [cout, kh, kw] = ck;
    let (m, ncols, k) = (cout, cin * kh * kw, n * ho * wo);
    if m == 0 || ncols == 0 {
        return Ok(());
    }
    let n_tiles = ncols.div_ceil(TILE_N);
    let rows = tile_rows(m);
    let m_tiles = m.div_ceil(rows);
    if m_tiles > MAX_WORKGROUPS_PER_DIM as usize {
        return Err(Error::shape(format!(
            "{what}: {cout} output channels is more than one dispatch can launch"
        )));
    }
    if use_direct_weight(ctx, x_shape, ck, stride) {
        // Per-image partial sums (the K split is the batch), then the same ordered reduce.
        let partials = match scratch {
            Some(t) if t.numel() >= n * m * ncols => t.clone(),
            _ => ctx.zeros(&[n, m, ncols])?,
        };
        conv2d_direct::record_weight_partials(
            ctx, program, x, dout, &partials, kh, stride, padding,
        )?;
        let p = params(
            x_shape,
            ck,
            (ho, wo),
            stride,
            padding,
            [m, ncols, k],
            [m_tiles, n_tiles],
            0,
            accumulate as u32,
            n,
            scale,
        );
        return ctx.record(
            program,
            DispatchDesc {
                label: "conv2d_backward_weight_reduce",
                shader: &CONV2D_BACKWARD,
                entry: "conv2d_backward_weight_reduce",
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&p)),
                inputs: &[&partials.buffer, &partials.buffer],
                outputs: &[&dw.buffer],
                workgroups: grid_1d(((m * ncols) as u64).div_ceil(256))?,
            },
        );
    }
    let [gx, gy, _] = grid_1d(n_tiles as u64)?;
    let max_scratch = scratch.map_or(MAX_SCRATCH_BYTES / 4, |t| t.numel());
    let (splits, k_chunk) = weight_splits(m, ncols, k, max_scratch);
    let record = |program: &mut Program, flags: u32, out: &Tensor| {
        let p = params(
            x_shape,
            ck,
            (ho, wo),
            stride,
            padding,
            [m, ncols, k],
            [m_tiles, n_tiles],
            k_chunk,
            flags,
            splits,
            scale,
        );
        ctx.record(
            program,
            DispatchDesc {
                label: what,
                shader: &CONV2D_BACKWARD,
                entry: tile_entry(what, rows),
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&p)),
                inputs: &[&x.buffer, &dout.buffer],
                outputs: &[&out.buffer],
                workgroups: [gx, gy, (splits * m_tiles) as u32],
            },
        )
    };
    if splits == 1 {
        return record(program, accumulate as u32, dw);
    }
    let partials = match scratch {
        Some(t) => t.clone(),
        None => ctx.zeros(&[splits, m, ncols])?,
    };
    record(program, 2, &partials)?;
    let p = params(
        x_shape,
        ck,
        (ho, wo),
        stride,
        padding,
        [m, ncols, k],
        [m_tiles, n_tiles],
        k_chunk,
        accumulate as u32,
        splits,
        scale,
    );
    ctx.record(
        program,
        DispatchDesc {
            label: "conv2d_backward_weight_reduce",
            shader: &CONV2D_BACKWARD,
            entry: "conv2d_backward_weight_reduce",
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&p)),
            inputs: &[&partials.buffer, &partials.buffer],
            outputs: &[&dw.buffer],
            workgroups: grid_1d(((m * ncols) as u64).div_ceil(256))?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};
    use crate::ops::conv2d::conv_flops;

    #[derive(Clone, Copy, Debug)]
    struct Case {
        n: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        padding: [usize; 4],
    }

    impl Case {
        fn out_size(&self) -> (usize, usize) {
            conv_out_size(self.h, self.w, self.k, self.k, self.stride, self.padding).unwrap()
        }
        fn x_len(&self) -> usize {
            self.n * self.cin * self.h * self.w
        }
        fn w_len(&self) -> usize {
            self.cout * self.cin * self.k * self.k
        }
        fn y_len(&self) -> usize {
            let (ho, wo) = self.out_size();
            self.n * self.cout * ho * wo
        }
    }

    /// f64 forward convolution (no bias), times `scale`.
    fn conv_ref(c: &Case, x: &[f64], wt: &[f64], scale: f64) -> Vec<f64> {
        let (ho, wo) = c.out_size();
        let mut out = vec![0.0; c.y_len()];
        for b in 0..c.n {
            for co in 0..c.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut s = 0.0;
                        for ci in 0..c.cin {
                            for ky in 0..c.k {
                                let iy = (oy * c.stride + ky) as isize - c.padding[0] as isize;
                                if iy < 0 || iy >= c.h as isize {
                                    continue;
                                }
                                for kx in 0..c.k {
                                    let ix = (ox * c.stride + kx) as isize - c.padding[1] as isize;
                                    if ix < 0 || ix >= c.w as isize {
                                        continue;
                                    }
                                    s += x[((b * c.cin + ci) * c.h + iy as usize) * c.w
                                        + ix as usize]
                                        * wt[((co * c.cin + ci) * c.k + ky) * c.k + kx];
                                }
                            }
                        }
                        out[((b * c.cout + co) * ho + oy) * wo + ox] = s * scale;
                    }
                }
            }
        }
        out
    }

    /// Analytic f64 gradients (dx, dW) of Σ dout ⊙ conv(x, W)·scale.
    fn grads_ref(
        c: &Case,
        x: &[f64],
        wt: &[f64],
        dout: &[f64],
        scale: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let (ho, wo) = c.out_size();
        let mut dx = vec![0.0; c.x_len()];
        let mut dw = vec![0.0; c.w_len()];
        for b in 0..c.n {
            for co in 0..c.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let g = dout[((b * c.cout + co) * ho + oy) * wo + ox] * scale;
                        for ci in 0..c.cin {
                            for ky in 0..c.k {
                                let iy = (oy * c.stride + ky) as isize - c.padding[0] as isize;
                                if iy < 0 || iy >= c.h as isize {
                                    continue;
                                }
                                for kx in 0..c.k {
                                    let ix = (ox * c.stride + kx) as isize - c.padding[1] as isize;
                                    if ix < 0 || ix >= c.w as isize {
                                        continue;
                                    }
                                    let xi =
                                        ((b * c.cin + ci) * c.h + iy as usize) * c.w + ix as usize;
                                    let wi = ((co * c.cin + ci) * c.k + ky) * c.k + kx;
                                    dx[xi] += g * wt[wi];
                                    dw[wi] += g * x[xi];
                                }
                            }
                        }
                    }
                }
            }
        }
        (dx, dw)
    }

    // The small graph around the conv: L = Σ r ⊙ g(conv(f(x), W)·scale) with
    // f = sin and g(y) = y + y²/4 (both elementwise, smooth, non-trivial derivatives).
    fn f(v: f64) -> f64 {
        v.sin()
    }
    fn df(v: f64) -> f64 {
        v.cos()
    }
    fn g(v: f64) -> f64 {
        v + 0.25 * v * v
    }
    fn dg(v: f64) -> f64 {
        1.0 + 0.5 * v
    }

    fn loss(c: &Case, x: &[f64], wt: &[f64], r: &[f64], scale: f64) -> f64 {
        let fx: Vec<f64> = x.iter().map(|&v| f(v)).collect();
        conv_ref(c, &fx, wt, scale)
            .iter()
            .zip(r)
            .map(|(&y, &r)| r * g(y))
            .sum()
    }

    /// Central differences of the f64 loss at `idx` of x (wrt_x) or W.
    fn fd(c: &Case, x: &[f64], wt: &[f64], r: &[f64], scale: f64, wrt_x: bool, i: usize) -> f64 {
        let h = 1e-6;
        let (mut xp, mut wp) = (x.to_vec(), wt.to_vec());
        let (mut xm, mut wm) = (x.to_vec(), wt.to_vec());
        if wrt_x {
            xp[i] += h;
            xm[i] -= h;
        } else {
            wp[i] += h;
            wm[i] -= h;
        }
        (loss(c, &xp, &wp, r, scale) - loss(c, &xm, &wm, r, scale)) / (2.0 * h)
    }

    /// Indices to check by finite differences: all of them for small tensors, else a spread.
    fn sample(len: usize, max: usize) -> Vec<usize> {
        if len <= max {
            (0..len).collect()
        } else {
            (0..max)
                .map(|i| i * len / max + (i * 7) % (len / max))
                .collect()
        }
    }

    /// GPU dx and dW (through the graph) vs the analytic f64 gradients and vs finite
    /// differences of the f64 loss; `accumulate` starts both outputs from random values.
    /// Every case on both paths: the GEMM tiles and (where they apply) the direct kernels
    /// of `conv2d_direct.rs`.
    fn run_case(ctx: &GpuContext, c: Case, seed: u64, accumulate: bool) {
        use conv2d_direct::tests::{force, force_rows, force_weight_block};
        force(false, || run_case_on(ctx, c, seed, accumulate, false));
        // The output-row tilings matter for the stride-1 input gradient only; every case
        // runs the weight gradient with each (output, input) channel block.
        let tilings: &[(usize, (usize, usize))] = if c.stride == 1 {
            &[(1, (4, 1)), (2, (16, 2)), (4, (16, 2))]
        } else {
            &[(4, (4, 1)), (4, (16, 2))]
        };
        for &(r, block) in tilings {
            force(true, || {
                force_rows(r, || {
                    force_weight_block(block, || run_case_on(ctx, c, seed, accumulate, true))
                })
            });
        }
    }

    fn run_case_on(ctx: &GpuContext, c: Case, seed: u64, accumulate: bool, direct: bool) {
        let what = format!("{c:?} acc {accumulate} direct {direct}");
        let scale = 0.75f64;
        let (ho, wo) = c.out_size();
        let to64 = |v: Vec<f32>| v.into_iter().map(|v| v as f64).collect::<Vec<f64>>();
        let x = to64(random(c.x_len(), seed));
        let wt = to64(random(c.w_len(), seed + 1));
        let r = to64(random(c.y_len(), seed + 2));
        // Forward in f64; the upstream gradient dL/dy = r ⊙ g'(y) and the input f(x).
        let fx: Vec<f64> = x.iter().map(|&v| f(v)).collect();
        let y = conv_ref(&c, &fx, &wt, scale);
        let dout: Vec<f64> = y.iter().zip(&r).map(|(&y, &r)| r * dg(y)).collect();
        let (dfx_ref, dw_ref) = grads_ref(&c, &fx, &wt, &dout, scale);

        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let t_fx = ctx.upload(&f32s(&fx), &[c.n, c.cin, c.h, c.w]).unwrap();
        let t_w = ctx.upload(&f32s(&wt), &[c.cout, c.cin, c.k, c.k]).unwrap();
        let t_dout = ctx.upload(&f32s(&dout), &[c.n, c.cout, ho, wo]).unwrap();
        let dx_init = if accumulate {
            random(c.x_len(), seed + 3)
        } else {
            vec![f32::NAN; c.x_len()]
        };
        let dw_init = if accumulate {
            random(c.w_len(), seed + 4)
        } else {
            vec![f32::NAN; c.w_len()]
        };
        let t_dx = ctx.upload(&dx_init, &[c.n, c.cin, c.h, c.w]).unwrap();
        let t_dw = ctx.upload(&dw_init, &[c.cout, c.cin, c.k, c.k]).unwrap();
        let mut p = Program::new();
        conv2d_backward_input(
            ctx,
            &mut p,
            &t_dout,
            &t_w,
            &t_dx,
            c.stride,
            c.padding,
            scale as f32,
            accumulate,
        )
        .unwrap();
        conv2d_backward_weight(
            ctx,
            &mut p,
            &t_fx,
            &t_dout,
            &t_dw,
            c.stride,
            c.padding,
            scale as f32,
            accumulate,
        )
        .unwrap();
        ctx.run(&p).unwrap();
        let got_dfx = block_on(ctx.read(&t_dx)).unwrap();
        let got_dw = block_on(ctx.read(&t_dw)).unwrap();
        let base = |init: &[f32], i: usize| if accumulate { init[i] as f64 } else { 0.0 };
        // Direct comparison with the analytic f64 gradients. Terms are O(1): f32
        // accumulation over K terms gives ~1e-7·sqrt(K)·|terms| errors.
        let k_in = c.cout * c.k * c.k;
        let k_w = c.n * ho * wo;
        let want_dfx: Vec<f64> = (0..c.x_len())
            .map(|i| dfx_ref[i] + base(&dx_init, i))
            .collect();
        let want_dw: Vec<f64> = (0..c.w_len())
            .map(|i| dw_ref[i] + base(&dw_init, i))
            .collect();
        assert_close(
            &got_dfx,
            &want_dfx,
            2e-5 * (k_in as f64).sqrt(),
            1e-5,
            &format!("{what}: d f(x)"),
        );
        assert_close(
            &got_dw,
            &want_dw,
            2e-5 * (k_w as f64).sqrt(),
            1e-5,
            &format!("{what}: dW"),
        );

        // Finite differences of the whole graph: dL/dx = d f(x) ⊙ f'(x), with d f(x) from
        // the GPU; dL/dW straight from the GPU.
        for i in sample(c.x_len(), 40) {
            let got = (got_dfx[i] as f64 - base(&dx_init, i)) * df(x[i]);
            let want = fd(&c, &x, &wt, &r, scale, true, i);
            assert!(
                (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "{what}: dL/dx[{i}]: GPU {got}, finite differences {want}"
            );
        }
        for i in sample(c.w_len(), 40) {
            let got = got_dw[i] as f64 - base(&dw_init, i);
            let want = fd(&c, &x, &wt, &r, scale, false, i);
            assert!(
                (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "{what}: dL/dW[{i}]: GPU {got}, finite differences {want}"
            );
        }
    }

    fn case(
        n: usize,
        cin: usize,
        cout: usize,
        hw: (usize, usize),
        k: usize,
        stride: usize,
        padding: [usize; 4],
    ) -> Case {
        Case {
            n,
            cin,
            cout,
            h: hw.0,
            w: hw.1,
            k,
            stride,
            padding,
        }
    }

    #[test]
    fn conv_backward_3x3_stride1() {
        let ctx = ctx();
        run_case(&ctx, case(2, 3, 5, (7, 7), 3, 1, [1; 4]), 1, false);
        run_case(&ctx, case(1, 5, 33, (14, 14), 3, 1, [1; 4]), 2, true);
        run_case(&ctx, case(2, 33, 3, (9, 11), 3, 1, [1; 4]), 3, false);
        // Wo a multiple of 4: the direct weight gradient reads dout in place.
        run_case(&ctx, case(2, 5, 9, (6, 12), 3, 1, [1; 4]), 4, true);
        // ... with more than one 16-channel block of the weight gradient (the last partial).
        run_case(&ctx, case(2, 3, 19, (5, 8), 3, 1, [1; 4]), 5, false);
    }

    #[test]
    fn conv_backward_3x3_stride2() {
        let ctx = ctx();
        // Downsample2D with padding 1: 7 -> 4, 14 -> 7.
        run_case(&ctx, case(2, 3, 5, (7, 7), 3, 2, [1; 4]), 10, false);
        run_case(&ctx, case(1, 5, 33, (14, 14), 3, 2, [1; 4]), 11, true);
        // downsample_padding=0 in diffusers: pad right/bottom by one. 7 -> 4 (odd), 28 -> 14.
        // Unpadded 6x9 -> 2x4: the windows reach rows 0..=4 only, so row 5 of x is never
        // read and its gradient must be 0.
        run_case(&ctx, case(2, 5, 3, (7, 7), 3, 2, [0, 0, 1, 1]), 12, false);
        run_case(&ctx, case(1, 3, 33, (28, 28), 3, 2, [0, 0, 1, 1]), 13, true);
        run_case(&ctx, case(2, 3, 5, (6, 9), 3, 2, [0; 4]), 14, false);
        // Even size with padding 1 on every side, and a stride of 3.
        run_case(&ctx, case(1, 3, 5, (8, 8), 3, 2, [1; 4]), 15, true);
        run_case(&ctx, case(2, 3, 4, (10, 11), 3, 3, [1, 2, 0, 1]), 16, false);
        // Wo = 8, a multiple of 4 (dout read in place), and 17 output channels.
        run_case(&ctx, case(1, 3, 17, (16, 16), 3, 2, [1; 4]), 17, true);
    }

    #[test]
    fn conv_backward_1x1() {
        let ctx = ctx();
        run_case(&ctx, case(2, 33, 5, (7, 7), 1, 1, [0; 4]), 20, false);
        run_case(&ctx, case(3, 5, 70, (14, 14), 1, 1, [0; 4]), 21, true);
        run_case(&ctx, case(2, 6, 11, (5, 8), 1, 1, [0; 4]), 23, false);
        run_case(&ctx, case(2, 6, 20, (3, 8), 1, 1, [0; 4]), 24, true);
        // 1x1 with stride 2: three of the four phase classes have no taps (gradient 0).
        run_case(&ctx, case(2, 5, 3, (7, 8), 1, 2, [0; 4]), 22, false);
    }

    /// The 16-, 32- and 64-row tile variants: M = Cin (input gradient) and M = Cout
    /// (weight gradient) each take every value in {1, 3, 16, 17, 33}.
    #[test]
    fn conv_backward_small_channel_tiles() {
        let ctx = ctx();
        for (i, (cin, cout)) in [(1, 3), (3, 16), (16, 17), (17, 33), (33, 1)]
            .into_iter()
            .enumerate()
        {
            let s = i as u64;
            run_case(
                &ctx,
                case(2, cin, cout, (7, 9), 3, 1, [1; 4]),
                60 + s,
                i % 2 == 0,
            );
            run_case(
                &ctx,
                case(1, cin, cout, (8, 7), 3, 2, [1; 4]),
                70 + s,
                i % 2 == 1,
            );
        }
    }

    /// The weight gradient with a long K (split over many chunks, then reduced): compared
    /// with the analytic f64 gradient only (finite differences would be slow on the CPU).
    #[test]
    fn conv_backward_weight_split_k() {
        // The GEMM's K split (the direct kernel splits by image; run_case covers it).
        conv2d_direct::tests::force(false, split_k_on_gemm);
    }

    fn split_k_on_gemm() {
        let ctx = ctx();
        let c = case(16, 5, 7, (28, 28), 3, 1, [1; 4]);
        let (ho, wo) = c.out_size();
        let (splits, _) = weight_splits(c.cout, c.cin * 9, c.n * ho * wo, usize::MAX);
        assert!(splits > 4, "{splits} splits");
        let x = random(c.x_len(), 40);
        let dout = random(c.y_len(), 41);
        let init = random(c.w_len(), 42);
        let tx = ctx.upload(&x, &[c.n, c.cin, c.h, c.w]).unwrap();
        let td = ctx.upload(&dout, &[c.n, c.cout, ho, wo]).unwrap();
        let tw = ctx.upload(&init, &[c.cout, c.cin, 3, 3]).unwrap();
        let mut p = Program::new();
        conv2d_backward_weight(&ctx, &mut p, &tx, &td, &tw, 1, [1; 4], -0.5, true).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&tw)).unwrap();
        let to64 = |v: &[f32]| v.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (_, dw) = grads_ref(&c, &to64(&x), &vec![0.0; c.w_len()], &to64(&dout), -0.5);
        let want: Vec<f64> = dw.iter().zip(&init).map(|(&d, &i)| d + i as f64).collect();
        assert_close(
            &got,
            &want,
            2e-5 * ((c.n * ho * wo) as f64).sqrt(),
            1e-5,
            "split-K dW",
        );
        // Deterministic: a second run gives bit-identical results.
        ctx.write(&tw, &init).unwrap();
        ctx.run(&p).unwrap();
        let again = block_on(ctx.read(&tw)).unwrap();
        assert!(got
            .iter()
            .zip(&again)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        // A shared caller scratch: the full size, then one for only 3 splits, then one too
        // small to split at all; all give the same gradient within tolerance.
        let full = conv2d_backward_weight_scratch_len(
            &ctx,
            [c.n, c.cin, c.h, c.w],
            [c.cout, c.cin, 3, 3],
            1,
            [1; 4],
        );
        assert_eq!(full, splits * c.w_len());
        // Accumulating, and not (dw starts as NaN: every element must be overwritten).
        let nan = vec![f32::NAN; c.w_len()];
        let dw64 = dw.clone();
        for (len, acc) in [
            (full, true),
            (full, false),
            (3 * c.w_len() + 5, true),
            (c.w_len(), false),
        ] {
            let scratch = ctx.zeros(&[len]).unwrap();
            ctx.write(&tw, if acc { &init } else { &nan }).unwrap();
            let mut p = Program::new();
            conv2d_backward_weight_with_scratch(
                &ctx,
                &mut p,
                &tx,
                &td,
                &tw,
                1,
                [1; 4],
                -0.5,
                acc,
                Some(&scratch),
            )
            .unwrap();
            assert_eq!(p.len(), if len >= 2 * c.w_len() { 2 } else { 1 });
            ctx.run(&p).unwrap();
            let got = block_on(ctx.read(&tw)).unwrap();
            assert_close(
                &got,
                if acc { &want } else { &dw64 },
                2e-5 * ((c.n * ho * wo) as f64).sqrt(),
                1e-5,
                &format!("split-K dW, scratch {len}, accumulate {acc}"),
            );
        }
    }

    #[test]
    fn conv_backward_bad_shapes_are_errors() {
        let ctx = ctx();
        let x = ctx.zeros(&[1, 3, 8, 8]).unwrap();
        let w = ctx.zeros(&[4, 3, 3, 3]).unwrap();
        let dout = ctx.zeros(&[1, 4, 8, 8]).unwrap();
        let dout_bad = ctx.zeros(&[1, 4, 4, 4]).unwrap();
        let w_bad = ctx.zeros(&[4, 2, 3, 3]).unwrap();
        let mut p = Program::new();
        let pad = [1; 4];
        assert!(conv2d_backward_input(&ctx, &mut p, &dout, &w, &x, 1, pad, 1.0, false).is_ok());
        assert!(conv2d_backward_weight(&ctx, &mut p, &x, &dout, &w, 1, pad, 1.0, false).is_ok());
        for r in [
            conv2d_backward_input(&ctx, &mut p, &dout_bad, &w, &x, 1, pad, 1.0, false),
            conv2d_backward_input(&ctx, &mut p, &dout, &w_bad, &x, 1, pad, 1.0, false),
            conv2d_backward_input(&ctx, &mut p, &dout, &w, &x, 0, pad, 1.0, false),
            conv2d_backward_input(&ctx, &mut p, &dout, &w, &dout, 1, pad, 1.0, false),
            conv2d_backward_weight(&ctx, &mut p, &x, &dout_bad, &w, 1, pad, 1.0, false),
            conv2d_backward_weight(&ctx, &mut p, &x, &dout, &w_bad, 1, pad, 1.0, false),
            conv2d_backward_weight(&ctx, &mut p, &x, &dout, &w, 2, pad, 1.0, false),
        ] {
            assert!(matches!(r, Err(Error::Shape(_))));
        }
    }

    /// `cargo test --release --lib ops::conv2d_backward::tests::bench_conv_backward -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_conv_backward() {
        let ctx = ctx();
        let (n, c, hw) = (8, 128, 32);
        let reps = std::env::var("BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let x = ctx
            .upload(&random(n * c * hw * hw, 1), &[n, c, hw, hw])
            .unwrap();
        let dout = ctx
            .upload(&random(n * c * hw * hw, 2), &[n, c, hw, hw])
            .unwrap();
        let w = ctx.upload(&random(c * c * 9, 3), &[c, c, 3, 3]).unwrap();
        let dx = ctx.zeros(&[n, c, hw, hw]).unwrap();
        let dw = ctx.zeros(&[c, c, 3, 3]).unwrap();
        let gflop = conv_flops(n, c, c, 3, 3, hw, hw) as f64 / 1e9;
        let mut pi = Program::new();
        conv2d_backward_input(&ctx, &mut pi, &dout, &w, &dx, 1, [1; 4], 1.0, false).unwrap();
        let mut pw = Program::new();
        conv2d_backward_weight(&ctx, &mut pw, &x, &dout, &dw, 1, [1; 4], 1.0, false).unwrap();
        // The Downsample2D shape: stride 2, 32x32 -> 16x16 (a quarter of the FLOPs).
        let dout2 = ctx
            .upload(&random(n * c * 16 * 16, 4), &[n, c, 16, 16])
            .unwrap();
        let mut pi2 = Program::new();
        conv2d_backward_input(&ctx, &mut pi2, &dout2, &w, &dx, 2, [1; 4], 1.0, false).unwrap();
        let mut pw2 = Program::new();
        conv2d_backward_weight(&ctx, &mut pw2, &x, &dout2, &dw, 2, [1; 4], 1.0, false).unwrap();
        for (name, p, gflop) in [
            ("input", &pi, gflop),
            ("weight", &pw, gflop),
            ("input stride 2", &pi2, gflop / 4.0),
            ("weight stride 2", &pw2, gflop / 4.0),
        ] {
            let wall = crate::ops::matmul::tests::time_program(&ctx, p, reps);
            println!(
                "conv2d_backward_{name} N={n} {c}->{c} {hw}x{hw} 3x3 on {}: best {:.2} ms wall, \
                 {:.1} GFLOP/s ({} dispatches)",
                ctx.adapter.name,
                wall * 1e3,
                gflop / wall,
                p.len()
            );
        }
    }

    /// Small channel counts (the default MNIST model: 32/64 channels, conv_out to 1):
    /// forward, input and weight gradient of 3x3 convs at 28x28, N=64, and 1x1-projection
    /// matmuls, each with the tile rows forced to 64, 32 and 16 and chosen automatically,
    /// timed interleaved (best of BENCH_REPS) so that other load on the machine hits all alike.
    /// `cargo test --release --lib ops::conv2d_backward::tests::bench_small_channels -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_small_channels() {
        use crate::ops::conv2d::{conv2d, Conv2dArgs};
        use crate::ops::matmul::tests::{time_program, FORCE_TILE_ROWS};
        use crate::ops::matmul::{matmul, BiasAlong, MatmulArgs};
        use std::sync::atomic::Ordering;
        let ctx = ctx();
        let reps = std::env::var("BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let (n, hw) = (64, 28);
        let variants = [64, 32, 16, 0];
        // (name, [program per variant])
        let mut progs: Vec<(String, Vec<Program>)> = Vec::new();
        let mut keep = Vec::new();
        for (cin, cout) in [(16, 16), (32, 32), (32, 1), (1, 32), (64, 3)] {
            let x = ctx
                .upload(&random(n * cin * hw * hw, 1), &[n, cin, hw, hw])
                .unwrap();
            let dout = ctx
                .upload(&random(n * cout * hw * hw, 2), &[n, cout, hw, hw])
                .unwrap();
            let w = ctx
                .upload(&random(cout * cin * 9, 3), &[cout, cin, 3, 3])
                .unwrap();
            let y = ctx.zeros(&[n, cout, hw, hw]).unwrap();
            let dx = ctx.zeros(&[n, cin, hw, hw]).unwrap();
            let dw = ctx.zeros(&[cout, cin, 3, 3]).unwrap();
            let mut pf = Vec::new();
            let mut pi = Vec::new();
            let mut pw = Vec::new();
            for v in variants {
                FORCE_TILE_ROWS.store(v, Ordering::Relaxed);
                let mut p = Program::new();
                conv2d(
                    &ctx,
                    &mut p,
                    &Conv2dArgs {
                        x: &x,
                        weight: &w,
                        bias: None,
                        channel_bias: None,
                        residual: None,
                        out: &y,
                        stride: 1,
                        padding: [1; 4],
                        out_scale: 1.0,
                    },
                )
                .unwrap();
                pf.push(p);
                let mut p = Program::new();
                conv2d_backward_input(&ctx, &mut p, &dout, &w, &dx, 1, [1; 4], 1.0, false).unwrap();
                pi.push(p);
                let mut p = Program::new();
                conv2d_backward_weight(&ctx, &mut p, &x, &dout, &dw, 1, [1; 4], 1.0, false)
                    .unwrap();
                pw.push(p);
            }
            let what = format!("conv N={n} {cin}->{cout} {hw}x{hw} 3x3");
            progs.push((format!("{what} forward"), pf));
            progs.push((format!("{what} input"), pi));
            progs.push((format!("{what} weight"), pw));
            keep.push((x, dout, w, y, dx, dw));
        }
        // 1x1 projections as GEMMs: (m, 32) x (32, N·H·W).
        let (k, cols) = (32, n * hw * hw);
        let a = ctx.upload(&random(64 * k, 4), &[64, k]).unwrap();
        let b = ctx.upload(&random(k * cols, 5), &[k, cols]).unwrap();
        let out = ctx.zeros(&[64, cols]).unwrap();
        for m in [3, 16, 32] {
            let mut ps = Vec::new();
            for v in variants {
                FORCE_TILE_ROWS.store(v, Ordering::Relaxed);
                let mut p = Program::new();
                matmul(
                    &ctx,
                    &mut p,
                    &MatmulArgs {
                        a: &a,
                        b: &b,
                        out: &out,
                        bias: None,
                        bias_along: BiasAlong::M,
                        residual: None,
                        batch: 1,
                        m,
                        n: cols,
                        k,
                        a_strides: [0, k, 1],
                        b_strides: [0, cols, 1],
                        out_strides: [0, cols, 1],
                        alpha: 1.0,
                        out_scale: 1.0,
                        accumulate: false,
                    },
                )
                .unwrap();
                ps.push(p);
            }
            progs.push((format!("matmul m={m} k={k} n={cols}"), ps));
        }
        FORCE_TILE_ROWS.store(0, Ordering::Relaxed);
        let mut best = vec![vec![f64::INFINITY; variants.len()]; progs.len()];
        for _ in 0..reps {
            for (i, (_, ps)) in progs.iter().enumerate() {
                for (j, p) in ps.iter().enumerate() {
                    best[i][j] = best[i][j].min(time_program(&ctx, p, 1));
                }
            }
        }
        println!(
            "best ms wall on {}: rows 64 / 32 / 16 / auto",
            ctx.adapter.name
        );
        let mut total = vec![0.0; variants.len()];
        for (i, (name, _)) in progs.iter().enumerate() {
            let t: Vec<String> = best[i].iter().map(|t| format!("{:7.1}", t * 1e3)).collect();
            println!("{name:40} {}", t.join(" "));
            for (j, t) in best[i].iter().enumerate() {
                total[j] += t;
            }
        }
        let t: Vec<String> = total.iter().map(|t| format!("{:7.1}", t * 1e3)).collect();
        println!("{:40} {}", "total", t.join(" "));
    }
}
