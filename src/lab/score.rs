//! The exact score of the noised data. For data points x_1..x_N, the forward process (eq. 4)
//! gives q(x_t) = (1/N) Σ_i N(x_t; √ᾱ_t x_i, (1−ᾱ_t) I), so
//!   ∇log q(x) = Σ_i w_i (√ᾱ x_i − x)/(1−ᾱ),  w = softmax_i(−‖x − √ᾱ x_i‖²/2(1−ᾱ)),
//! and the ε the network should learn (ε-prediction is denoising score matching,
//! ε_θ ≈ −√(1−ᾱ)∇log q) is ε* = (x − √ᾱ Σ_i w_i x_i)/√(1−ᾱ). Σ_i w_i x_i is Tweedie's
//! E[x_0 | x_t = x]: a weighted mean of data points. GPU kernel: `shaders/lab_score.wgsl`.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::LAB_SCORE;

/// Mirrors `Uniforms` in lab_score.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ScoreUniforms {
    n_data: u32,
    n_query: u32,
    _pad: [u32; 2],
    sqrt_ab: f32,
    one_minus_ab: f32,
    _pad1: [f32; 2],
}

/// Exact ε*, log q at one point, in f64 (`ab` = ᾱ_t).
pub fn exact_ref(data: &[[f64; 2]], x: [f64; 2], ab: f64) -> ([f64; 2], f64) {
    let s2 = 1.0 - ab;
    let sa = ab.sqrt();
    let logits: Vec<f64> = data
        .iter()
        .map(|d| {
            let (dx, dy) = (x[0] - sa * d[0], x[1] - sa * d[1]);
            -(dx * dx + dy * dy) / (2.0 * s2)
        })
        .collect();
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sw = 0.0;
    let mut mean = [0.0; 2];
    for (l, d) in logits.iter().zip(data) {
        let w = (l - m).exp();
        sw += w;
        mean[0] += w * d[0];
        mean[1] += w * d[1];
    }
    let eps = [
        (x[0] - sa * mean[0] / sw) / s2.sqrt(),
        (x[1] - sa * mean[1] / sw) / s2.sqrt(),
    ];
    let log_q = m + sw.ln() - (data.len() as f64).ln() - (std::f64::consts::TAU * s2).ln();
    (eps, log_q)
}

/// The data on the GPU, ready to answer exact-score queries. Cloning shares the buffer.
#[derive(Clone)]
pub struct ExactScore {
    data: Tensor,
    n: usize,
}

impl ExactScore {
    pub fn new(ctx: &GpuContext, points: &[[f32; 2]]) -> Result<ExactScore> {
        if points.is_empty() {
            return Err(Error::config(
                "the exact score needs at least one data point",
            ));
        }
        let flat: Vec<f32> = points.iter().flatten().copied().collect();
        Ok(ExactScore {
            data: ctx.upload(&flat, &[points.len(), 2])?,
            n: points.len(),
        })
    }

    /// Record the evaluation at `queries` ((Q, 2)) into `out` ((Q, 3) = ε*, log q) for
    /// ᾱ = `ab` (for the page, which keeps its query grid on the GPU).
    pub fn record(
        &self,
        ctx: &GpuContext,
        program: &mut Program,
        queries: &Tensor,
        out: &Tensor,
        ab: f64,
    ) -> Result<()> {
        let q = queries.numel() / 2;
        if queries.shape != [q, 2] || out.shape != [q, 3] {
            return Err(Error::shape(format!(
                "exact score: queries {:?} must be (Q, 2) and out {:?} (Q, 3)",
                queries.shape, out.shape
            )));
        }
        if !(ab > 0.0 && ab < 1.0) {
            return Err(Error::config(format!(
                "exact score: ᾱ must lie in (0, 1), got {ab}"
            )));
        }
        let uni = ScoreUniforms {
            n_data: self.n as u32,
            n_query: q as u32,
            sqrt_ab: ab.sqrt() as f32,
            one_minus_ab: (1.0 - ab) as f32,
            ..Default::default()
        };
        ctx.record(
            program,
            DispatchDesc {
                label: "lab exact_score",
                shader: &LAB_SCORE,
                entry: "exact_score",
                constants: &[],
                params: Params::Static(bytemuck::bytes_of(&uni)),
                inputs: &[&self.data.buffer, &queries.buffer],
                outputs: &[&out.buffer],
                workgroups: grid_1d(q.div_ceil(256) as u64)?,
            },
        )
    }

    /// Number of data points.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: an `ExactScore` holds at least one point.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// A uniform buffer for [`ExactScore::record_with_uniforms`].
    pub fn uniform_buffer(ctx: &GpuContext) -> wgpu::Buffer {
        ctx.uniform_buffer(std::mem::size_of::<ScoreUniforms>())
    }

    /// Write the uniforms for `n_query` queries at ᾱ = `ab` into `buf` (from
    /// [`ExactScore::uniform_buffer`]): per-frame changes of t without re-recording.
    pub fn write_uniforms(
        &self,
        ctx: &GpuContext,
        buf: &wgpu::Buffer,
        n_query: usize,
        ab: f64,
    ) -> Result<()> {
        if !(ab > 0.0 && ab < 1.0) {
            return Err(Error::config(format!(
                "exact score: ᾱ must lie in (0, 1), got {ab}"
            )));
        }
        let uni = ScoreUniforms {
            n_data: self.n as u32,
            n_query: n_query as u32,
            sqrt_ab: ab.sqrt() as f32,
            one_minus_ab: (1.0 - ab) as f32,
            ..Default::default()
        };
        ctx.queue.write_buffer(buf, 0, bytemuck::bytes_of(&uni));
        Ok(())
    }

    /// [`ExactScore::record`] with its uniforms read from `uniforms` (written by
    /// [`ExactScore::write_uniforms`] for the same number of queries), so recording creates no
    /// buffer and ᾱ can change between runs.
    pub fn record_with_uniforms(
        &self,
        ctx: &GpuContext,
        program: &mut Program,
        queries: &Tensor,
        out: &Tensor,
        uniforms: &wgpu::Buffer,
    ) -> Result<()> {
        let q = queries.numel() / 2;
        if queries.shape != [q, 2] || out.shape != [q, 3] {
            return Err(Error::shape(format!(
                "exact score: queries {:?} must be (Q, 2) and out {:?} (Q, 3)",
                queries.shape, out.shape
            )));
        }
        ctx.record(
            program,
            DispatchDesc {
                label: "lab exact_score",
                shader: &LAB_SCORE,
                entry: "exact_score",
                constants: &[],
                params: Params::Buffer(uniforms),
                inputs: &[&self.data.buffer, &queries.buffer],
                outputs: &[&out.buffer],
                workgroups: grid_1d(q.div_ceil(256) as u64)?,
            },
        )
    }

    /// (ε*, log q) at each query point.
    pub async fn eval(
        &self,
        ctx: &GpuContext,
        queries: &[[f32; 2]],
        ab: f64,
    ) -> Result<Vec<([f32; 2], f32)>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let flat: Vec<f32> = queries.iter().flatten().copied().collect();
        let qt = ctx.upload(&flat, &[queries.len(), 2])?;
        let out = ctx.zeros(&[queries.len(), 3])?;
        let mut p = Program::new();
        self.record(ctx, &mut p, &qt, &out, ab)?;
        ctx.run(&p)?;
        let v = ctx.read(&out).await?;
        Ok(v.chunks(3).map(|c| ([c[0], c[1]], c[2])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};

    fn points(n: usize, seed: u64) -> Vec<[f64; 2]> {
        random(2 * n, seed)
            .chunks(2)
            .map(|c| [2.0 * c[0] as f64, 2.0 * c[1] as f64])
            .collect()
    }

    /// ε* = −√(1−ᾱ)∇log q against central differences of the f64 log q, at small and
    /// large noise.
    #[test]
    fn reference_score_is_the_gradient_of_log_q() {
        let data = points(40, 1);
        for ab in [0.99, 0.5, 0.02] {
            for x in [[0.3, -0.2], [1.7, 1.1], [-2.5, 0.4]] {
                let (eps, _) = exact_ref(&data, x, ab);
                let h = 1e-6;
                for d in 0..2 {
                    let (mut xp, mut xm) = (x, x);
                    xp[d] += h;
                    xm[d] -= h;
                    let g = (exact_ref(&data, xp, ab).1 - exact_ref(&data, xm, ab).1) / (2.0 * h);
                    let want = -(1.0 - ab).sqrt() * g;
                    assert!(
                        (eps[d] - want).abs() < 1e-6 * (1.0 + want.abs()),
                        "ab {ab}, x {x:?}, dim {d}: ε* {} vs finite difference {want}",
                        eps[d]
                    );
                }
            }
        }
        // One data point: q is N(√ᾱ a, (1−ᾱ)I) exactly.
        let (eps, lq) = exact_ref(&[[1.0, 0.0]], [0.0, 0.0], 0.64);
        assert!((eps[0] + 0.8 / 0.6).abs() < 1e-12 && eps[1].abs() < 1e-12);
        let want = -0.64 / (2.0 * 0.36) - (std::f64::consts::TAU * 0.36).ln();
        assert!((lq - want).abs() < 1e-12);
    }

    /// The GPU kernel against the f64 reference, with more data points than one chunk.
    #[test]
    fn gpu_score_matches_reference() {
        let ctx = ctx();
        let data = points(300, 2);
        let data32: Vec<[f32; 2]> = data.iter().map(|p| [p[0] as f32, p[1] as f32]).collect();
        let es = ExactScore::new(&ctx, &data32).unwrap();
        let queries: Vec<[f32; 2]> = random(2 * 37, 3)
            .chunks(2)
            .map(|c| [3.0 * c[0], 3.0 * c[1]])
            .collect();
        for ab in [0.95, 0.3] {
            let got = block_on(es.eval(&ctx, &queries, ab)).unwrap();
            let mut g = Vec::new();
            let mut w = Vec::new();
            for (q, (e, lq)) in queries.iter().zip(&got) {
                let (we, wl) = exact_ref(&data, [q[0] as f64, q[1] as f64], ab);
                g.extend([e[0], e[1], *lq]);
                w.extend([we[0], we[1], wl]);
            }
            assert_close(&g, &w, 1e-4, 1e-4, "exact score");
        }
        let q = ctx.zeros(&[3, 2]).unwrap();
        let o = ctx.zeros(&[3, 2]).unwrap();
        assert!(es.record(&ctx, &mut Program::new(), &q, &o, 0.5).is_err());
        let o = ctx.zeros(&[3, 3]).unwrap();
        assert!(es.record(&ctx, &mut Program::new(), &q, &o, 1.0).is_err());
    }
}
