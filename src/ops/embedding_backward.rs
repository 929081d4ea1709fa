//! Backward of [`crate::ops::embedding::add_class_embedding`]
//! (`shaders/embedding_backward.wgsl`). The timestep embedding has no parameters and its
//! input (the timestep) needs no gradient, so it has no backward.

use crate::error::{Error, Result};
use crate::gpu::{expect_shape, grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::EMBEDDING_BACKWARD;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct EmbeddingBackwardParams {
    numel: u32,
    dim: u32,
    classes: u32,
    batch: u32,
}

/// dtable[k, :] = Σ_{n: labels[n] = k} demb[n, :], overwriting dtable (a class absent from
/// the batch gets zeros). labels: (N) u32; demb: (N, D); dtable: (K, D). Deterministic: each
/// (k, d) sums the batch in order. A label ≥ K counts for row K − 1, as the forward clamps it.
pub fn add_class_embedding_backward(
    ctx: &GpuContext,
    program: &mut Program,
    labels: &Tensor,
    demb: &Tensor,
    dtable: &Tensor,
) -> Result<()> {
    let n = match labels.shape[..] {
        [n] => n,
        _ => {
            return Err(Error::shape(format!(
                "class_embedding_backward: labels: expected (N), got {:?}",
                labels.shape
            )))
        }
    };
    let (classes, dim) = match dtable.shape[..] {
        [k, d] if k > 0 => (k, d),
        _ => {
            return Err(Error::shape(format!(
                "class_embedding_backward: dtable: expected (num_classes > 0, dim), got {:?}",
                dtable.shape
            )))
        }
    };
    expect_shape(demb, &[n, dim], "class_embedding_backward: demb")?;
    let too_big = || Error::shape("class_embedding_backward: too large for one kernel");
    let numel = u32::try_from(dtable.numel()).map_err(|_| too_big())?;
    u32::try_from(demb.numel()).map_err(|_| too_big())?;
    if numel == 0 {
        return Ok(());
    }
    let params = EmbeddingBackwardParams {
        numel,
        dim: dim as u32,
        classes: classes as u32,
        batch: n as u32,
    };
    ctx.record(
        program,
        DispatchDesc {
            label: "class_embedding_backward",
            shader: &EMBEDDING_BACKWARD,
            entry: "class_embedding_backward",
            constants: &[],
            params: Params::Static(bytemuck::bytes_of(&params)),
            inputs: &[&labels.buffer, &demb.buffer],
            outputs: &[&dtable.buffer],
            workgroups: grid_1d((numel as u64).div_ceil(256))?,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};
    use crate::ops::elementwise_backward::grad_check::*;

    /// loss = Σ r ⊙ g(base + table[labels]) as a function of the table, vs finite differences
    /// (the op sits between the table and g; base stands for the timestep embedding).
    #[test]
    fn class_embedding_backward_matches_finite_differences() {
        let ctx = ctx();
        let (n, k, d) = (7, 5, 13);
        // Class 3 is absent (its gradient must be exactly zero); label 9 is out of range and
        // lands on class 4 as in the forward.
        let labels: Vec<u32> = vec![0, 2, 2, 4, 1, 0, 9];
        let table = to_f64(&random(k * d, 1));
        let base = to_f64(&random(n * d, 2));
        let r = to_f64(&random(n * d, 3));
        let forward = |t: &[f64]| -> Vec<f64> {
            (0..n * d)
                .map(|i| {
                    let l = (labels[i / d] as usize).min(k - 1);
                    base[i] + t[l * d + i % d]
                })
                .collect()
        };
        let y = forward(&table);
        let demb = upstream(&y, &r);
        let tl = ctx.upload_u32(&labels, &[n]).unwrap();
        let td = ctx.upload(&demb, &[n, d]).unwrap();
        let tt = ctx.upload(&vec![5.0; k * d], &[k, d]).unwrap();
        let mut p = Program::new();
        add_class_embedding_backward(&ctx, &mut p, &tl, &td, &tt).unwrap();
        ctx.run(&p).unwrap();
        let got = block_on(ctx.read(&tt)).unwrap();
        let fd = finite_diff(&|t: &[f64]| loss_of(&forward(t), &r), &table, 1e-6);
        assert_close(&got, &fd, 1e-5, 1e-4, "class_embedding_backward vs FD");
        let mut want = vec![0.0f64; k * d];
        for (i, &g) in demb.iter().enumerate() {
            want[(labels[i / d] as usize).min(k - 1) * d + i % d] += g as f64;
        }
        assert_close(
            &got,
            &want,
            1e-6,
            1e-6,
            "class_embedding_backward vs analytic",
        );
        assert!(got[3 * d..4 * d].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn class_embedding_backward_bad_shapes_are_errors() {
        let ctx = ctx();
        let l = ctx.zeros(&[4]).unwrap();
        let demb = ctx.zeros(&[4, 8]).unwrap();
        let t = ctx.zeros(&[3, 7]).unwrap();
        let t0 = ctx.zeros(&[0, 8]).unwrap();
        let mut p = Program::new();
        assert!(matches!(
            add_class_embedding_backward(&ctx, &mut p, &l, &demb, &t),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            add_class_embedding_backward(&ctx, &mut p, &l, &demb, &t0),
            Err(Error::Shape(_))
        ));
        assert!(matches!(
            add_class_embedding_backward(&ctx, &mut p, &demb, &demb, &t),
            Err(Error::Shape(_))
        ));
        assert!(p.is_empty());
    }
}
