//! Elementwise kernels (`shaders/elementwise.wgsl`): scaled add, SiLU, channel concat for
//! the U-Net's skip connections, nearest 2x upsample.

use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::ELEMENTWISE;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ElementwiseParams {
    numel: u32,
    d0: u32,
    d1: u32,
    d2: u32,
    scale: f32,
    shift: f32,
}

const WORKGROUP: u64 = 256;

#[allow(clippy::too_many_arguments)]
fn record(
    ctx: &GpuContext,
    program: &mut Program,
    label: &'static str,
    entry: &'static str,
    params: ElementwiseParams,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    ctx.record(
        program,
        DispatchDesc {
            label,
            shader: &ELEMENTWISE,
            entry,
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&a.buffer, &b.buffer],
            outputs: &[&out.buffer],
            workgroups: grid_1d((params.numel as u64).div_ceil(WORKGROUP))?,
        },
    )
}

fn as_u32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(format!("{what}: {n} is too large for one kernel")))
}

/// out = (a + b) * scale, elementwise; all three of one shape. `out` may not alias `a` or `b`.
pub fn add(
    ctx: &GpuContext,
    program: &mut Program,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    scale: f32,
) -> Result<()> {
    expect_shape(b, &a.shape, "add: b")?;
    expect_shape(out, &a.shape, "add: out")?;
    let params = ElementwiseParams {
        numel: as_u32(a.numel(), "add")?,
        d0: 0,
        d1: 0,
        d2: 0,
        scale,
        shift: 0.0,
    };
    record(ctx, program, "add", "add", params, a, b, out)
}

/// out = a·scale + shift, elementwise.
pub fn scale_shift(
    ctx: &GpuContext,
    program: &mut Program,
    a: &Tensor,
    out: &Tensor,
    scale: f32,
    shift: f32,
) -> Result<()> {
    expect_shape(out, &a.shape, "scale_shift: out")?;
    let params = ElementwiseParams {
        numel: as_u32(a.numel(), "scale_shift")?,
        d0: 0,
        d1: 0,
        d2: 0,
        scale,
        shift,
    };
    record(
        ctx,
        program,
        "scale_shift",
        "scale_shift",
        params,
        a,
        a,
        out,
    )
}

/// out = silu(a) = a·σ(a).
pub fn silu(ctx: &GpuContext, program: &mut Program, a: &Tensor, out: &Tensor) -> Result<()> {
    expect_shape(out, &a.shape, "silu: out")?;
    let params = ElementwiseParams {
        numel: as_u32(a.numel(), "silu")?,
        d0: 0,
        d1: 0,
        d2: 0,
        scale: 1.0,
        shift: 0.0,
    };
    record(ctx, program, "silu", "silu", params, a, a, out)
}

/// out = cat([a, b], dim=1) for NCHW tensors (the up blocks' skip connections).
pub fn concat_channels(
    ctx: &GpuContext,
    program: &mut Program,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let [n, ca, h, w] = nchw(a, "concat: a")?;
    let [nb, cb, hb, wb] = nchw(b, "concat: b")?;
    if (nb, hb, wb) != (n, h, w) {
        return Err(Error::shape(format!(
            "concat: a is {:?} but b is {:?}",
            a.shape, b.shape
        )));
    }
    expect_shape(out, &[n, ca + cb, h, w], "concat: out")?;
    let params = ElementwiseParams {
        numel: as_u32(out.numel(), "concat")?,
        d0: ca as u32,
        d1: cb as u32,
        d2: (h * w) as u32,
        scale: 1.0,
        shift: 0.0,
    };
    record(
        ctx,
        program,
        "concat_channels",
        "concat_channels",
        params,
        a,
        b,
        out,
    )
}

/// Nearest-neighbour 2x upsample of an NCHW tensor (diffusers' `Upsample2D` before its conv).
pub fn upsample_nearest2x(
    ctx: &GpuContext,
    program: &mut Program,
    a: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let [n, c, h, w] = nchw(a, "upsample: input")?;
    expect_shape(out, &[n, c, 2 * h, 2 * w], "upsample: out")?;
    let params = ElementwiseParams {
        numel: as_u32(out.numel(), "upsample")?,
        d0: (n * c) as u32,
        d1: h as u32,
        d2: w as u32,
        scale: 1.0,
        shift: 0.0,
    };
    record(
        ctx,
        program,
        "upsample_nearest2x",
        "upsample_nearest2x",
        params,
        a,
        a,
        out,
    )
}

/// The four dimensions of an NCHW tensor, or a shape error naming `what`.
pub fn nchw(t: &Tensor, what: &str) -> Result<[usize; 4]> {
    match t.shape[..] {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::shape(format!(
            "{what}: expected (N, C, H, W), got {:?}",
            t.shape
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    fn run1(ctx: &GpuContext, p: &Program, out: &Tensor) -> Vec<f32> {
        ctx.run(p).unwrap();
        block_on(ctx.read(out)).unwrap()
    }

    #[test]
    fn add_and_silu_match_reference() {
        let ctx = ctx();
        let n = 1000;
        let (a, b) = (random(n, 1), random(n, 2));
        let ta = ctx.upload(&a, &[n]).unwrap();
        let tb = ctx.upload(&b, &[n]).unwrap();
        let out = ctx.zeros(&[n]).unwrap();
        let mut p = Program::new();
        add(&ctx, &mut p, &ta, &tb, &out, 0.5).unwrap();
        let want: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (x as f64 + y as f64) * 0.5)
            .collect();
        assert_close(&run1(&ctx, &p, &out), &want, 1e-7, 1e-6, "add");

        let mut p = Program::new();
        silu(&ctx, &mut p, &ta, &out).unwrap();
        let want: Vec<f64> = a
            .iter()
            .map(|&x| {
                let x = x as f64;
                x / (1.0 + (-x).exp())
            })
            .collect();
        assert_close(&run1(&ctx, &p, &out), &want, 1e-6, 1e-5, "silu");

        let mut p = Program::new();
        scale_shift(&ctx, &mut p, &ta, &out, 2.0, -1.0).unwrap();
        let want: Vec<f64> = a.iter().map(|&x| 2.0 * x as f64 - 1.0).collect();
        assert_close(&run1(&ctx, &p, &out), &want, 1e-7, 1e-6, "scale_shift");
    }

    #[test]
    fn concat_and_upsample_match_reference() {
        let ctx = ctx();
        let (n, ca, cb, h, w) = (2, 3, 5, 7, 5);
        let a = random(n * ca * h * w, 3);
        let b = random(n * cb * h * w, 4);
        let ta = ctx.upload(&a, &[n, ca, h, w]).unwrap();
        let tb = ctx.upload(&b, &[n, cb, h, w]).unwrap();
        let out = ctx.zeros(&[n, ca + cb, h, w]).unwrap();
        let mut p = Program::new();
        concat_channels(&ctx, &mut p, &ta, &tb, &out).unwrap();
        let mut want = Vec::new();
        for i in 0..n {
            want.extend(
                a[i * ca * h * w..(i + 1) * ca * h * w]
                    .iter()
                    .map(|&x| x as f64),
            );
            want.extend(
                b[i * cb * h * w..(i + 1) * cb * h * w]
                    .iter()
                    .map(|&x| x as f64),
            );
        }
        assert_close(&run1(&ctx, &p, &out), &want, 0.0, 0.0, "concat");

        let up = ctx.zeros(&[n, ca, 2 * h, 2 * w]).unwrap();
        let mut p = Program::new();
        upsample_nearest2x(&ctx, &mut p, &ta, &up).unwrap();
        let mut want = vec![0.0f64; up.numel()];
        for plane in 0..n * ca {
            for y in 0..2 * h {
                for x in 0..2 * w {
                    want[(plane * 2 * h + y) * 2 * w + x] =
                        a[(plane * h + y / 2) * w + x / 2] as f64;
                }
            }
        }
        assert_close(&run1(&ctx, &p, &up), &want, 0.0, 0.0, "upsample");
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let ctx = ctx();
        let a = ctx.zeros(&[2, 3, 4, 4]).unwrap();
        let b = ctx.zeros(&[2, 3, 4, 5]).unwrap();
        let out = ctx.zeros(&[2, 6, 4, 4]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            concat_channels(&ctx, &mut p, &a, &b, &out),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            add(&ctx, &mut p, &a, &b, &out, 1.0),
            Err(Error::Shape(_))
        ));
    }
}
