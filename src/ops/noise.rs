//! Counter-based Gaussian noise (`shaders/noise.wgsl`): Philox4x32-10 (Salmon et al., SC
//! 2011) + Box–Muller, implemented identically on the GPU and the CPU so that one seed gives
//! the same x_T and per-step noise natively and in the browser.
//!
//! Element i of stream s under seed k comes from block i / 4: counter (i / 4, s, 0, 0), key
//! (k as u32, k >> 32). Integer words match bit for bit between GPU and CPU; the normals
//! match to a few f32 ulps (division and sqrt rounding and FMA contraction are the only
//! backend freedoms left, since ln and sin/cos are our own polynomials).

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::NOISE;

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// The Philox4x32 bijection with 10 rounds (Random123's philox4x32_10).
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        }
        let p0 = PHILOX_M0 as u64 * c[0] as u64;
        let p1 = PHILOX_M1 as u64 * c[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

// The constants and operation order below mirror noise.wgsl exactly (same decimal literals,
// so both sides round them to the same f32).
// ln 2 split: the high part has 16 significant bits so e·LN2_HI is exact.
#[allow(clippy::excessive_precision)]
const LN2_HI: f32 = 0.693_145_751_953_125;
const LN2_LO: f32 = 1.428_606_8e-6;
const SQRT2: f32 = std::f32::consts::SQRT_2;
const TWO_PI: f32 = 6.283_185_5;
const TWO_POW_M24: f32 = 5.960_464_5e-8;

fn ln(u: f32) -> f32 {
    let bits = u.to_bits();
    let mut e = (bits >> 23) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    if m > SQRT2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let poly =
        2.0 * s + 2.0 * s * z * (1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0))));
    let ef = e as f32;
    ef * LN2_HI + (ef * LN2_LO + poly)
}

fn sin_poly(r: f32) -> f32 {
    let z = r * r;
    let q = -1.0 / 6.0
        + z * (1.0 / 120.0
            + z * (-1.0 / 5040.0 + z * (1.0 / 362_880.0 + z * (-1.0 / 39_916_800.0))));
    r + r * z * q
}

fn cos_poly(r: f32) -> f32 {
    let z = r * r;
    let q = 1.0 / 24.0
        + z * (-1.0 / 720.0
            + z * (1.0 / 40320.0 + z * (-1.0 / 3_628_800.0 + z * (1.0 / 479_001_600.0))));
    1.0 - 0.5 * z + z * z * q
}

fn cossin_turns(v: f32) -> (f32, f32) {
    // WGSL's round() is round-half-to-even.
    let qf = (v * 4.0).round_ties_even();
    let r = (v - qf * 0.25) * TWO_PI;
    let (s, c) = (sin_poly(r), cos_poly(r));
    match (qf as u32) & 3 {
        0 => (c, s),
        1 => (-s, c),
        2 => (-c, -s),
        _ => (s, -c),
    }
}

fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let u = ((a >> 8) as f32 + 1.0) * TWO_POW_M24;
    let v = (b >> 8) as f32 * TWO_POW_M24;
    let radius = (-2.0 * ln(u)).sqrt();
    let (c, s) = cossin_turns(v);
    (radius * c, radius * s)
}

fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The Philox words the GPU uses for elements 0..n (tests, and for anyone who needs them).
pub fn philox_words_cpu(seed: u64, stream: u32, n: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(n.next_multiple_of(4));
    for b in 0..n.div_ceil(4) {
        out.extend(philox4x32_10([b as u32, stream, 0, 0], key(seed)));
    }
    out.truncate(n);
    out
}

/// N(0, 1) noise for elements 0..n of `stream` under `seed`: the same algorithm as the GPU
/// kernel (the CLI writes x_T with this). Agrees with [`NoiseOp`] to a few f32 ulps.
pub fn gaussian_noise_cpu(seed: u64, stream: u32, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n.next_multiple_of(4));
    for b in 0..n.div_ceil(4) {
        let r = philox4x32_10([b as u32, stream, 0, 0], key(seed));
        let (z0, z1) = box_muller(r[0], r[1]);
        let (z2, z3) = box_muller(r[2], r[3]);
        out.extend([z0, z1, z2, z3]);
    }
    out.truncate(n);
    out
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NoiseParams {
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    numel: u32,
}

/// A recorded dispatch that fills a tensor with N(0, 1) noise; [`NoiseOp::set`] picks the
/// seed and stream before each run (the sampler uses one stream per step).
pub struct NoiseOp {
    params: wgpu::Buffer,
    numel: u32,
}

impl NoiseOp {
    /// Record the dispatch filling `out` (any shape, f32) with noise. Until [`Self::set`]
    /// is called the seed and stream are 0.
    pub fn record(ctx: &GpuContext, program: &mut Program, out: &Tensor) -> Result<NoiseOp> {
        Self::record_entry(ctx, program, out, "gaussian")
    }

    fn record_entry(
        ctx: &GpuContext,
        program: &mut Program,
        out: &Tensor,
        entry: &'static str,
    ) -> Result<NoiseOp> {
        // numel + 3 must not wrap in the kernel.
        let numel = u32::try_from(out.numel())
            .ok()
            .filter(|&n| n <= u32::MAX - 3)
            .ok_or_else(|| Error::shape("noise: out is too large for one kernel"))?;
        let op = NoiseOp {
            params: ctx.uniform_buffer(std::mem::size_of::<NoiseParams>()),
            numel,
        };
        op.set(ctx, 0, 0);
        ctx.record(
            program,
            DispatchDesc {
                label: "noise",
                shader: &NOISE,
                entry,
                constants: &[],
                params: Params::Buffer(&op.params),
                inputs: &[],
                outputs: &[&out.buffer],
                workgroups: grid_1d((numel as u64).div_ceil(4).div_ceil(256))?,
            },
        )?;
        Ok(op)
    }

    /// Choose the seed and stream for the next run (a `queue.write_buffer`).
    pub fn set(&self, ctx: &GpuContext, seed: u64, stream: u32) {
        let [seed_lo, seed_hi] = key(seed);
        let params = NoiseParams {
            seed_lo,
            seed_hi,
            stream,
            numel: self.numel,
        };
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx};

    #[test]
    fn philox_known_answers() {
        // Random123 kat_vectors, philox4x32 10.
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn cpu_ln_and_cossin_are_accurate() {
        for i in 0..=(1u32 << 12) {
            let a = i << 20;
            let u = ((a >> 8) as f32 + 1.0) * TWO_POW_M24;
            let want = (u as f64).ln();
            assert!((ln(u) as f64 - want).abs() <= 2e-7 * want.abs().max(1e-30) + 1e-12);
            let v = (a >> 8) as f32 * TWO_POW_M24;
            let (c, s) = cossin_turns(v);
            let ang = 2.0 * std::f64::consts::PI * v as f64;
            assert!((c as f64 - ang.cos()).abs() < 3e-7 && (s as f64 - ang.sin()).abs() < 3e-7);
        }
        // The smallest u is 2^-24.
        assert!((ln(TWO_POW_M24) as f64 - (-24.0 * 2f64.ln())).abs() < 2e-6);
    }

    fn gpu_noise(
        ctx: &GpuContext,
        n: usize,
        seed: u64,
        stream: u32,
        entry: &'static str,
    ) -> Tensor {
        let out = ctx.zeros(&[n]).unwrap();
        let mut p = Program::new();
        let op = NoiseOp::record_entry(ctx, &mut p, &out, entry).unwrap();
        op.set(ctx, seed, stream);
        ctx.run(&p).unwrap();
        out
    }

    #[test]
    fn gpu_philox_words_match_cpu_bit_exactly() {
        let ctx = ctx();
        // Not a multiple of 4 or 1024; seeds with both halves nonzero.
        let n = 10_007;
        for (seed, stream) in [
            (0u64, 0u32),
            (0x0123_4567_89AB_CDEF, 17),
            (u64::MAX, u32::MAX),
        ] {
            let out = gpu_noise(&ctx, n, seed, stream, "philox_raw");
            let got = block_on(ctx.read_u32(&out)).unwrap();
            assert_eq!(
                got,
                philox_words_cpu(seed, stream, n),
                "seed {seed:x} stream {stream}"
            );
        }
    }

    #[test]
    fn gpu_normals_match_cpu() {
        let ctx = ctx();
        let n = 100_003;
        let seed = 0xDEAD_BEEF_0000_0042;
        let out = gpu_noise(&ctx, n, seed, 3, "gaussian");
        let got = block_on(ctx.read(&out)).unwrap();
        let want: Vec<f64> = gaussian_noise_cpu(seed, 3, n)
            .iter()
            .map(|&v| v as f64)
            .collect();
        // Same f32 operations on both sides; only division/sqrt rounding and FMA contraction
        // may differ: a few ulps of values up to ~5.
        assert_close(&got, &want, 1e-6, 1e-5, "gaussian noise GPU vs CPU");

        // Moments over 1e5 samples within 4 standard errors: mean ± 4/√n, var ± 4·√(2/n).
        let nf = n as f64;
        let mean = want.iter().sum::<f64>() / nf;
        let var = want.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nf;
        assert!(mean.abs() < 4.0 / nf.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 4.0 * (2.0 / nf).sqrt(), "var {var}");
        // Tails: P(|z| > 3) = 0.0027; expect ~270, allow ± 4·√270.
        let tail = want.iter().filter(|v| v.abs() > 3.0).count() as f64;
        let expect = 0.0026998 * nf;
        assert!(
            (tail - expect).abs() < 4.0 * expect.sqrt(),
            "tail count {tail}"
        );
        assert!(want.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn streams_and_seeds_differ() {
        let ctx = ctx();
        let n = 1000;
        let a = block_on(ctx.read(&gpu_noise(&ctx, n, 7, 0, "gaussian"))).unwrap();
        let b = block_on(ctx.read(&gpu_noise(&ctx, n, 7, 1, "gaussian"))).unwrap();
        let c = block_on(ctx.read(&gpu_noise(&ctx, n, 8, 0, "gaussian"))).unwrap();
        let same = |x: &[f32], y: &[f32]| x.iter().zip(y).filter(|(p, q)| p == q).count();
        assert!(same(&a, &b) == 0 && same(&a, &c) == 0);
        // Correlation between streams is ~0 (|r| < 4/√n).
        let r: f64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| x as f64 * y as f64)
            .sum::<f64>()
            / n as f64;
        assert!(r.abs() < 4.0 / (n as f64).sqrt(), "correlation {r}");
        // The same (seed, stream) repeats exactly, and set() between runs takes effect.
        let out = ctx.zeros(&[n]).unwrap();
        let mut p = Program::new();
        let op = NoiseOp::record(&ctx, &mut p, &out).unwrap();
        op.set(&ctx, 7, 1);
        ctx.run(&p).unwrap();
        assert_eq!(block_on(ctx.read(&out)).unwrap(), b);
        op.set(&ctx, 7, 0);
        ctx.run(&p).unwrap();
        assert_eq!(block_on(ctx.read(&out)).unwrap(), a);
    }
}
