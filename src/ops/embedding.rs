//! Timestep and class embeddings (`shaders/embedding.wgsl`).
//!
//! The timestep embedding is diffusers' `get_timestep_embedding` (the sinusoidal position
//! encoding of Vaswani et al. 2017 as used by Ho et al. 2020), with `scale = 1` and
//! `max_period = 10000`. Its sin/cos are computed with our own range reduction and
//! polynomials, so the result is the same (to ~1e-6) on every backend.

use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::EMBEDDING;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbeddingParams {
    numel: u32,
    dim: u32,
    half_or_classes: u32,
    flip: u32,
}

const WORKGROUP: u64 = 256;

/// The frequencies exp(-ln(max_period) · i / (half − shift)), i < half, rounded as diffusers
/// rounds them: the exponent is an f32 product then an f32 quotient (torch float32 ops), and
/// only the exp is evaluated in f64 and rounded once (torch's f32 exp is within 1 ulp of
/// that). Rounding the exponent matters: it moves a frequency by up to ~4 f32 ulps, which is
/// ~5e-4 rad of argument at t = 999.
pub fn timestep_frequencies(half: usize, freq_shift: f32) -> Result<Vec<f32>> {
    let denom = half as f64 - freq_shift as f64;
    if half > 0 && denom <= 0.0 {
        return Err(Error::config(format!(
            "timestep embedding: freq_shift {freq_shift} must be less than dim/2 = {half}"
        )));
    }
    let neg_ln_period = -(10000f64.ln()) as f32;
    Ok((0..half)
        .map(|i| {
            let exponent = (neg_ln_period * i as f32) / denom as f32;
            (exponent as f64).exp() as f32
        })
        .collect())
}

/// out[n] = [sin(t_n·f), cos(t_n·f)] (or [cos, sin] if `flip_sin_to_cos`) with f the
/// frequencies of [`timestep_frequencies`]; an odd `dim` gets a final zero column.
/// timesteps: (N) f32; out: (N, dim).
pub fn timestep_embedding(
    ctx: &GpuContext,
    program: &mut Program,
    timesteps: &Tensor,
    out: &Tensor,
    flip_sin_to_cos: bool,
    freq_shift: f32,
) -> Result<()> {
    let n = match timesteps.shape[..] {
        [n] => n,
        _ => {
            return Err(Error::shape(format!(
                "timestep_embedding: timesteps: expected (N), got {:?}",
                timesteps.shape
            )))
        }
    };
    let dim = match out.shape[..] {
        [on, d] if on == n => d,
        _ => {
            return Err(Error::shape(format!(
                "timestep_embedding: out: expected ({n}, dim), got {:?}",
                out.shape
            )))
        }
    };
    let numel =
        u32::try_from(n * dim).map_err(|_| Error::shape("timestep_embedding: out is too large"))?;
    let half = dim / 2;
    let freqs = timestep_frequencies(half, freq_shift)?;
    if numel == 0 {
        return Ok(());
    }
    // Uploaded once at record time; the bind group keeps the buffer alive.
    let freqs = ctx.upload(&freqs, &[half])?;
    let params = EmbeddingParams {
        numel,
        dim: dim as u32,
        half_or_classes: half as u32,
        flip: flip_sin_to_cos as u32,
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "timestep_embedding",
            shader: &EMBEDDING,
            entry: "timestep_embedding",
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&timesteps.buffer, &freqs.buffer],
            outputs: &[&out.buffer],
            workgroups: grid_1d((numel as u64).div_ceil(WORKGROUP))?,
        },
    )
}

/// Check class labels on the CPU before they are uploaded for [`add_class_embedding`].
pub fn validate_labels(labels: &[u32], num_classes: usize) -> Result<()> {
    match labels.iter().find(|&&l| l as usize >= num_classes) {
        Some(l) => Err(Error::config(format!(
            "class label {l} is out of range: the model has {num_classes} classes"
        ))),
        None => Ok(()),
    }
}

/// out[n, :] += table[labels[n], :] (diffusers' class_embedding added to the time
/// embedding). labels: (N) u32; table: (num_classes, dim); out: (N, dim). A label past the
/// table is clamped in the kernel (never an out-of-bounds read); check labels with
/// [`validate_labels`] first.
pub fn add_class_embedding(
    ctx: &GpuContext,
    program: &mut Program,
    labels: &Tensor,
    table: &Tensor,
    out: &Tensor,
) -> Result<()> {
    let n = match labels.shape[..] {
        [n] => n,
        _ => {
            return Err(Error::shape(format!(
                "add_class_embedding: labels: expected (N), got {:?}",
                labels.shape
            )))
        }
    };
    let (classes, dim) = match table.shape[..] {
        [c, d] if c > 0 => (c, d),
        _ => {
            return Err(Error::shape(format!(
                "add_class_embedding: table: expected (num_classes > 0, dim), got {:?}",
                table.shape
            )))
        }
    };
    expect_shape(out, &[n, dim], "add_class_embedding: out")?;
    let too_big = || Error::shape("add_class_embedding: too large for one kernel");
    let numel = u32::try_from(n * dim).map_err(|_| too_big())?;
    u32::try_from(table.numel()).map_err(|_| too_big())?;
    if numel == 0 {
        return Ok(());
    }
    let params = EmbeddingParams {
        numel,
        dim: dim as u32,
        half_or_classes: classes as u32,
        flip: 0,
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "add_class_embedding",
            shader: &EMBEDDING,
            entry: "add_class_embedding",
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&labels.buffer, &table.buffer],
            outputs: &[&out.buffer],
            workgroups: grid_1d((numel as u64).div_ceil(WORKGROUP))?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    /// f64 sin/cos of the f32 argument f32(t)·f32(freq), laid out as diffusers does.
    fn reference(ts: &[f32], dim: usize, flip: bool, shift: f32) -> Vec<f64> {
        let half = dim / 2;
        let freqs = timestep_frequencies(half, shift).unwrap();
        let mut out = Vec::new();
        for &t in ts {
            let args: Vec<f64> = freqs.iter().map(|&f| (t * f) as f64).collect();
            let sin = args.iter().map(|a| a.sin());
            let cos = args.iter().map(|a| a.cos());
            if flip {
                out.extend(cos.chain(sin));
            } else {
                out.extend(sin.chain(cos));
            }
            if dim % 2 == 1 {
                out.push(0.0);
            }
        }
        out
    }

    #[test]
    fn timestep_embedding_matches_f64() {
        let ctx = ctx();
        let ts = [0.0f32, 1.0, 7.0, 500.0, 999.0, 4000.0];
        let tt = ctx.upload(&ts, &[ts.len()]).unwrap();
        for dim in [32, 33, 128] {
            for flip in [false, true] {
                for shift in [0.0f32, 1.0] {
                    let out = ctx.zeros(&[ts.len(), dim]).unwrap();
                    // Poison the padding column so that "left unwritten" would fail.
                    ctx.write(&out, &vec![f32::NAN; ts.len() * dim]).unwrap();
                    let mut p = Program::new();
                    timestep_embedding(&ctx, &mut p, &tt, &out, flip, shift).unwrap();
                    ctx.run(&p).unwrap();
                    let got = block_on(ctx.read(&out)).unwrap();
                    // Arguments reach 4000 rad; our reduction + polynomials stay within a
                    // few f32 ulps of the exact sin/cos of the same f32 argument.
                    assert_close(
                        &got,
                        &reference(&ts, dim, flip, shift),
                        2e-6,
                        0.0,
                        &format!("timestep embedding dim {dim} flip {flip} shift {shift}"),
                    );
                }
            }
        }
    }

    #[test]
    fn sincos_over_a_dense_range() {
        // Every argument in [-6000, 6000] at an irregular step, through dim = 2 (freq = 1).
        let ctx = ctx();
        let ts: Vec<f32> = (0..20011).map(|i| -6000.0 + i as f32 * 0.599_7).collect();
        let tt = ctx.upload(&ts, &[ts.len()]).unwrap();
        let out = ctx.zeros(&[ts.len(), 2]).unwrap();
        let mut p = Program::new();
        timestep_embedding(&ctx, &mut p, &tt, &out, false, 0.0).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&out)).unwrap();
        assert_close(&got, &reference(&ts, 2, false, 0.0), 2e-6, 0.0, "sincos");
    }

    #[test]
    fn frequencies_follow_diffusers() {
        // half = 4, shift = 1: exponents -ln(1e4)·i/3.
        let f = timestep_frequencies(4, 1.0).unwrap();
        for (i, &v) in f.iter().enumerate() {
            let want = 10000f64.powf(-(i as f64) / 3.0);
            assert!(
                (v as f64 - want).abs() <= want * 1e-7,
                "freq {i}: {v} vs {want}"
            );
        }
        assert!(matches!(
            timestep_frequencies(1, 1.0),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn class_embedding_adds_rows() {
        let ctx = ctx();
        let (n, classes, dim) = (5, 7, 37);
        let labels = [3u32, 0, 6, 3, 1];
        validate_labels(&labels, classes).unwrap();
        let table = random(classes * dim, 40);
        let base = random(n * dim, 41);
        let tl = ctx.upload_u32(&labels, &[n]).unwrap();
        let tt = ctx.upload(&table, &[classes, dim]).unwrap();
        let out = ctx.upload(&base, &[n, dim]).unwrap();
        let mut p = Program::new();
        add_class_embedding(&ctx, &mut p, &tl, &tt, &out).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&out)).unwrap();
        let want: Vec<f64> = (0..n * dim)
            .map(|i| (base[i] + table[labels[i / dim] as usize * dim + i % dim]) as f64)
            .collect();
        assert_close(&got, &want, 0.0, 0.0, "class embedding");

        // An out-of-range label is rejected on the CPU and clamped on the GPU.
        assert!(matches!(
            validate_labels(&[7], classes),
            Err(Error::Config(_))
        ));
        ctx.write_u32(&tl, &[1000, 0, 0, 0, u32::MAX]).unwrap();
        let out2 = ctx.zeros(&[n, dim]).unwrap();
        let mut p = Program::new();
        add_class_embedding(&ctx, &mut p, &tl, &tt, &out2).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&out2)).unwrap();
        let last = &table[(classes - 1) * dim..];
        assert_eq!(&got[..dim], last);
        assert_eq!(&got[(n - 1) * dim..], last);
    }

    #[test]
    fn embedding_bad_shapes_are_errors() {
        let ctx = ctx();
        let t = ctx.zeros(&[3]).unwrap();
        let out = ctx.zeros(&[4, 32]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            timestep_embedding(&ctx, &mut p, &t, &out, false, 1.0),
            Err(Error::Shape(_))
        ));
        let table = ctx.zeros(&[10, 31]).unwrap();
        assert!(matches!(
            add_class_embedding(&ctx, &mut p, &t, &table, &out),
            Err(Error::Shape(_))
        ));
        assert!(p.is_empty());
    }
}
