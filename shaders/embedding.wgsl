// Timestep embedding (diffusers get_timestep_embedding) and class-embedding add.
//
// sin/cos: GPU builtins are only accurate on [-π, π] and differ between backends, while the
// arguments here reach thousands of radians. So we reduce ourselves: k = round(x·2/π),
// r = x − k·π/2 with π/2 split into three f32 constants (Cody & Waite 1980; the first two
// have few enough significant bits that k·P1 and k·P2 are exact for |k| < 4096, i.e.
// |x| < ~6400), then Taylor polynomials on |r| <= π/4 (truncation < 2e-9; shaders/lib/
// trig_poly.wgsl, appended) and the quadrant.

struct Params {
    // Output elements: N * dim.
    numel: u32,
    dim: u32,
    // timestep_embedding: dim / 2. add_class_embedding: num_classes.
    half_or_classes: u32,
    // timestep_embedding, 1: [cos, sin] instead of [sin, cos].
    flip: u32,
}

// Both entry points share one set of bindings (a browser may reject two variables on one
// slot), so the first input is u32 words: labels directly, timesteps via bitcast<f32>.
@group(0) @binding(0) var<uniform> p: Params;
// words: (N) — timestep_embedding: f32 timesteps (bit patterns); add_class_embedding: u32 labels
@group(0) @binding(1) var<storage, read> words: array<u32>;
// table: timestep_embedding: freqs (dim/2), exp(-ln(10000)·i / (dim/2 − shift)) from the CPU;
// add_class_embedding: the class table (num_classes, dim)
@group(0) @binding(2) var<storage, read> table: array<f32>;
// out: (N, dim); add_class_embedding accumulates into it
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const PIO2_1: f32 = 1.5703125;
const PIO2_2: f32 = 4.837512969970703125e-4;
const PIO2_3: f32 = 7.549789948768648e-8;
const TWO_OVER_PI: f32 = 0.6366197723675814;

// (sin x, cos x) with range reduction to [-π/4, π/4] and the quadrant k mod 4.
fn sincos(x: f32) -> vec2<f32> {
    let kf = round(x * TWO_OVER_PI);
    let r = ((x - kf * PIO2_1) - kf * PIO2_2) - kf * PIO2_3;
    let s = sin_poly(r);
    let c = cos_poly(r);
    let q = i32(kf) & 3;
    if (q == 0) { return vec2<f32>(s, c); }
    if (q == 1) { return vec2<f32>(c, -s); }
    if (q == 2) { return vec2<f32>(-s, -c); }
    return vec2<f32>(-c, s);
}

fn linear_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

// One thread per output element (n, j): j < half gives the first half, j in [half, 2·half)
// the second, and column 2·half (odd dim) is zero padding, as diffusers pads.
@compute @workgroup_size(256)
fn timestep_embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    let n = i / p.dim;
    let j = i % p.dim;
    if (j >= 2u * p.half_or_classes) {
        out[i] = 0.0;
        return;
    }
    let second = j >= p.half_or_classes;
    let f = select(j, j - p.half_or_classes, second);
    // One f32 rounding, like torch's timesteps[:, None].float() * emb[None, :].
    let arg = bitcast<f32>(words[n]) * table[f];
    let sc = sincos(arg);
    // Unflipped: [sin, cos]; flipped: [cos, sin].
    let want_cos = second != (p.flip != 0u);
    out[i] = select(sc.x, sc.y, want_cos);
}

// out[n, :] += table[words[n], :]; an out-of-range label is clamped so it cannot read out
// of bounds (the launcher's callers validate labels on the CPU first).
@compute @workgroup_size(256)
fn add_class_embedding(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wg, nwg, lid);
    if (i >= p.numel) { return; }
    let n = i / p.dim;
    let j = i % p.dim;
    let label = min(words[n], p.half_or_classes - 1u);
    out[i] = out[i] + table[label * p.dim + j];
}
