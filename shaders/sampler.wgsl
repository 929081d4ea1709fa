// The sampler update (diffusion::StepCoefficients) and classifier-free guidance, elementwise.
// One thread per element; the grid may be 2-D (gpu::grid_1d).

struct StepParams {
    x0_from_xt: f32,
    x0_from_model: f32,
    eps_from_xt: f32,
    eps_from_model: f32,
    // 0: no clipping of x̂_0.
    clip: f32,
    prev_from_x0: f32,
    prev_from_xt: f32,
    prev_from_eps: f32,
    // σ_t; 0: deterministic step, noise is not read.
    noise_scale: f32,
    numel: u32,
    // guidance: out = uncond + scale · (cond − uncond)
    guidance_scale: f32,
    // weight of the previous step's x̂_0, read from x0 before it is overwritten; 0: not read
    prev_from_prev_x0: f32,
    // dynamic thresholding (Saharia et al. 2022): quantile ratio of |x̂_0|; 0: off
    threshold_ratio: f32,
    // its sample_max_value: s = min(max(quantile, 1), threshold_max)
    threshold_max: f32,
    // elements per sample (C·H·W), for the per-sample threshold
    per_sample: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: StepParams;
// model_out: sampler_step: (N, C, H, W) model output m; guidance: (2N, C, H, W), first N
// conditional, last N unconditional
@group(0) @binding(1) var<storage, read> model_out: array<f32>;
// noise: (N, C, H, W) z ~ N(0, I); unused by guidance
@group(0) @binding(2) var<storage, read> noise: array<f32>;
// x_t: (N, C, H, W) current sample, overwritten with x_prev; guidance: out (N, C, H, W)
@group(0) @binding(3) var<storage, read_write> x_t: array<f32>;
// x0: (N, C, H, W) x̂_0 of the previous step in (multistep solvers), this step's out; unused by
// guidance
@group(0) @binding(4) var<storage, read_write> x0: array<f32>;

// scales: (N) the per-sample dynamic threshold s, written by `threshold_scales`, read by
// `sampler_step` when threshold_ratio > 0
@group(0) @binding(5) var<storage, read_write> scales: array<f32>;

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// x̂_0 = clamp(a·x_t + b·m), ε̂ = c·x_t + d·m (unclipped, as diffusers),
// x_prev = e·x̂_0 + f·x_t + g·ε̂ + σ·z + k·x̂_0(previous step).
@compute @workgroup_size(256)
fn sampler_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    let xt = x_t[i];
    let m = model_out[i];
    var x0_hat = p.x0_from_xt * xt + p.x0_from_model * m;
    if (p.threshold_ratio > 0.0) {
        // Dynamic thresholding replaces clipping, as in diffusers.
        let s = scales[i / p.per_sample];
        x0_hat = clamp(x0_hat, -s, s) / s;
    } else if (p.clip > 0.0) {
        x0_hat = clamp(x0_hat, -p.clip, p.clip);
    }
    let eps = p.eps_from_xt * xt + p.eps_from_model * m;
    var prev = p.prev_from_x0 * x0_hat + p.prev_from_xt * xt + p.prev_from_eps * eps;
    if (p.noise_scale != 0.0) {
        prev = prev + p.noise_scale * noise[i];
    }
    if (p.prev_from_prev_x0 != 0.0) {
        prev = prev + p.prev_from_prev_x0 * x0[i];
    }
    x0[i] = x0_hat;
    x_t[i] = prev;
}

// out = uncond + scale · (cond − uncond) (Ho & Salimans 2022); numel = elements of out.
@compute @workgroup_size(256)
fn guidance(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    let cond = model_out[i];
    let uncond = model_out[p.numel + i];
    x_t[i] = uncond + p.guidance_scale * (cond - uncond);
}

var<workgroup> sums: array<vec4<f32>, 256>;

// Guidance rescale (Lin et al. 2024, §3.4; diffusers `rescale_noise_cfg`), in place on the
// guided output: out ← out · (φ · std(cond)/std(out) + 1 − φ), std over each sample.
// One workgroup per sample; numel = elements per sample (C·H·W); guidance_scale = φ.
// model_out: (2N, C, H, W) as for `guidance` (cond = first N); x_t: the guided out (N, C, H, W).
@compute @workgroup_size(256)
fn guidance_rescale(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let phi = p.guidance_scale;
    if (phi == 0.0) { return; }
    let len = p.numel;
    let base = wg.x * len;
    // (Σ cond, Σ cond², Σ out, Σ out²)
    var acc = vec4<f32>(0.0);
    for (var i = lid; i < len; i = i + 256u) {
        let c = model_out[base + i];
        let g = x_t[base + i];
        acc = acc + vec4<f32>(c, c * c, g, g * g);
    }
    sums[lid] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            sums[lid] = sums[lid] + sums[lid + s];
        }
        workgroupBarrier();
    }
    let t = sums[0];
    let m = f32(len);
    // torch.std's (len − 1) normalisation cancels in the ratio.
    let var_c = max(t.y - t.x * t.x / m, 0.0);
    let var_g = max(t.w - t.z * t.z / m, 0.0);
    let ratio = select(1.0, sqrt(var_c / var_g), var_g > 0.0);
    let f = phi * ratio + (1.0 - phi);
    for (var i = lid; i < len; i = i + 256u) {
        x_t[base + i] = x_t[base + i] * f;
    }
}

var<workgroup> below: array<atomic<u32>, 2>;

// Dynamic thresholding's s for each sample (diffusers `_threshold_sample`): the
// threshold_ratio quantile of |x̂_0| over the sample (torch.quantile, linear interpolation
// between the order statistics k and k + 1), then s = min(max(q, 1), threshold_max).
// One workgroup per sample. The order statistics are found exactly by bisection on the bit
// patterns of |x̂_0| (monotonic for non-negative floats), counting elements at or below.
@compute @workgroup_size(256)
fn threshold_scales(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    if (p.threshold_ratio <= 0.0) { return; }
    let len = p.per_sample;
    let base = wg.x * len;
    let q = p.threshold_ratio * f32(len - 1u);
    let k0 = min(u32(floor(q)), len - 1u);
    let k1 = min(k0 + 1u, len - 1u);
    let frac = q - f32(k0);
    var lo0 = 0u;
    var hi0 = 0x7f800000u;
    var lo1 = 0u;
    var hi1 = 0x7f800000u;
    for (var it = 0u; it < 32u; it = it + 1u) {
        let mid0 = lo0 + (hi0 - lo0) / 2u;
        let mid1 = lo1 + (hi1 - lo1) / 2u;
        if (lid == 0u) {
            atomicStore(&below[0], 0u);
            atomicStore(&below[1], 0u);
        }
        workgroupBarrier();
        var c0 = 0u;
        var c1 = 0u;
        for (var i = lid; i < len; i = i + 256u) {
            let j = base + i;
            let b = bitcast<u32>(abs(p.x0_from_xt * x_t[j] + p.x0_from_model * model_out[j]));
            c0 = c0 + select(0u, 1u, b <= mid0);
            c1 = c1 + select(0u, 1u, b <= mid1);
        }
        atomicAdd(&below[0], c0);
        atomicAdd(&below[1], c1);
        workgroupBarrier();
        let n0 = atomicLoad(&below[0]);
        let n1 = atomicLoad(&below[1]);
        workgroupBarrier();
        if (n0 >= k0 + 1u) { hi0 = mid0; } else { lo0 = mid0 + 1u; }
        if (n1 >= k1 + 1u) { hi1 = mid1; } else { lo1 = mid1 + 1u; }
    }
    if (lid == 0u) {
        let v0 = bitcast<f32>(lo0);
        let v1 = bitcast<f32>(lo1);
        scales[wg.x] = min(max(v0 + frac * (v1 - v0), 1.0), p.threshold_max);
    }
}
