//! How well the lab model fits: the sliced-Wasserstein distance between samples and data
//! (the fit figure), and the per-timestep terms of the variational bound (Ho et al. 2020,
//! eq. 5) with the total negative log-likelihood bound.

use crate::diffusion::schedule::Schedule;
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Tensor};
use crate::rng::SplitMix64;

use super::data::Dataset;
use super::mlp::eval_eps;

/// Projections of the fit figure.
pub const SW_PROJECTIONS: usize = 64;
/// The seed of the fit figure's projections (fixed, so figures are comparable across runs).
pub const SW_SEED: u64 = 0x5357_3264;

/// The sliced 2-Wasserstein distance SW₂(a, b) = (E_θ W₂²(⟨a, θ⟩, ⟨b, θ⟩))^½ over
/// `projections` directions θ (stratified angles in [0, π), jittered by `seed`); each 1-D W₂ is
/// exact for equal-size sets (sort and match).
pub fn sliced_wasserstein(
    a: &[[f32; 2]],
    b: &[[f32; 2]],
    projections: usize,
    seed: u64,
) -> Result<f64> {
    if a.is_empty() || a.len() != b.len() {
        return Err(Error::shape(format!(
            "sliced Wasserstein: needs two non-empty sets of equal size, got {} and {}",
            a.len(),
            b.len()
        )));
    }
    if projections == 0 {
        return Err(Error::config(
            "sliced Wasserstein: needs at least one projection",
        ));
    }
    let mut rng = SplitMix64(seed);
    let mut total = 0.0;
    let (mut pa, mut pb) = (vec![0.0f64; a.len()], vec![0.0f64; b.len()]);
    for k in 0..projections {
        let th = std::f64::consts::PI * (k as f64 + rng.next_f64()) / projections as f64;
        let (c, s) = (th.cos(), th.sin());
        for (o, p) in pa.iter_mut().zip(a) {
            *o = c * p[0] as f64 + s * p[1] as f64;
        }
        for (o, p) in pb.iter_mut().zip(b) {
            *o = c * p[0] as f64 + s * p[1] as f64;
        }
        pa.sort_by(f64::total_cmp);
        pb.sort_by(f64::total_cmp);
        total += pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            / a.len() as f64;
    }
    Ok((total / projections as f64).sqrt())
}

/// Samples (and data points) compared by the fit figure, in the CLI and the page.
pub const FIT_SAMPLES: usize = 1000;
/// Pairs of data draws averaged in the fit figure's floor.
pub const FLOOR_PAIRS: usize = 16;

/// The fit figure's floor: the mean SW₂ between two independent draws of `n` data points
/// each (the same `n` as the samples it is compared with), over [`FLOOR_PAIRS`] pairs. One
/// pair alone is too noisy to be a threshold: for moons at n = 1000, single pairs range from
/// 0.039 to 0.106 (32 pairs; mean 0.061).
pub fn sw_floor(data: &Dataset, n: usize, seed: u64) -> Result<f64> {
    let mut sum = 0.0;
    for k in 0..FLOOR_PAIRS as u64 {
        let a = data.draw(n, seed ^ (0x464c_0000 + 2 * k));
        let b = data.draw(n, seed ^ (0x464c_0001 + 2 * k));
        sum += sliced_wasserstein(&a, &b, SW_PROJECTIONS, SW_SEED)?;
    }
    Ok(sum / FLOOR_PAIRS as f64)
}

/// The variational bound of the 2-D model, in bits per point.
#[derive(Clone, Debug, PartialEq)]
pub struct BoundTerms {
    /// terms[k] for timestep index k (paper t = k + 1): terms[0] = L_0, the decoder term,
    /// terms[k ≥ 1] = L_k = KL(q(x_k | x_{k+1}, x_0) ‖ p_θ(x_k | x_{k+1})) in paper indexing.
    pub terms: Vec<f64>,
    /// L_T = KL(q(x_T | x_0) ‖ N(0, I)).
    pub prior: f64,
    /// L_T + Σ terms: an upper bound on −log₂ p_θ(x_0) (a density: it can be negative).
    pub total: f64,
}

/// Estimate every L_t by Monte Carlo with `per_t` (x_0, ε) draws per timestep on the GPU.
/// Continuous data, so no discretised decoder: p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I) with
/// σ_t² = β̃_t for t ≥ 2 (eq. 12: L_{t−1} = β_t²/(2σ_t²α_t(1−ᾱ_t))·‖ε − ε_θ‖², which is
/// β_t/(2α_t(1−ᾱ_{t−1}))·‖ε − ε_θ‖²), and the Gaussian decoder L_0 = −log N(x_0; μ_θ(x_1, 1),
/// β_1 I) = ‖ε − ε_θ‖²/(2α_1) + ln(2πβ_1). A class-conditional model is scored with each
/// point's class (the bound on −log p(x_0 | y)).
pub async fn variational_bound(
    ctx: &GpuContext,
    params: &Tensor,
    data: &Dataset,
    schedule: &Schedule,
    per_t: usize,
    seed: u64,
) -> Result<BoundTerms> {
    if per_t == 0 {
        return Err(Error::config(
            "the bound needs at least one draw per timestep",
        ));
    }
    let nc = data.num_classes;
    let t_n = schedule.num_train_timesteps();
    let ac = &schedule.alphas_cumprod;
    let mut rng = SplitMix64(seed ^ 0x0076_6c62);
    let mut gauss = move || {
        let u1 = 1.0 - rng.next_f64();
        let u2 = rng.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    let mut pick = SplitMix64(seed ^ 0x7069_636b);
    let mut rows = Vec::with_capacity(t_n * per_t);
    let mut eps = Vec::with_capacity(t_n * per_t);
    let mut prior = 0.0;
    for (k, &ab) in ac.iter().enumerate() {
        for _ in 0..per_t {
            let i = pick.below(data.len() as u64) as usize;
            let x0 = data.points[i];
            let y = data.labels.as_ref().map_or(nc as u32, |l| l[i]);
            let e = [gauss(), gauss()];
            let (sa, s1) = (ab.sqrt(), (1.0 - ab).sqrt());
            rows.push([
                (sa * x0[0] as f64 + s1 * e[0]) as f32,
                (sa * x0[1] as f64 + s1 * e[1]) as f32,
                k as f32,
                y as f32,
            ]);
            eps.push(e);
            if k == t_n - 1 {
                let r2 = (x0[0] as f64).powi(2) + (x0[1] as f64).powi(2);
                prior += 0.5 * (2.0 * (1.0 - ab) + ab * r2 - 2.0 - 2.0 * (1.0 - ab).ln());
            }
        }
    }
    let mut pred = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(16_384) {
        pred.extend(eval_eps(ctx, params, nc, chunk).await?);
    }
    let ln2 = std::f64::consts::LN_2;
    let mut terms = vec![0.0; t_n];
    for (r, (e, p)) in eps.iter().zip(&pred).enumerate() {
        let k = r / per_t;
        let err = (e[0] - p[0] as f64).powi(2) + (e[1] - p[1] as f64).powi(2);
        let beta = schedule.betas[k];
        let alpha = schedule.alphas[k];
        terms[k] += if k == 0 {
            err / (2.0 * alpha) + (std::f64::consts::TAU * beta).ln()
        } else {
            beta / (2.0 * alpha * (1.0 - ac[k - 1])) * err
        };
    }
    for t in &mut terms {
        *t /= per_t as f64 * ln2;
    }
    let prior = prior / per_t as f64 / ln2;
    let total = prior + terms.iter().sum::<f64>();
    Ok(BoundTerms {
        terms,
        prior,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliced_wasserstein_of_shifted_sets() {
        let a: Vec<[f32; 2]> = (0..100).map(|i| [i as f32 * 0.01, 0.0]).collect();
        assert_eq!(sliced_wasserstein(&a, &a, 16, 1).unwrap(), 0.0);
        // A shift by (d, 0): every projection moves by d·cos θ, so SW² = d²·E[cos²θ] ≈ d²/2.
        let b: Vec<[f32; 2]> = a.iter().map(|p| [p[0] + 1.0, p[1]]).collect();
        let sw = sliced_wasserstein(&a, &b, 256, 1).unwrap();
        assert!((sw - 0.5f64.sqrt()).abs() < 0.01, "{sw}");
        assert!(sliced_wasserstein(&a, &b[..3], 4, 1).is_err());
        assert!(sliced_wasserstein(&[], &[], 4, 1).is_err());
    }

    #[test]
    fn floor_is_small_compared_with_a_shift() {
        let d =
            super::super::data::generate(super::super::data::Preset::Moons, 4000, 1, "").unwrap();
        let floor = sw_floor(&d, 1000, 3).unwrap();
        let shifted: Vec<[f32; 2]> = d.draw(1000, 5).iter().map(|p| [p[0] + 0.5, p[1]]).collect();
        let sw = sliced_wasserstein(&d.draw(1000, 6), &shifted, SW_PROJECTIONS, SW_SEED).unwrap();
        assert!(
            floor < 0.1 && sw > 3.0 * floor,
            "floor {floor}, shifted {sw}"
        );
        // The floor is a mean over pairs of draws: stable across seeds, where single pairs
        // of draws differ by up to ~2.7x.
        let other = sw_floor(&d, 1000, 11).unwrap();
        assert!(
            (other - floor).abs() < 0.15 * floor,
            "floors {floor}, {other}"
        );
        let singles: Vec<f64> = (0..8)
            .map(|k| {
                let (a, b) = (d.draw(1000, 100 + 2 * k), d.draw(1000, 101 + 2 * k));
                sliced_wasserstein(&a, &b, SW_PROJECTIONS, SW_SEED).unwrap()
            })
            .collect();
        let (lo, hi) = singles
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(
            lo < floor && floor < hi,
            "floor {floor} outside the single draws' range {lo}..{hi}"
        );
    }
}
