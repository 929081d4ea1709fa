// The exact noised data density of the diffusion lab (src/lab/score.rs): for data points
// x_1..x_N, q(x_t) = (1/N) Σ_i N(x_t; √ᾱ x_i, (1−ᾱ) I) (eq. 4 marginalised over the data).
// For each query point x: log q(x) and the exact ε* = −√(1−ᾱ) ∇log q(x) = (x − √ᾱ Σ_i w_i x_i)/√(1−ᾱ),
// w = softmax_i(−‖x − √ᾱ x_i‖² / 2(1−ᾱ)) (the posterior over data points; Σ_i w_i x_i is
// Tweedie's E[x_0 | x_t]). One thread per query; data points stream through workgroup memory
// in chunks of 256 with an online (running-max) log-sum-exp.

struct Uniforms {
    n_data: u32,
    n_query: u32,
    _pad0: u32,
    _pad1: u32,
    sqrt_ab: f32,
    one_minus_ab: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
// data: (n_data, 2)
@group(0) @binding(1) var<storage, read> data: array<f32>;
// query: (n_query, 2)
@group(0) @binding(2) var<storage, read> query: array<f32>;
// out: (n_query, 3) = (ε*_x, ε*_y, log q)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
var<workgroup> chunk: array<vec2<f32>, 256>;

@compute @workgroup_size(256)
fn exact_score(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let q = (wg.x + wg.y * nwg.x) * WG + lid;
    var x = vec2<f32>(0.0, 0.0);
    if (q < u.n_query) {
        x = vec2<f32>(query[2u * q], query[2u * q + 1u]);
    }
    let inv_two_var = 0.5 / u.one_minus_ab;
    var run_max = -3.0e38;
    var sum_w = 0.0;
    var sum_wx = vec2<f32>(0.0, 0.0);
    for (var base = 0u; base < u.n_data; base += WG) {
        let i = base + lid;
        if (i < u.n_data) {
            chunk[lid] = u.sqrt_ab * vec2<f32>(data[2u * i], data[2u * i + 1u]);
        }
        workgroupBarrier();
        let n = min(WG, u.n_data - base);
        for (var k = 0u; k < n; k++) {
            let mu = chunk[k];
            let d = x - mu;
            let logit = -dot(d, d) * inv_two_var;
            if (logit > run_max) {
                // Rescale what was summed so far to the new maximum.
                let r = exp(run_max - logit);
                sum_w *= r;
                sum_wx *= r;
                run_max = logit;
            }
            let w = exp(logit - run_max);
            sum_w += w;
            sum_wx += w * mu;
        }
        workgroupBarrier();
    }
    if (q < u.n_query) {
        let mean_mu = sum_wx / sum_w; // √ᾱ E[x_0 | x_t = x]
        let eps = (x - mean_mu) / sqrt(u.one_minus_ab);
        // log q = logsumexp − ln N − ln(2π(1−ᾱ)) (d = 2).
        let log_q = run_max + log(sum_w) - log(f32(u.n_data))
            - log(6.283185307179586 * u.one_minus_ab);
        out[3u * q] = eps.x;
        out[3u * q + 1u] = eps.y;
        out[3u * q + 2u] = log_q;
    }
}
