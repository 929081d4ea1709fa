//! The evaluator's digit classifier: an MLP 784 → 256 → 128 → 10 with SiLU activations,
//! run and trained entirely with kakusan's own kernels (matmul, SiLU and their backward,
//! column sums for the bias gradients, softmax cross-entropy, AdamW). Its penultimate
//! layer (the 128 SiLU outputs) is the feature space of the evaluator's FID.
//!
//! Inputs are images in model space, (N, 784) in [-1, 1] (`x / 127.5 − 1`), the same
//! scale the diffusion model samples in.

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Program, Tensor};
use crate::ops::cross_entropy::softmax_cross_entropy;
use crate::ops::elementwise::silu;
use crate::ops::elementwise_backward::silu_backward;
use crate::ops::matmul::{linear, linear_backward};
use crate::ops::optim::{AdamWConfig, AdamWOp};
use crate::rng::SplitMix64;

/// Layer widths of the shipped classifier: 28·28 pixels in, 10 digit classes out.
pub const DIGIT_DIMS: [usize; 4] = [784, 256, 128, 10];

/// Translate each (h × w) image of `images` by its own random offset (dx, dy) with |dx|, |dy| ≤
/// `max_shift`, filling the uncovered border with `fill` (the background, −1 in model space).
/// The classifier trains on shifted digits because an MLP has no translation invariance of its
/// own: without it, a sample drawn a pixel off-centre is misread more often than a real digit.
pub fn random_shift(
    images: &mut [f32],
    h: usize,
    w: usize,
    max_shift: usize,
    fill: f32,
    rng: &mut SplitMix64,
) {
    let span = 2 * max_shift as u64 + 1;
    let mut src = vec![0.0f32; h * w];
    for img in images.chunks_exact_mut(h * w) {
        let dy = rng.below(span) as isize - max_shift as isize;
        let dx = rng.below(span) as isize - max_shift as isize;
        shift_image(img, &mut src, h, w, dy, dx, fill);
    }
}

/// out[y][x] = in[y − dy][x − dx], or `fill` where that falls outside the image.
fn shift_image(
    img: &mut [f32],
    scratch: &mut [f32],
    h: usize,
    w: usize,
    dy: isize,
    dx: isize,
    fill: f32,
) {
    scratch.copy_from_slice(img);
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = (y as isize - dy, x as isize - dx);
            img[y * w + x] = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx) {
                scratch[sy as usize * w + sx as usize]
            } else {
                fill
            };
        }
    }
}

/// An MLP's weights: per layer `fc{i}.weight` (out, in) and `fc{i}.bias` (out), PyTorch
/// `nn.Linear` layout, f32.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpWeights {
    /// Layer widths, input first.
    pub dims: Vec<usize>,
    /// Per layer (weight (out, in) row-major, bias (out)).
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl MlpWeights {
    /// PyTorch's `nn.Linear` initialisation: weight and bias uniform in ±1/√fan_in.
    pub fn random(dims: &[usize], seed: u64) -> Result<MlpWeights> {
        check_dims(dims)?;
        let mut rng = SplitMix64(seed);
        let layers = dims
            .windows(2)
            .map(|w| {
                let bound = 1.0 / (w[0] as f64).sqrt();
                let mut u = |n: usize| -> Vec<f32> {
                    (0..n)
                        .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                        .collect()
                };
                (u(w[1] * w[0]), u(w[1]))
            })
            .collect();
        Ok(MlpWeights {
            dims: dims.to_vec(),
            layers,
        })
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.layers.iter().map(|(w, b)| w.len() + b.len()).sum()
    }

    /// safetensors bytes: F32 `fc{i}.weight` and `fc{i}.bias`, i from 1, with the widths in
    /// the metadata (`dims`, comma-separated).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let (fan_in, fan_out) = (self.dims[i], self.dims[i + 1]);
            let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            owned.push((
                format!("fc{}.weight", i + 1),
                vec![fan_out, fan_in],
                bytes(w),
            ));
            owned.push((format!("fc{}.bias", i + 1), vec![fan_out], bytes(b)));
        }
        let views = owned
            .iter()
            .map(|(name, shape, b)| {
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (name.as_str(), v))
                    .map_err(|e| Error::weights(format!("tensor {name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut meta = std::collections::HashMap::new();
        let dims: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        meta.insert("dims".to_string(), dims.join(","));
        safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| Error::weights(format!("could not serialize the classifier: {e}")))
    }

    /// Parse what [`to_safetensors`](Self::to_safetensors) wrote; `what` names the source
    /// in errors. The widths must equal `dims`.
    pub fn from_safetensors(bytes: &[u8], dims: &[usize], what: &str) -> Result<MlpWeights> {
        check_dims(dims)?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            Error::file(
                what,
                format!("not a valid safetensors file ({} bytes): {e}", bytes.len()),
            )
        })?;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| Error::file(what, format!("tensor {name} is missing")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(Error::file(
                    what,
                    format!(
                        "tensor {name}: expected F32 {shape:?}, got {:?} {:?}",
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
            let v: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::file(what, format!("tensor {name} has NaN or Inf")));
            }
            Ok(v)
        };
        let mut layers = Vec::new();
        for i in 0..dims.len() - 1 {
            let (fan_in, fan_out) = (dims[i], dims[i + 1]);
            layers.push((
                get(&format!("fc{}.weight", i + 1), &[fan_out, fan_in])?,
                get(&format!("fc{}.bias", i + 1), &[fan_out])?,
            ));
        }
        if st.len() != 2 * layers.len() {
            return Err(Error::file(
                what,
                format!(
                    "expected {} tensors (fc1…fc{}), found {}",
                    2 * layers.len(),
                    layers.len(),
                    st.len()
                ),
            ));
        }
        Ok(MlpWeights {
            dims: dims.to_vec(),
            layers,
        })
    }
}

fn check_dims(dims: &[usize]) -> Result<()> {
    if dims.len() < 2 || dims.contains(&0) {
        return Err(Error::config(format!(
            "an MLP needs at least two nonzero widths, got {dims:?}"
        )));
    }
    Ok(())
}

/// An MLP on the GPU at a fixed batch: linear layers with SiLU between them (none after
/// the last). Holds its activations so a trainer can run the backward pass over them.
pub struct Mlp {
    pub dims: Vec<usize>,
    pub batch: usize,
    /// x: (batch, dims[0])
    pub input: Tensor,
    /// Per layer: (weight (out, in), bias (out)).
    pub params: Vec<(Tensor, Tensor)>,
    /// Per hidden layer: the linear output before SiLU, (batch, out).
    pre: Vec<Tensor>,
    /// Per hidden layer: SiLU(pre), (batch, out). The last is the feature layer.
    post: Vec<Tensor>,
    /// (batch, classes)
    pub logits: Tensor,
    forward: Program,
}

impl Mlp {
    pub fn new(ctx: &GpuContext, weights: &MlpWeights, batch: usize) -> Result<Mlp> {
        check_dims(&weights.dims)?;
        if batch == 0 {
            return Err(Error::shape("classifier: the batch must be at least 1"));
        }
        let dims = weights.dims.clone();
        let input = ctx.zeros(&[batch, dims[0]])?;
        let mut params = Vec::new();
        for (i, (w, b)) in weights.layers.iter().enumerate() {
            params.push((
                ctx.upload(w, &[dims[i + 1], dims[i]])?,
                ctx.upload(b, &[dims[i + 1]])?,
            ));
        }
        let layers = dims.len() - 1;
        let mut pre = Vec::new();
        let mut post = Vec::new();
        for &d in &dims[1..layers] {
            pre.push(ctx.zeros(&[batch, d])?);
            post.push(ctx.zeros(&[batch, d])?);
        }
        let logits = ctx.zeros(&[batch, dims[layers]])?;
        let mut forward = Program::new();
        for (l, (w, b)) in params.iter().enumerate() {
            let x = if l == 0 { &input } else { &post[l - 1] };
            if l + 1 == layers {
                linear(ctx, &mut forward, x, w, Some(b), &logits)?;
            } else {
                linear(ctx, &mut forward, x, w, Some(b), &pre[l])?;
                silu(ctx, &mut forward, &pre[l], &post[l])?;
            }
        }
        Ok(Mlp {
            dims,
            batch,
            input,
            params,
            pre,
            post,
            logits,
            forward,
        })
    }

    /// The penultimate activations (batch, dims[L−1]) — the input itself for a one-layer MLP.
    pub fn features(&self) -> &Tensor {
        self.post.last().unwrap_or(&self.input)
    }

    pub fn feature_dim(&self) -> usize {
        self.dims[self.dims.len() - 2]
    }

    pub fn classes(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }

    pub fn forward_program(&self) -> &Program {
        &self.forward
    }

    /// The current weights, read back from the GPU.
    pub async fn weights(&self, ctx: &GpuContext) -> Result<MlpWeights> {
        let mut layers = Vec::new();
        for (w, b) in &self.params {
            layers.push((ctx.read(w).await?, ctx.read(b).await?));
        }
        Ok(MlpWeights {
            dims: self.dims.clone(),
            layers,
        })
    }

    /// Logits (n, classes) and features (n, feature_dim) of `images` (n, dims[0]), in
    /// batches (the last one zero-padded).
    pub async fn classify(&self, ctx: &GpuContext, images: &[f32]) -> Result<Outputs> {
        let d_in = self.dims[0];
        if !images.len().is_multiple_of(d_in) {
            return Err(Error::shape(format!(
                "classifier: {} values are not images of {d_in}",
                images.len()
            )));
        }
        let n = images.len() / d_in;
        let mut logits = Vec::with_capacity(n * self.classes());
        let mut features = Vec::with_capacity(n * self.feature_dim());
        let mut chunk = vec![0.0f32; self.batch * d_in];
        for start in (0..n).step_by(self.batch) {
            let rows = (n - start).min(self.batch);
            chunk.fill(0.0);
            chunk[..rows * d_in].copy_from_slice(&images[start * d_in..(start + rows) * d_in]);
            ctx.write(&self.input, &chunk)?;
            ctx.run(&self.forward)?;
            let l = ctx.read(&self.logits).await?;
            let f = ctx.read(self.features()).await?;
            logits.extend_from_slice(&l[..rows * self.classes()]);
            features.extend_from_slice(&f[..rows * self.feature_dim()]);
        }
        Ok(Outputs {
            classes: self.classes(),
            feature_dim: self.feature_dim(),
            logits,
            features,
        })
    }
}

/// What [`Mlp::classify`] returns.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub classes: usize,
    pub feature_dim: usize,
    /// (n, classes)
    pub logits: Vec<f32>,
    /// (n, feature_dim)
    pub features: Vec<f32>,
}

impl Outputs {
    /// The arg-max class of each row (the first on ties).
    pub fn predictions(&self) -> Vec<u32> {
        self.logits
            .chunks_exact(self.classes)
            .map(|row| {
                let mut best = 0;
                for (c, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = c;
                    }
                }
                best as u32
            })
            .collect()
    }
}

/// Trains an [`Mlp`] on the GPU: forward, softmax cross-entropy (mean over the batch),
/// backward, AdamW — one recorded program per step.
pub struct MlpTrainer {
    pub net: Mlp,
    labels: Tensor,
    /// Per-row cross-entropy of the last step, (batch).
    loss: Tensor,
    /// Per layer: (dweight, dbias).
    pub grads: Vec<(Tensor, Tensor)>,
    _moments: Vec<Tensor>,
    adamw: AdamWOp,
    /// Forward + loss + backward (no update): for gradient tests.
    gradient_program: Program,
    step_program: Program,
    steps_done: u64,
}

impl MlpTrainer {
    /// AdamW with `cfg`; weight decay applies to the weight matrices, not the biases.
    pub fn new(
        ctx: &GpuContext,
        weights: &MlpWeights,
        batch: usize,
        cfg: AdamWConfig,
    ) -> Result<MlpTrainer> {
        let net = Mlp::new(ctx, weights, batch)?;
        let layers = net.params.len();
        let classes = net.classes();
        let labels = ctx.zeros(&[batch])?;
        let loss = ctx.zeros(&[batch])?;
        let dlogits = ctx.zeros(&[batch, classes])?;
        let mut p = net.forward.clone();
        softmax_cross_entropy(
            ctx,
            &mut p,
            &net.logits,
            &labels,
            &loss,
            &dlogits,
            1.0 / batch as f32,
        )?;
        let mut grads = Vec::new();
        for (w, b) in &net.params {
            grads.push((ctx.zeros(&w.shape)?, ctx.zeros(&b.shape)?));
        }
        // Gradients w.r.t. the hidden activations (post) and pre-activations (pre).
        let mut d_post = Vec::new();
        let mut d_pre = Vec::new();
        for t in &net.pre {
            d_post.push(ctx.zeros(&t.shape)?);
            d_pre.push(ctx.zeros(&t.shape)?);
        }
        for l in (0..layers).rev() {
            // dout: gradient w.r.t. this layer's linear output, (batch, fan_out).
            let dout = if l + 1 == layers {
                &dlogits
            } else {
                silu_backward(ctx, &mut p, &net.pre[l], &d_post[l], &d_pre[l], false)?;
                &d_pre[l]
            };
            let x = if l == 0 { &net.input } else { &net.post[l - 1] };
            let (dw, db) = &grads[l];
            // dW = doutᵀ·x, db = Σ_rows dout, and (below the first layer) dx = dout·W.
            let dx = l.checked_sub(1).map(|k| &d_post[k]);
            linear_backward(ctx, &mut p, x, &net.params[l].0, dout, dw, Some(db), dx)?;
        }
        let gradient_program = p.clone();
        let mut moments = Vec::new();
        for (w, b) in &net.params {
            for t in [w, b] {
                moments.push(ctx.zeros(&t.shape)?);
                moments.push(ctx.zeros(&t.shape)?);
            }
        }
        let params: Vec<&Tensor> = net.params.iter().flat_map(|(w, b)| [w, b]).collect();
        let grad_refs: Vec<&Tensor> = grads.iter().flat_map(|(w, b)| [w, b]).collect();
        let m: Vec<&Tensor> = moments.iter().step_by(2).collect();
        let v: Vec<&Tensor> = moments.iter().skip(1).step_by(2).collect();
        let decay: Vec<bool> = (0..params.len()).map(|i| i % 2 == 0).collect();
        let adamw = AdamWOp::record(ctx, &mut p, &params, &grad_refs, &m, &v, None, &decay, cfg)?;
        Ok(MlpTrainer {
            net,
            labels,
            loss,
            grads,
            _moments: moments,
            adamw,
            gradient_program,
            step_program: p,
            steps_done: 0,
        })
    }

    fn set_batch(&self, ctx: &GpuContext, images: &[f32], labels: &[u32]) -> Result<()> {
        let (b, classes) = (self.net.batch, self.net.classes());
        if images.len() != b * self.net.dims[0] || labels.len() != b {
            return Err(Error::shape(format!(
                "classifier training: expected {b} images of {} and {b} labels, got {} values and {} labels",
                self.net.dims[0],
                images.len(),
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&y| y as usize >= classes) {
            return Err(Error::shape(format!(
                "classifier training: label {bad} is out of range for {classes} classes"
            )));
        }
        ctx.write(&self.net.input, images)?;
        ctx.write_u32(&self.labels, labels)
    }

    /// Compute the gradients of the mean loss at the current weights, without updating.
    pub fn compute_gradients(
        &self,
        ctx: &GpuContext,
        images: &[f32],
        labels: &[u32],
    ) -> Result<()> {
        self.set_batch(ctx, images, labels)?;
        ctx.run(&self.gradient_program)
    }

    /// One AdamW step at learning rate `lr` on this batch (submitted, not waited for).
    pub fn step(
        &mut self,
        ctx: &GpuContext,
        images: &[f32],
        labels: &[u32],
        lr: f32,
    ) -> Result<()> {
        self.set_batch(ctx, images, labels)?;
        self.steps_done += 1;
        self.adamw.set_step(ctx, self.steps_done, lr)?;
        ctx.run(&self.step_program)
    }

    /// The mean cross-entropy of the last step's batch (before its update).
    pub async fn last_loss(&self, ctx: &GpuContext) -> Result<f64> {
        let l = ctx.read(&self.loss).await?;
        Ok(l.iter().map(|&v| v as f64).sum::<f64>() / l.len() as f64)
    }

    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};
    use crate::ops::elementwise_backward::grad_check::finite_diff;

    fn silu64(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    /// f64 forward of the MLP: (logits, features) of one image.
    fn reference_forward(
        w: &[(Vec<f64>, Vec<f64>)],
        dims: &[usize],
        x: &[f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut h = x.to_vec();
        let mut features = x.to_vec();
        let layers = dims.len() - 1;
        for (l, (wt, b)) in w.iter().enumerate() {
            let (fi, fo) = (dims[l], dims[l + 1]);
            let mut out: Vec<f64> = (0..fo)
                .map(|o| b[o] + (0..fi).map(|i| wt[o * fi + i] * h[i]).sum::<f64>())
                .collect();
            if l + 1 < layers {
                out.iter_mut().for_each(|v| *v = silu64(*v));
                features = out.clone();
            }
            h = out;
        }
        (h, features)
    }

    fn to64(w: &MlpWeights) -> Vec<(Vec<f64>, Vec<f64>)> {
        w.layers
            .iter()
            .map(|(a, b)| {
                (
                    a.iter().map(|&v| v as f64).collect(),
                    b.iter().map(|&v| v as f64).collect(),
                )
            })
            .collect()
    }

    fn mean_loss(w: &[(Vec<f64>, Vec<f64>)], dims: &[usize], xs: &[f32], ys: &[u32]) -> f64 {
        let d = dims[0];
        let n = ys.len();
        (0..n)
            .map(|r| {
                let x: Vec<f64> = xs[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
                let (z, _) = reference_forward(w, dims, &x);
                let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
                s.ln() + m - z[ys[r] as usize]
            })
            .sum::<f64>()
            / n as f64
    }

    const DIMS: [usize; 4] = [12, 9, 7, 5];

    #[test]
    fn mlp_forward_matches_reference() {
        let ctx = ctx();
        let w = MlpWeights::random(&DIMS, 1).unwrap();
        let n = 11;
        let xs = random(n * DIMS[0], 2);
        // Batch 4: three chunks, the last one padded.
        let net = Mlp::new(&ctx, &w, 4).unwrap();
        let out = block_on(net.classify(&ctx, &xs)).unwrap();
        let w64 = to64(&w);
        let (mut logits, mut feats) = (vec![], vec![]);
        for r in 0..n {
            let x: Vec<f64> = xs[r * 12..(r + 1) * 12].iter().map(|&v| v as f64).collect();
            let (l, f) = reference_forward(&w64, &DIMS, &x);
            logits.extend(l);
            feats.extend(f);
        }
        assert_close(&out.logits, &logits, 1e-5, 1e-4, "mlp logits");
        assert_close(&out.features, &feats, 1e-5, 1e-4, "mlp features");
        assert_eq!(out.predictions().len(), n);
    }

    /// The GPU gradients of the mean cross-entropy against central differences of the f64
    /// reference loss, for every weight and bias of a small MLP.
    #[test]
    fn mlp_gradients_match_finite_differences() {
        let ctx = ctx();
        let w = MlpWeights::random(&DIMS, 3).unwrap();
        let batch = 6;
        let xs = random(batch * DIMS[0], 4);
        let ys: Vec<u32> = (0..batch as u32).map(|i| (i * 3) % 5).collect();
        let trainer = MlpTrainer::new(&ctx, &w, batch, AdamWConfig::default()).unwrap();
        trainer.compute_gradients(&ctx, &xs, &ys).unwrap();
        let w64 = to64(&w);
        for (l, (dw, db)) in trainer.grads.iter().enumerate() {
            for (which, t) in [(0, dw), (1, db)] {
                let got = block_on(ctx.read(t)).unwrap();
                let base = if which == 0 { &w64[l].0 } else { &w64[l].1 };
                let loss = |p: &[f64]| {
                    let mut ww = w64.clone();
                    if which == 0 {
                        ww[l].0 = p.to_vec();
                    } else {
                        ww[l].1 = p.to_vec();
                    }
                    mean_loss(&ww, &DIMS, &xs, &ys)
                };
                let fd = finite_diff(&loss, base, 1e-5);
                assert_close(&got, &fd, 2e-6, 1e-3, &format!("layer {l} grad {which}"));
            }
        }
    }

    /// A few hundred AdamW steps fit a small separable problem: the loss falls.
    #[test]
    fn mlp_training_reduces_the_loss() {
        let ctx = ctx();
        let w = MlpWeights::random(&DIMS, 5).unwrap();
        let batch = 16;
        let xs = random(batch * DIMS[0], 6);
        // Labels from the sign pattern of the first inputs: learnable.
        let ys: Vec<u32> = (0..batch)
            .map(|r| ((xs[r * 12] > 0.0) as u32) + 2 * ((xs[r * 12 + 1] > 0.0) as u32))
            .collect();
        let mut t = MlpTrainer::new(&ctx, &w, batch, AdamWConfig::default()).unwrap();
        t.step(&ctx, &xs, &ys, 1e-2).unwrap();
        let first = block_on(t.last_loss(&ctx)).unwrap();
        for _ in 0..200 {
            t.step(&ctx, &xs, &ys, 1e-2).unwrap();
        }
        let last = block_on(t.last_loss(&ctx)).unwrap();
        assert!(last < 0.1 * first, "loss {first} → {last}");
        let back = block_on(t.net.weights(&ctx)).unwrap();
        assert_ne!(back, w, "the weights changed");
    }

    /// A shift moves every pixel by (dy, dx) and fills the border; random shifts stay within
    /// the bound, vary, and keep every image's pixel values.
    #[test]
    fn random_shift_translates_and_fills() {
        let (h, w) = (4, 5);
        let img: Vec<f32> = (0..h * w).map(|i| i as f32).collect();
        let mut moved = img.clone();
        let mut scratch = vec![0.0; h * w];
        shift_image(&mut moved, &mut scratch, h, w, 1, -2, -1.0);
        for y in 0..h {
            for x in 0..w {
                let want = if y >= 1 && x + 2 < w {
                    img[(y - 1) * w + x + 2]
                } else {
                    -1.0
                };
                assert_eq!(moved[y * w + x], want, "({y}, {x})");
            }
        }
        // One bright pixel per image in the middle of a 9×9: where it lands gives the offset.
        let n = 200;
        let mut batch = vec![-1.0f32; n * 81];
        for i in 0..n {
            batch[i * 81 + 40] = 1.0;
        }
        random_shift(&mut batch, 9, 9, 2, -1.0, &mut SplitMix64(7));
        let mut offsets = std::collections::HashSet::new();
        for i in 0..n {
            let img = &batch[i * 81..(i + 1) * 81];
            let at: Vec<usize> = (0..81).filter(|&j| img[j] == 1.0).collect();
            assert_eq!(at.len(), 1, "image {i} keeps its one bright pixel");
            let (dy, dx) = (at[0] as isize / 9 - 4, at[0] as isize % 9 - 4);
            assert!(dy.abs() <= 2 && dx.abs() <= 2, "offset ({dy}, {dx})");
            offsets.insert((dy, dx));
        }
        assert_eq!(offsets.len(), 25, "all 25 offsets occur in 200 draws");
    }

    #[test]
    fn weights_round_trip_and_bad_files_are_errors() {
        let w = MlpWeights::random(&DIMS, 9).unwrap();
        let bytes = w.to_safetensors().unwrap();
        assert_eq!(MlpWeights::from_safetensors(&bytes, &DIMS, "t").unwrap(), w);
        assert!(MlpWeights::from_safetensors(&bytes, &[12, 9, 7, 4], "t").is_err());
        assert!(MlpWeights::from_safetensors(&bytes[..100], &DIMS, "t").is_err());
        assert!(MlpWeights::from_safetensors(&bytes, &[12, 9, 7], "t").is_err());
    }
}
