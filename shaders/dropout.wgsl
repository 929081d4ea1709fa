// Dropout (Srivastava et al. 2014), as diffusers' ResnetBlock2D applies it after norm2 + SiLU
// in training: out = x · keep / (1 − p), keep ~ Bernoulli(1 − p). The mask is never stored:
// the backward pass regenerates it from the same (seed, stream) uniform buffer.
//
// Element i's random word is word i % 4 of Philox4x32-10 block i / 4 with counter
// (i / 4, stream, 0, 0) and key (seed lo, seed hi), exactly as noise.wgsl draws its words.
// WGSL has no imports, so philox4x32_10 and mulhi below are a copy of noise.wgsl's and MUST
// match ops::noise::philox4x32_10 (the CPU reference the tests compare against).
// Keep element i iff word >= threshold, threshold = round(p · 2^32).

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    // Elements to write.
    numel: u32,
    threshold: u32,
    // 1 / (1 − p).
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// src: (numel) — forward: x; backward: dout
@group(0) @binding(1) var<storage, read> src: array<f32>;
// dst: (numel) — forward: out; backward: dx (read when accumulating). Must not alias src.
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// High 32 bits of the 64-bit product a·b, from 16-bit halves (WGSL has no u64).
fn mulhi(a: u32, b: u32) -> u32 {
    let al = a & 0xFFFFu;
    let ah = a >> 16u;
    let bl = b & 0xFFFFu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    return hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

fn philox4x32_10(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = ctr_in;
    var k = key_in;
    for (var round = 0u; round < 10u; round = round + 1u) {
        if (round > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let hi0 = mulhi(PHILOX_M0, c.x);
        let lo0 = PHILOX_M0 * c.x;
        let hi1 = mulhi(PHILOX_M1, c.z);
        let lo1 = PHILOX_M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

// One thread per block of 4 elements (one Philox call). mode: 0 write, 1 accumulate.
fn apply(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, mode: u32) {
    let b = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (b >= (p.numel + 3u) / 4u) { return; }
    let r = philox4x32_10(vec4<u32>(b, p.stream, 0u, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
    for (var j = 0u; j < 4u; j = j + 1u) {
        let i = b * 4u + j;
        if (i < p.numel) {
            let v = select(0.0, src[i] * p.scale, r[j] >= p.threshold);
            if (mode == 1u) {
                dst[i] = dst[i] + v;
            } else {
                dst[i] = v;
            }
        }
    }
}

// out = x · mask / (1 − p)
@compute @workgroup_size(256)
fn dropout_forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    apply(wg, nwg, lid, 0u);
}

// dx = dout · mask / (1 − p): the same expression as the forward, with the same mask.
@compute @workgroup_size(256)
fn dropout_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    apply(wg, nwg, lid, 0u);
}

// dx += dout · mask / (1 − p)
@compute @workgroup_size(256)
fn dropout_backward_accumulate(@builtin(workgroup_id) wg: vec3<u32>,
                               @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    apply(wg, nwg, lid, 1u);
}
