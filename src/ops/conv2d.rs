//! 2-D convolution (`shaders/conv2d.wgsl`) as an implicit GEMM with a fused epilogue:
//! bias, a per-sample per-channel add (the ResNet block's time-embedding projection, added
//! after conv1 in diffusers' `ResnetBlock2D`), a residual and an output scale
//! (`output_scale_factor`).

use crate::error::{Error, Result};
use crate::gpu::{
    expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor,
    MAX_WORKGROUPS_PER_DIM,
};
use crate::ops::elementwise::nchw;
use crate::ops::matmul::{tile_entry, tile_rows};
use crate::shaders::CONV2D;

/// out = (conv(x, weight) + bias + channel_bias + residual) · out_scale.
#[derive(Clone, Copy)]
pub struct Conv2dArgs<'a> {
    /// (N, Cin, H, W)
    pub x: &'a Tensor,
    /// (Cout, Cin, KH, KW), PyTorch layout.
    pub weight: &'a Tensor,
    /// (Cout)
    pub bias: Option<&'a Tensor>,
    /// (N, Cout): per-sample per-channel add.
    pub channel_bias: Option<&'a Tensor>,
    /// (N, Cout, Ho, Wo); must be a different buffer from `out` (as must every input).
    pub residual: Option<&'a Tensor>,
    /// (N, Cout, Ho, Wo)
    pub out: &'a Tensor,
    /// 1 or 2 (any positive stride works).
    pub stride: usize,
    /// Zero padding: top, left, bottom, right. diffusers' `Downsample2D` with
    /// `padding=0` pads right/bottom by one before a stride-2 conv: `[0, 0, 1, 1]`.
    pub padding: [usize; 4],
    pub out_scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
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
    kdim: u32,
    ncols: u32,
    n_tiles: u32,
    flags: u32,
    out_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

/// Output tile of one workgroup: `tile_rows(Cout)` output channels x 128 pixels (see the
/// shader).
const TILE_N: usize = 128;

/// (Ho, Wo) of a convolution, or `None` when the kernel does not fit the padded input.
pub fn conv_out_size(
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: [usize; 4],
) -> Option<(usize, usize)> {
    let ph = h + padding[0] + padding[2];
    let pw = w + padding[1] + padding[3];
    if stride == 0 || kh == 0 || kw == 0 || ph < kh || pw < kw {
        return None;
    }
    Some(((ph - kh) / stride + 1, (pw - kw) / stride + 1))
}

/// 2 · MACs of a convolution, for benchmarks.
pub fn conv_flops(
    n: usize,
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
) -> u64 {
    2 * (n * cin * cout * kh * kw * ho * wo) as u64
}

/// Record one convolution; see [`Conv2dArgs`].
pub fn conv2d(ctx: &GpuContext, program: &mut Program, args: &Conv2dArgs) -> Result<()> {
    conv2d_with_setup(ctx, program, None, args)
}

/// [`conv2d`], with the passes that only rearrange the weight (the direct kernels' weight
/// staging) recorded into `setup` when it is given: a caller whose weights do not change
/// between runs (inference) runs `setup` once instead of on every run of `program`.
pub fn conv2d_with_setup(
    ctx: &GpuContext,
    program: &mut Program,
    setup: Option<&mut Program>,
    args: &Conv2dArgs,
) -> Result<()> {
    let [n, cin, h, w] = nchw(args.x, "conv2d: x")?;
    let [cout, wcin, kh, kw] = nchw(args.weight, "conv2d: weight")?;
    if wcin != cin {
        return Err(Error::shape(format!(
            "conv2d: weight {:?} expects {wcin} input channels, x {:?} has {cin}",
            args.weight.shape, args.x.shape
        )));
    }
    let (ho, wo) = conv_out_size(h, w, kh, kw, args.stride, args.padding).ok_or_else(|| {
        Error::shape(format!(
            "conv2d: a {kh}x{kw} kernel with stride {} and padding {:?} does not fit x {:?}",
            args.stride, args.padding, args.x.shape
        ))
    })?;
    expect_shape(args.out, &[n, cout, ho, wo], "conv2d: out")?;
    if let Some(b) = args.bias {
        expect_shape(b, &[cout], "conv2d: bias")?;
    }
    if let Some(b) = args.channel_bias {
        expect_shape(b, &[n, cout], "conv2d: channel_bias")?;
    }
    if let Some(r) = args.residual {
        expect_shape(r, &[n, cout, ho, wo], "conv2d: residual")?;
    }
    // wgpu forbids one buffer bound both read-only and read-write in a dispatch.
    for (t, what) in [
        (Some(args.x), "x"),
        (Some(args.weight), "weight"),
        (args.bias, "bias"),
        (args.channel_bias, "channel_bias"),
        (args.residual, "residual"),
    ] {
        if t.is_some_and(|t| t.buffer.as_ref() == args.out.buffer.as_ref()) {
            return Err(Error::shape(format!(
                "conv2d: {what} must be a different buffer from out"
            )));
        }
    }
    let kdim = cin * kh * kw;
    let ncols = n * ho * wo;
    if ncols == 0 || cout == 0 {
        return Ok(());
    }
    // The shader divides k and pixel indices by float reciprocals (exact below 2^24).
    if kdim >= 1 << 24 || ncols >= 1 << 24 {
        return Err(Error::shape(format!(
            "conv2d: Cin*KH*KW = {kdim} or N*Ho*Wo = {ncols} is 2^24 or more; split the batch"
        )));
    }
    // Indices are u32 in the shader; the largest is the weight or input size.
    for (v, what) in [
        (args.x.numel(), "x"),
        (args.weight.numel(), "weight"),
        (args.out.numel(), "out"),
    ] {
        if v > u32::MAX as usize / 2 {
            return Err(Error::shape(format!(
                "conv2d: {what} has {v} elements, too many for one kernel"
            )));
        }
    }
    if crate::ops::conv2d_direct::prefer_direct(
        ctx,
        kh,
        kw,
        args.stride,
        crate::ops::conv2d_direct::forward_invocations(n, cout, ho, wo),
    ) {
        let khw = (kh * kw) as i64;
        return crate::ops::conv2d_direct::record_forward_with_setup(
            ctx,
            program,
            setup,
            &crate::ops::conv2d_direct::Forward {
                x: args.x,
                weight: args.weight,
                bias: args.bias,
                channel_bias: args.channel_bias,
                residual: args.residual,
                out: args.out,
                k: kh,
                stride: args.stride,
                pad_top: args.padding[0] as i64,
                pad_left: args.padding[1] as i64,
                ws: [cin as i64 * khw, khw, kw as i64, 1],
                w_off: 0,
                out_scale: args.out_scale,
                accumulate: false,
            },
        );
    }
    let n_tiles = ncols.div_ceil(TILE_N);
    let rows = tile_rows(cout);
    let m_tiles = cout.div_ceil(rows);
    if m_tiles > MAX_WORKGROUPS_PER_DIM as usize {
        return Err(Error::shape(format!(
            "conv2d: {cout} output channels is more than one dispatch can launch"
        )));
    }
    let [gx, gy, _] = grid_1d(n_tiles as u64)?;
    let flags = args.bias.map_or(0, |_| 1)
        | args.channel_bias.map_or(0, |_| 2)
        | args.residual.map_or(0, |_| 4);
    let params = ConvParams {
        batch: n as u32,
        cin: cin as u32,
        h: h as u32,
        w: w as u32,
        cout: cout as u32,
        ho: ho as u32,
        wo: wo as u32,
        kh: kh as u32,
        kw: kw as u32,
        stride: args.stride as u32,
        pad_top: args.padding[0] as u32,
        pad_left: args.padding[1] as u32,
        kdim: kdim as u32,
        ncols: ncols as u32,
        n_tiles: n_tiles as u32,
        flags,
        out_scale: args.out_scale,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    // Absent optional operands are bound to the weights (never read: the flags say so).
    let dummy = args.weight;
    ctx.record(
        program,
        DispatchDesc {
            label: "conv2d",
            shader: &CONV2D,
            entry: tile_entry("conv2d", rows),
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[
                &args.x.buffer,
                &args.weight.buffer,
                &args.bias.unwrap_or(dummy).buffer,
                &args.channel_bias.unwrap_or(dummy).buffer,
                &args.residual.unwrap_or(dummy).buffer,
            ],
            outputs: &[&args.out.buffer],
            workgroups: [gx, gy, m_tiles as u32],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    struct Case {
        n: usize,
        cin: usize,
        cout: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        padding: [usize; 4],
        bias: bool,
        channel_bias: bool,
        residual: bool,
        out_scale: f32,
    }

    /// Direct f64 convolution, plus the sum of |terms| per output for the tolerance.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        c: &Case,
        ho: usize,
        wo: usize,
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        cb: &[f32],
        res: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut out = vec![0.0; c.n * c.cout * ho * wo];
        let mut mag = vec![0.0; out.len()];
        for b in 0..c.n {
            for co in 0..c.cout {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let (mut s, mut m) = (0.0f64, 0.0f64);
                        for ci in 0..c.cin {
                            for ky in 0..c.k {
                                for kx in 0..c.k {
                                    let iy = (oy * c.stride + ky) as isize - c.padding[0] as isize;
                                    let ix = (ox * c.stride + kx) as isize - c.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize
                                    {
                                        continue;
                                    }
                                    let t = x
                                        [((b * c.cin + ci) * c.h + iy as usize) * c.w + ix as usize]
                                        as f64
                                        * wt[((co * c.cin + ci) * c.k + ky) * c.k + kx] as f64;
                                    s += t;
                                    m += t.abs();
                                }
                            }
                        }
                        let o = ((b * c.cout + co) * ho + oy) * wo + ox;
                        if c.bias {
                            s += bias[co] as f64;
                        }
                        if c.channel_bias {
                            s += cb[b * c.cout + co] as f64;
                        }
                        if c.residual {
                            s += res[o] as f64;
                        }
                        out[o] = s * c.out_scale as f64;
                        mag[o] = (m + 3.0) * c.out_scale.abs() as f64;
                    }
                }
            }
        }
        (out, mag)
    }

    /// Every case on both paths: the GEMM tiles and (where they apply) the direct kernels
    /// of `conv2d_direct.rs`, with each of their output-row tilings.
    fn run_case(ctx: &GpuContext, c: &Case, seed: u64) {
        use crate::ops::conv2d_direct::tests::{force, force_rows};
        force(false, || run_case_on(ctx, c, seed, false));
        for rows in [1, 2, 4] {
            force(true, || {
                force_rows(rows, || run_case_on(ctx, c, seed, true))
            });
        }
    }

    fn run_case_on(ctx: &GpuContext, c: &Case, seed: u64, direct: bool) {
        let what = format!(
            "conv n{} {}->{} {}x{} k{} s{} pad{:?} direct {direct}",
            c.n, c.cin, c.cout, c.h, c.w, c.k, c.stride, c.padding
        );
        let (ho, wo) = conv_out_size(c.h, c.w, c.k, c.k, c.stride, c.padding).unwrap();
        let x = random(c.n * c.cin * c.h * c.w, seed);
        let wt = random(c.cout * c.cin * c.k * c.k, seed + 1);
        let bias = random(c.cout, seed + 2);
        let cb = random(c.n * c.cout, seed + 3);
        let res = random(c.n * c.cout * ho * wo, seed + 4);
        let tx = ctx.upload(&x, &[c.n, c.cin, c.h, c.w]).unwrap();
        let tw = ctx.upload(&wt, &[c.cout, c.cin, c.k, c.k]).unwrap();
        let tb = ctx.upload(&bias, &[c.cout]).unwrap();
        let tcb = ctx.upload(&cb, &[c.n, c.cout]).unwrap();
        let tres = ctx.upload(&res, &[c.n, c.cout, ho, wo]).unwrap();
        let out = ctx.zeros(&[c.n, c.cout, ho, wo]).unwrap();
        let mut p = Program::new();
        conv2d(
            ctx,
            &mut p,
            &Conv2dArgs {
                x: &tx,
                weight: &tw,
                bias: c.bias.then_some(&tb),
                channel_bias: c.channel_bias.then_some(&tcb),
                residual: c.residual.then_some(&tres),
                out: &out,
                stride: c.stride,
                padding: c.padding,
                out_scale: c.out_scale,
            },
        )
        .unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&out)).unwrap();
        let (want, mag) = reference(c, ho, wo, &x, &wt, &bias, &cb, &res);
        // Tolerance: 1e-5 relative to the sum of |terms| (f32 accumulation error bound).
        let mut worst = (0.0f64, 0usize);
        for i in 0..got.len() {
            let r = (got[i] as f64 - want[i]).abs() / (1e-5 * mag[i]);
            // NaN must fail too.
            let r = if r.is_nan() { f64::INFINITY } else { r };
            if r > worst.0 {
                worst = (r, i);
            }
        }
        let i = worst.1;
        assert!(
            worst.0 <= 1.0,
            "{what}: element {i}: got {}, want {} (sum|terms| {})",
            got[i],
            want[i],
            mag[i]
        );
        // And an absolute check through the shared helper (catches NaN the same way).
        assert_close(&got, &want, 1e-3, 1e-4, &what);
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
            bias: true,
            channel_bias: false,
            residual: false,
            out_scale: 1.0,
        }
    }

    #[test]
    fn conv3x3_stride1_pad1() {
        let ctx = ctx();
        run_case(&ctx, &case(2, 5, 33, (7, 7), 3, 1, [1; 4]), 1);
        run_case(&ctx, &case(1, 3, 70, (14, 14), 3, 1, [1; 4]), 2);
        run_case(&ctx, &case(3, 33, 5, (9, 11), 3, 1, [1; 4]), 3);
    }

    #[test]
    fn conv3x3_stride2_downsample_paddings() {
        let ctx = ctx();
        // diffusers Downsample2D, downsample_padding=1.
        run_case(&ctx, &case(2, 5, 33, (14, 14), 3, 2, [1; 4]), 10);
        run_case(&ctx, &case(1, 33, 7, (7, 7), 3, 2, [1; 4]), 11);
        // downsample_padding=0: F.pad (0, 1, 0, 1) then stride 2.
        run_case(&ctx, &case(2, 5, 33, (28, 28), 3, 2, [0, 0, 1, 1]), 12);
        run_case(&ctx, &case(1, 3, 5, (7, 7), 3, 2, [0, 0, 1, 1]), 13);
    }

    #[test]
    fn conv1x1_and_fused_epilogue() {
        let ctx = ctx();
        // Shortcut 1x1, no bias at all.
        let mut c = case(2, 33, 65, (7, 7), 1, 1, [0; 4]);
        c.bias = false;
        run_case(&ctx, &c, 20);
        // Everything fused: bias + time-embedding channel bias + residual, scaled.
        let mut c = case(3, 5, 33, (14, 14), 3, 1, [1; 4]);
        c.channel_bias = true;
        c.residual = true;
        c.out_scale = 0.5;
        run_case(&ctx, &c, 21);
        let mut c = case(2, 70, 3, (28, 28), 1, 1, [0; 4]);
        c.residual = true;
        run_case(&ctx, &c, 22);
    }

    /// The 16-, 32- and 64-row tile variants around their edges: Cout in
    /// {1, 3, 16, 17, 33} (conv_out has 1 or 3), with the fused epilogue, pixel counts that
    /// are not multiples of 128, and a stride-2 case.
    #[test]
    fn conv_small_cout_tiles() {
        let ctx = ctx();
        for (i, cout) in [1, 3, 16, 17, 33].into_iter().enumerate() {
            let mut c = case(2, 5, cout, (9, 11), 3, 1, [1; 4]);
            c.channel_bias = true;
            c.residual = i % 2 == 0;
            c.out_scale = 0.5;
            run_case(&ctx, &c, 40 + i as u64);
            run_case(
                &ctx,
                &case(3, 17, cout, (14, 14), 3, 2, [0, 0, 1, 1]),
                50 + i as u64,
            );
        }
    }

    /// Images smaller than a workgroup at many channels (the CIFAR-10 model's 8x8 and 4x4
    /// levels at batch 1): the direct forward puts several channel blocks of one image, or
    /// the blocks of several images, into one workgroup.
    #[test]
    fn conv_small_images_many_channels() {
        let ctx = ctx();
        let mut c = case(1, 40, 70, (4, 4), 3, 1, [1; 4]);
        c.channel_bias = true;
        c.residual = true;
        run_case(&ctx, &c, 60);
        let mut c = case(2, 9, 40, (3, 5), 3, 1, [1; 4]);
        c.channel_bias = true;
        run_case(&ctx, &c, 61);
        run_case(&ctx, &case(1, 20, 48, (8, 8), 3, 2, [0, 0, 1, 1]), 62);
        run_case(&ctx, &case(2, 17, 33, (2, 3), 1, 1, [0; 4]), 63);
    }

    /// More than 65535 pixel tiles: the tile index is split over grid x and y. Ignored by
    /// default: it needs an 8.4M-pixel image (~20 s on llvmpipe).
    /// `cargo test --lib ops::conv2d::tests::conv_grid_past_one_dimension -- --ignored`
    #[test]
    #[ignore]
    fn conv_grid_past_one_dimension() {
        let ctx = ctx();
        let (h, w) = (2900, 2900); // 8.4M pixels = 65,704 tiles of 128
        let x = random(h * w, 30);
        let tx = ctx.upload(&x, &[1, 1, h, w]).unwrap();
        let tw = ctx.upload(&[0.5, -2.0], &[2, 1, 1, 1]).unwrap();
        let tb = ctx.upload(&[0.25, 1.0], &[2]).unwrap();
        let out = ctx.zeros(&[1, 2, h, w]).unwrap();
        let mut p = Program::new();
        conv2d(
            &ctx,
            &mut p,
            &Conv2dArgs {
                x: &tx,
                weight: &tw,
                bias: Some(&tb),
                channel_bias: None,
                residual: None,
                out: &out,
                stride: 1,
                padding: [0; 4],
                out_scale: 1.0,
            },
        )
        .unwrap();
        assert!((h * w).div_ceil(TILE_N) > MAX_WORKGROUPS_PER_DIM as usize);
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&out)).unwrap();
        let want: Vec<f64> = [(0.5, 0.25), (-2.0, 1.0)]
            .iter()
            .flat_map(|&(wt, b)| x.iter().map(move |&v| v as f64 * wt + b))
            .collect();
        assert_close(&got, &want, 1e-6, 1e-6, "conv 1x1 on 2050x2050");
    }

    #[test]
    fn conv_bad_shapes_are_errors() {
        let ctx = ctx();
        let x = ctx.zeros(&[1, 3, 8, 8]).unwrap();
        let w = ctx.zeros(&[4, 3, 3, 3]).unwrap();
        let w_bad = ctx.zeros(&[4, 2, 3, 3]).unwrap();
        let out = ctx.zeros(&[1, 4, 8, 8]).unwrap();
        let out_bad = ctx.zeros(&[1, 4, 4, 4]).unwrap();
        let mut p = Program::new();
        let args = Conv2dArgs {
            x: &x,
            weight: &w,
            bias: None,
            channel_bias: None,
            residual: None,
            out: &out,
            stride: 1,
            padding: [1; 4],
            out_scale: 1.0,
        };
        assert!(conv2d(&ctx, &mut p, &args).is_ok());
        for bad in [
            Conv2dArgs {
                weight: &w_bad,
                ..args
            },
            Conv2dArgs {
                out: &out_bad,
                ..args
            },
            Conv2dArgs {
                bias: Some(&w),
                ..args
            },
            Conv2dArgs {
                residual: Some(&out),
                ..args
            },
            Conv2dArgs { stride: 0, ..args },
        ] {
            assert!(matches!(conv2d(&ctx, &mut p, &bad), Err(Error::Shape(_))));
        }
    }

    /// `cargo test --lib ops::conv2d::tests::bench_conv -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_conv() {
        let ctx = ctx();
        let (n, c, hw) = (8, 128, 32);
        let x = ctx
            .upload(&random(n * c * hw * hw, 1), &[n, c, hw, hw])
            .unwrap();
        let w = ctx.upload(&random(c * c * 9, 2), &[c, c, 3, 3]).unwrap();
        let out = ctx.zeros(&[n, c, hw, hw]).unwrap();
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
                out: &out,
                stride: 1,
                padding: [1; 4],
                out_scale: 1.0,
            },
        )
        .unwrap();
        let wall = crate::ops::matmul::tests::time_program(
            &ctx,
            &p,
            std::env::var("BENCH_REPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3),
        );
        let gflop = conv_flops(n, c, c, 3, 3, hw, hw) as f64 / 1e9;
        println!(
            "conv N={n} {c}->{c} {hw}x{hw} 3x3 on {}: best {:.1} ms wall, {:.2} GFLOP/s",
            ctx.adapter.name,
            wall * 1e3,
            gflop / wall
        );
    }
}
