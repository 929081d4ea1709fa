// Counter-based Gaussian noise: Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC 2011) and the
// Box–Muller transform (Box & Muller 1958). The same integer stream and the same f32
// operations run on the CPU (ops::noise::gaussian_noise_cpu), so a seed gives the same x_T
// and per-step noise natively and in the browser.
//
// Element i belongs to block b = i / 4. Counter = (b, stream, 0, 0), key = (seed lo, seed hi).
// The block's 4 words (r0, r1, r2, r3) give the normals of elements 4b..4b+3: (r0, r1) and
// (r2, r3) are Box–Muller pairs, radius from the first word, angle from the second.
// ln and sin/cos are our own (bit-level exponent split + atanh series; exact quarter-turn
// reduction + Taylor polynomials) so that backends agree to a few f32 ulps. Appended by
// src/shaders.rs: Philox from shaders/lib/philox.wgsl, the polynomials from
// shaders/lib/trig_poly.wgsl.

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    // Elements to write.
    numel: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// out: (numel) — f32 normals (stored as bit patterns) or, for philox_raw, raw u32 words
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

const LN2_HI: f32 = 0.693145751953125;
const LN2_LO: f32 = 1.4286068e-6;
const SQRT2: f32 = 1.4142135;
const TWO_PI: f32 = 6.2831855;

// ln(u) for normal positive u: u = m·2^e with m in (√2/2, √2], ln m = 2·atanh(s),
// s = (m − 1)/(m + 1), |s| <= 0.172 (series truncation < 1e-9 relative).
fn ln(u: f32) -> f32 {
    let bits = bitcast<u32>(u);
    var e = i32(bits >> 23u) - 127;
    var m = bitcast<f32>((bits & 0x007FFFFFu) | 0x3F800000u);
    if (m > SQRT2) {
        m = m * 0.5;
        e = e + 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let poly = 2.0 * s + 2.0 * s * z * (1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0))));
    let ef = f32(e);
    return ef * LN2_HI + (ef * LN2_LO + poly);
}

// (cos 2πv, sin 2πv) for v in [0, 1): v − q/4 is exact, so the reduction adds no error.
fn cossin_turns(v: f32) -> vec2<f32> {
    let qf = round(v * 4.0);
    let r = (v - qf * 0.25) * TWO_PI;
    let s = sin_poly(r);
    let c = cos_poly(r);
    let q = u32(qf) & 3u;
    if (q == 0u) { return vec2<f32>(c, s); }
    if (q == 1u) { return vec2<f32>(-s, c); }
    if (q == 2u) { return vec2<f32>(-c, -s); }
    return vec2<f32>(s, -c);
}

// Two normals from two words: u in (0, 1] (never 0, so ln is finite), v in [0, 1).
fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let u = (f32(a >> 8u) + 1.0) * 5.9604645e-8;
    let v = f32(b >> 8u) * 5.9604645e-8;
    let radius = sqrt(-2.0 * ln(u));
    return radius * cossin_turns(v);
}

fn block_index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 256u + lid;
}

fn block_words(b: u32) -> vec4<u32> {
    return philox_block(b, p.stream, p.seed_lo, p.seed_hi);
}

// One thread per block of 4 elements.
@compute @workgroup_size(256)
fn gaussian(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let b = block_index(wg, nwg, lid);
    let i = b * 4u;
    if (b >= (p.numel + 3u) / 4u) { return; }
    let r = block_words(b);
    let z01 = box_muller(r.x, r.y);
    let z23 = box_muller(r.z, r.w);
    let z = vec4<f32>(z01, z23);
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (i + j < p.numel) {
            out[i + j] = bitcast<u32>(z[j]);
        }
    }
}

// The raw Philox words, for the bit-exact GPU == CPU test.
@compute @workgroup_size(256)
fn philox_raw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let b = block_index(wg, nwg, lid);
    let i = b * 4u;
    if (b >= (p.numel + 3u) / 4u) { return; }
    let r = block_words(b);
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (i + j < p.numel) {
            out[i + j] = r[j];
        }
    }
}
