//! Fréchet distance between two Gaussians fitted to feature sets (Heusel et al. 2017,
//! "GANs trained by a two time-scale update rule…", the FID's definition):
//! d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}).
//! All in f64 on the CPU. The matrix square roots come from a symmetric (cyclic Jacobi)
//! eigendecomposition; Σ₁^{1/2} Σ₂ Σ₁^{1/2} is symmetric PSD and its trace-root equals
//! tr((Σ₁Σ₂)^{1/2}), so no non-symmetric square root is needed.

use crate::error::{Error, Result};

/// Mean and unbiased covariance (divisor n − 1) of `n` feature rows of `dim` values.
#[derive(Clone, Debug)]
pub struct Gaussian {
    pub dim: usize,
    pub mean: Vec<f64>,
    /// Row-major (dim, dim).
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fit to `features` (n, dim) row-major; needs n ≥ 2.
    pub fn fit(features: &[f32], dim: usize) -> Result<Gaussian> {
        if dim == 0 || !features.len().is_multiple_of(dim) {
            return Err(Error::shape(format!(
                "fid: {} feature values are not rows of {dim}",
                features.len()
            )));
        }
        let n = features.len() / dim;
        if n < 2 {
            return Err(Error::shape(format!(
                "fid: a covariance needs at least 2 samples, got {n}"
            )));
        }
        let mut mean = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0f64; dim * dim];
        let mut centred = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for ((c, &v), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = v as f64 - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                for j in i..dim {
                    cov[i * dim + j] += ci * centred[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] / (n - 1) as f64;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Gaussian { dim, mean, cov })
    }
}

/// Eigenvalues and eigenvectors of the symmetric matrix `a` (n, n) by cyclic Jacobi
/// rotations (Golub & Van Loan, Matrix Computations, §8.5): returns (λ, V) with V's
/// columns the eigenvectors, A = V diag(λ) Vᵀ. Only the upper triangle's symmetry is
/// assumed; sweeps run until the off-diagonal mass is negligible.
pub fn symmetric_eigen(a: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if a.len() != n * n {
        return Err(Error::shape(format!(
            "symmetric_eigen: {} values are not a {n}x{n} matrix",
            a.len()
        )));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::Other(
            "symmetric_eigen: the matrix contains NaN or Inf".into(),
        ));
    }
    let mut m = a.to_vec();
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let frob: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * frob || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                // The rotation angle that zeroes m[p][q] (GVL Algorithm 8.5.1, sym.schur2).
                let tau = (aqq - app) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let t = if tau == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                // M ← Jᵀ M J on rows/columns p and q.
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let lambda = (0..n).map(|i| m[i * n + i]).collect();
    Ok((lambda, v))
}

/// The symmetric PSD square root V diag(√max(λ, 0)) Vᵀ of symmetric `a` (n, n). Negative
/// eigenvalues (round-off of a PSD matrix) are clamped to 0.
pub fn sqrtm_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let (lambda, v) = symmetric_eigen(a, n)?;
    let root: Vec<f64> = lambda.iter().map(|l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n).map(|k| v[i * n + k] * root[k] * v[j * n + k]).sum();
        }
    }
    Ok(out)
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                out[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    out
}

/// The Fréchet distance d² between N(μ₁, Σ₁) and N(μ₂, Σ₂) (module docs).
pub fn frechet_distance(g1: &Gaussian, g2: &Gaussian) -> Result<f64> {
    let n = g1.dim;
    if g2.dim != n {
        return Err(Error::shape(format!(
            "fid: feature dimensions differ ({n} vs {})",
            g2.dim
        )));
    }
    let mean_term: f64 = g1
        .mean
        .iter()
        .zip(&g2.mean)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let s1_root = sqrtm_psd(&g1.cov, n)?;
    let mut inner = matmul(&matmul(&s1_root, &g2.cov, n), &s1_root, n);
    // Symmetrise: the product is symmetric in exact arithmetic.
    for i in 0..n {
        for j in i + 1..n {
            let v = 0.5 * (inner[i * n + j] + inner[j * n + i]);
            inner[i * n + j] = v;
            inner[j * n + i] = v;
        }
    }
    let (lambda, _) = symmetric_eigen(&inner, n)?;
    let tr_root: f64 = lambda.iter().map(|l| l.max(0.0).sqrt()).sum();
    let tr1: f64 = (0..n).map(|i| g1.cov[i * n + i]).sum();
    let tr2: f64 = (0..n).map(|i| g2.cov[i * n + i]).sum();
    Ok((mean_term + tr1 + tr2 - 2.0 * tr_root).max(0.0))
}

/// FID between two feature sets (n₁, dim) and (n₂, dim).
pub fn fid(features1: &[f32], features2: &[f32], dim: usize) -> Result<f64> {
    frechet_distance(
        &Gaussian::fit(features1, dim)?,
        &Gaussian::fit(features2, dim)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64, what: &str) {
        assert!((a - b).abs() <= tol, "{what}: got {a}, want {b}");
    }

    #[test]
    fn eigen_of_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3, eigenvectors (1, −1)/√2 and (1, 1)/√2.
        let (mut l, v) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
        let order = if l[0] < l[1] { [0, 1] } else { [1, 0] };
        l.sort_by(f64::total_cmp);
        close(l[0], 1.0, 1e-14, "λ min");
        close(l[1], 3.0, 1e-14, "λ max");
        let big = order[1];
        close(v[big].abs(), 0.5f64.sqrt(), 1e-14, "eigenvector of 3");
        close(v[big], v[2 + big], 1e-14, "eigenvector of 3 is (1, 1)/√2");
        // A 3x3 with eigenvalues 1, 3, 4: eigenvectors (1, 2, 1), (1, 0, −1), (1, −1, 1).
        let a = [3.0, -1.0, 0.0, -1.0, 2.0, -1.0, 0.0, -1.0, 3.0];
        let (mut l, _) = symmetric_eigen(&a, 3).unwrap();
        l.sort_by(f64::total_cmp);
        for (got, want) in l.iter().zip([1.0, 3.0, 4.0]) {
            close(*got, want, 1e-12, "3x3 eigenvalue");
        }
    }

    /// sqrtm(A)² = A and A = V diag(λ) Vᵀ for a random SPD matrix.
    #[test]
    fn sqrtm_squares_back() {
        let n = 12;
        let mut rng = crate::rng::SplitMix64(3);
        let b: Vec<f64> = (0..n * n).map(|_| rng.next_f64() - 0.5).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>();
            }
        }
        let r = sqrtm_psd(&a, n).unwrap();
        let rr = matmul(&r, &r, n);
        for (x, y) in rr.iter().zip(&a) {
            close(*x, *y, 1e-12, "sqrtm² = A");
        }
    }

    /// Diagonal covariances: d² = ‖Δμ‖² + Σ (√a_i − √b_i)², and rotating both by the same
    /// orthogonal matrix leaves it unchanged.
    #[test]
    fn frechet_distance_of_known_gaussians() {
        let a = [4.0, 1.0, 0.25];
        let b = [1.0, 9.0, 0.25];
        let mut g1 = Gaussian {
            dim: 3,
            mean: vec![1.0, 0.0, 0.0],
            cov: vec![0.0; 9],
        };
        let mut g2 = Gaussian {
            dim: 3,
            mean: vec![0.0, 2.0, 0.0],
            cov: vec![0.0; 9],
        };
        for i in 0..3 {
            g1.cov[i * 4] = a[i];
            g2.cov[i * 4] = b[i];
        }
        let want = 1.0 + 4.0 + 1.0 + 4.0 + 0.0;
        close(frechet_distance(&g1, &g2).unwrap(), want, 1e-12, "diagonal");
        // Rotate both covariances by Q (a rotation about the z axis by 0.7 rad).
        let (c, s) = (0.7f64.cos(), 0.7f64.sin());
        let q = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let qt = [c, s, 0.0, -s, c, 0.0, 0.0, 0.0, 1.0];
        g1.cov = matmul(&matmul(&q, &g1.cov, 3), &qt, 3);
        g2.cov = matmul(&matmul(&q, &g2.cov, 3), &qt, 3);
        close(frechet_distance(&g1, &g2).unwrap(), want, 1e-12, "rotated");
        close(frechet_distance(&g1, &g1).unwrap(), 0.0, 1e-12, "self");
    }

    #[test]
    fn fid_of_samples_small_for_same_distribution_large_for_shifted() {
        let mut rng = crate::rng::SplitMix64(7);
        let mut normal = || {
            // Box–Muller.
            let (u, v) = (rng.next_f64().max(1e-300), rng.next_f64());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        };
        let dim = 4;
        let x: Vec<f32> = (0..2000 * dim).map(|_| normal()).collect();
        let y: Vec<f32> = (0..2000 * dim).map(|_| normal()).collect();
        let z: Vec<f32> = (0..2000 * dim).map(|_| 2.0 * normal() + 1.0).collect();
        let same = fid(&x, &y, dim).unwrap();
        // Exact d² for z: 4·1 + 4·(2 − 1)² = 8.
        let far = fid(&x, &z, dim).unwrap();
        assert!(same < 0.05, "same distribution: {same}");
        assert!((far - 8.0).abs() < 0.8, "shifted and scaled: {far}");
        assert!(fid(&x[..dim], &y, dim).is_err(), "one sample");
    }
}
