// Dropout (Srivastava et al. 2014), as diffusers' ResnetBlock2D applies it after norm2 + SiLU
// in training: out = x · keep / (1 − p), keep ~ Bernoulli(1 − p). The mask is never stored:
// the backward pass regenerates it from the same (seed, stream) uniform buffer.
//
// Element i's random word is word i % 4 of Philox4x32-10 block i / 4 with counter
// (i / 4, stream, 0, 0) and key (seed lo, seed hi), exactly as noise.wgsl draws its words
// (shaders/lib/philox.wgsl, appended to both).
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

// One thread per block of 4 elements (one Philox call). mode: 0 write, 1 accumulate.
fn apply(wg: vec3<u32>, nwg: vec3<u32>, lid: u32, mode: u32) {
    let b = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (b >= (p.numel + 3u) / 4u) { return; }
    let r = philox_block(b, p.stream, p.seed_lo, p.seed_hi);
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
