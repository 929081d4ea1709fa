// Direct 3x3 / 1x1 convolutions (chosen by src/ops/conv2d_direct.rs), written for CPU
// adapters such as llvmpipe, where a storage or workgroup load costs about the same per
// lane whatever its width, so the kernel that issues the fewest loads per multiply-add wins (measured: in
// the implicit GEMMs of conv2d.wgsl / conv2d_backward.wgsl the staging gathers and the
// workgroup-memory reads dominate; here, before the operands below were staged as vec4,
// the scalar weight loads were ~75% of the time).
//
// conv2d_direct_*: out[b, co, oy, ox] = (Σ_{ci, ky, kx} W[co, ci, ky, kx] ·
//   x[b, ci, oy·s + ky − pad_top, ox·s + kx − pad_left] + bias[co] + channel_bias[b, co]
//   + residual[b, co, oy, ox]) · out_scale  (+ out when accumulating).
//   One invocation: 4 consecutive output pixels of one row × 16 output channels (grid z =
//   channel block); accumulators a0..a15 = channel c, pixels 0..3. Per (ci, ky) it loads a
//   window of 3s + k input values of its row once and reuses it for all k taps; per tap it
//   loads the 16 channels' weights as 4 vec4 from `wstaged`, the weight restaged by
//   stage_weight as [ci][ky][kx][Cout padded to 16] with zeros past Cout.
//   stage_weight reads the weight through element strides (ws_o, ws_i, ws_y, ws_x) from
//   w_off, so the same forward kernel is the input gradient of a stride-1 convolution:
//   dx = conv(dout, W flipped in space with its channel axes swapped), padding k − 1 − pad.
// conv2d_direct_dw_*: partial[b, co, ci·k·k + ky·k + kx] = Σ_{oy, ox} dout[b, co, oy, ox] ·
//   x[b, ci, oy·s + ky − pad_top, ox·s + kx − pad_left], one image b per grid y (the K split
//   of the weight gradient; conv2d_backward_weight_reduce in conv2d_backward.wgsl sums the
//   images in order, scales and accumulates). One invocation: one (ci, ky) and its k taps ×
//   16 output channels (grid z); accumulators a{kx}_{c4} = vec4 of channels 4c4 .. 4c4 + 3.
//   dout is restaged by stage_dout as [b][oy][ox padded to 4][Cout padded to 16] (zeros in
//   the padding), so that 4 pixels × 16 channels are 16 vec4 loads and need no masks.
//
// Entry points per (kernel size, stride): k3s1, k3s2, k1s1, so that window sizes and loop
// bounds are compile-time constants and the accumulators stay in registers.

struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    // ceil(wo / 4): pixel groups per output row.
    groups_per_row: u32,
    // conv: batch · ho · groups_per_row; dw: cin · k; staging: elements written.
    n_lanes: u32,
    // bit 0: bias; bit 1: channel_bias; bit 2: residual; bit 3: accumulate into out.
    flags: u32,
    pad_top: i32,
    pad_left: i32,
    // stage_weight: element strides of the weight along output channel, input channel, ky,
    // kx, and the element of (0, 0, 0, 0). Forward: (Cin·k·k, k·k, k, 1), 0.
    ws_o: i32,
    ws_i: i32,
    ws_y: i32,
    ws_x: i32,
    w_off: i32,
    // Cout rounded up to 16, in vec4 (4 channels).
    cpad4: u32,
    out_scale: f32,
    // stage_weight: k (taps per axis).
    k: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: conv: (N, Cin, H, W) (the input gradient: dout (N, Cout, Ho, Wo)); dw: x (N, Cin, H, W);
//    stage_weight: the weight (Cout, Cin, k, k); stage_dout: dout (N, Cout, Ho, Wo)
@group(0) @binding(1) var<storage, read> x: array<f32>;
// staged: conv: weight (Cin, k, k, cpad4) vec4; dw: dout (N, Ho, 4·groups_per_row, cpad4)
//    vec4; staging: unused (any buffer)
@group(0) @binding(2) var<storage, read> staged: array<vec4<f32>>;
// bias: (Cout); any buffer when absent
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// channel_bias: (N, Cout); any buffer when absent
@group(0) @binding(4) var<storage, read> channel_bias: array<f32>;
// residual: (N, Cout, Ho, Wo); any buffer when absent
@group(0) @binding(5) var<storage, read> residual: array<f32>;
// out: conv: (N, Cout, Ho, Wo); dw: partials (N, Cout, Cin·k·k); stage_weight:
//    (Cin, k, k, 4·cpad4); stage_dout: (N, Ho, 4·groups_per_row, 4·cpad4)
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

// A per-lane load of x, 0 when !ok.
fn ldx(i: i32, ok: bool) -> f32 {
    return select(0.0, x[select(0u, u32(i), ok)], ok);
}

// Column ix of a row that is inside the image (yok) and inside the row.
fn xok(ix: i32, yok: bool) -> bool {
    return yok && ix >= 0 && ix < i32(p.w);
}

// ---- staging ----------------------------------------------------------------------

// out[((ci·k + ky)·k + kx)·cpad + c] = W(c, ci, ky, kx) through the strides; 0 past Cout.
@compute @workgroup_size(64)
fn stage_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + li;
    if (i >= p.n_lanes) { return; }
    let cpad = 4u * p.cpad4;
    let t = i / cpad;
    let c = i - t * cpad;
    let ci = t / (p.k * p.k);
    let r = t - ci * p.k * p.k;
    let ky = r / p.k;
    let kx = r - ky * p.k;
    let src = p.w_off + i32(c) * p.ws_o + i32(ci) * p.ws_i + i32(ky) * p.ws_y + i32(kx) * p.ws_x;
    out[i] = ldx(src, c < p.cout);
}

// out[((b·Ho + oy)·wo4 + ox)·cpad + c] = dout[b, c, oy, ox]; 0 past Wo and past Cout.
@compute @workgroup_size(64)
fn stage_dout(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 64u + li;
    if (i >= p.n_lanes) { return; }
    let cpad = 4u * p.cpad4;
    let wo4 = 4u * p.groups_per_row;
    let pix = i / cpad;
    let c = i - pix * cpad;
    let row = pix / wo4;
    let ox = pix - row * wo4;
    let b = row / p.ho;
    let oy = row - b * p.ho;
    let src = i32(((b * p.cout + c) * p.ho + oy) * p.wo + ox);
    out[i] = ldx(src, c < p.cout && ox < p.wo);
}

// out[b, co, oy, ox0 .. ox0 + 4] (columns past wo skipped) with the epilogue.
fn store4(co: u32, b: u32, oy: u32, ox0: u32, v: vec4<f32>) {
    let o = ((b * p.cout + co) * p.ho + oy) * p.wo + ox0;
    var add = 0.0;
    if ((p.flags & 1u) != 0u) { add += bias[co]; }
    if ((p.flags & 2u) != 0u) { add += channel_bias[b * p.cout + co]; }
    for (var q = 0u; q < 4u; q++) {
        if (ox0 + q >= p.wo) { return; }
        var r = v[q] + add;
        if ((p.flags & 4u) != 0u) { r += residual[o + q]; }
        r *= p.out_scale;
        if ((p.flags & 8u) != 0u) { r += out[o + q]; }
        out[o + q] = r;
    }
}


// ---- forward / input gradient, 3x3, stride 1 ----
@compute @workgroup_size(64)
fn conv2d_direct_k3s1(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let lane = (wg.x + wg.y * nwg.x) * 64u + li;
    // A lane past the end computes a clamped group and stores nothing.
    let valid = lane < p.n_lanes;
    let g = min(lane, p.n_lanes - 1u);
    let row = g / p.groups_per_row;
    let ox0 = (g - row * p.groups_per_row) * 4u;
    let b = row / p.ho;
    let oy = row - b * p.ho;
    let co0 = wg.z * 16u;
    let ix0 = i32(ox0 * 1u) - p.pad_left;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0);
    var a9 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0);
    var a15 = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.cin; ci++) {
        let xb = i32((b * p.cin + ci) * p.h * p.w);
        for (var ky = 0u; ky < 3u; ky++) {
            let iy = i32(oy * 1u + ky) - p.pad_top;
            let yok = iy >= 0 && iy < i32(p.h);
            let rb = xb + iy * i32(p.w) + ix0;
            let x0 = ldx(rb + 0, xok(ix0 + 0, yok));
            let x1 = ldx(rb + 1, xok(ix0 + 1, yok));
            let x2 = ldx(rb + 2, xok(ix0 + 2, yok));
            let x3 = ldx(rb + 3, xok(ix0 + 3, yok));
            let x4 = ldx(rb + 4, xok(ix0 + 4, yok));
            let x5 = ldx(rb + 5, xok(ix0 + 5, yok));
            let wt = ((ci * 3u + ky) * 3u) * p.cpad4 + co0 / 4u;
            {
                let xv = vec4<f32>(x0, x1, x2, x3);
                let w0 = staged[wt + 0u];
                let w1 = staged[wt + 1u];
                let w2 = staged[wt + 2u];
                let w3 = staged[wt + 3u];
                a0 += w0.x * xv;
                a1 += w0.y * xv;
                a2 += w0.z * xv;
                a3 += w0.w * xv;
                a4 += w1.x * xv;
                a5 += w1.y * xv;
                a6 += w1.z * xv;
                a7 += w1.w * xv;
                a8 += w2.x * xv;
                a9 += w2.y * xv;
                a10 += w2.z * xv;
                a11 += w2.w * xv;
                a12 += w3.x * xv;
                a13 += w3.y * xv;
                a14 += w3.z * xv;
                a15 += w3.w * xv;
            }
            {
                let xv = vec4<f32>(x1, x2, x3, x4);
                let w0 = staged[wt + 1u * p.cpad4 + 0u];
                let w1 = staged[wt + 1u * p.cpad4 + 1u];
                let w2 = staged[wt + 1u * p.cpad4 + 2u];
                let w3 = staged[wt + 1u * p.cpad4 + 3u];
                a0 += w0.x * xv;
                a1 += w0.y * xv;
                a2 += w0.z * xv;
                a3 += w0.w * xv;
                a4 += w1.x * xv;
                a5 += w1.y * xv;
                a6 += w1.z * xv;
                a7 += w1.w * xv;
                a8 += w2.x * xv;
                a9 += w2.y * xv;
                a10 += w2.z * xv;
                a11 += w2.w * xv;
                a12 += w3.x * xv;
                a13 += w3.y * xv;
                a14 += w3.z * xv;
                a15 += w3.w * xv;
            }
            {
                let xv = vec4<f32>(x2, x3, x4, x5);
                let w0 = staged[wt + 2u * p.cpad4 + 0u];
                let w1 = staged[wt + 2u * p.cpad4 + 1u];
                let w2 = staged[wt + 2u * p.cpad4 + 2u];
                let w3 = staged[wt + 2u * p.cpad4 + 3u];
                a0 += w0.x * xv;
                a1 += w0.y * xv;
                a2 += w0.z * xv;
                a3 += w0.w * xv;
                a4 += w1.x * xv;
                a5 += w1.y * xv;
                a6 += w1.z * xv;
                a7 += w1.w * xv;
                a8 += w2.x * xv;
                a9 += w2.y * xv;
                a10 += w2.z * xv;
                a11 += w2.w * xv;
                a12 += w3.x * xv;
                a13 += w3.y * xv;
                a14 += w3.z * xv;
                a15 += w3.w * xv;
            }
        }
    }
    if (!valid) { return; }
    let nco = min(16u, p.cout - co0);
    if (0u < nco) { store4(co0 + 0u, b, oy, ox0, a0); }
    if (1u < nco) { store4(co0 + 1u, b, oy, ox0, a1); }
    if (2u < nco) { store4(co0 + 2u, b, oy, ox0, a2); }
    if (3u < nco) { store4(co0 + 3u, b, oy, ox0, a3); }
    if (4u < nco) { store4(co0 + 4u, b, oy, ox0, a4); }
    if (5u < nco) { store4(co0 + 5u, b, oy, ox0, a5); }
    if (6u < nco) { store4(co0 + 6u, b, oy, ox0, a6); }
    if (7u < nco) { store4(co0 + 7u, b, oy, ox0, a7); }
    if (8u < nco) { store4(co0 + 8u, b, oy, ox0, a8); }
    if (9u < nco) { store4(co0 + 9u, b, oy, ox0, a9); }
    if (10u < nco) { store4(co0 + 10u, b, oy, ox0, a10); }
    if (11u < nco) { store4(co0 + 11u, b, oy, ox0, a11); }
    if (12u < nco) { store4(co0 + 12u, b, oy, ox0, a12); }
    if (13u < nco) { store4(co0 + 13u, b, oy, ox0, a13); }
    if (14u < nco) { store4(co0 + 14u, b, oy, ox0, a14); }
    if (15u < nco) { store4(co0 + 15u, b, oy, ox0, a15); }
}

// ---- forward / input gradient, 3x3, stride 2 ----
@compute @workgroup_size(64)
fn conv2d_direct_k3s2(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let lane = (wg.x + wg.y * nwg.x) * 64u + li;
    // A lane past the end computes a clamped group and stores nothing.
    let valid = lane < p.n_lanes;
    let g = min(lane, p.n_lanes - 1u);
    let row = g / p.groups_per_row;
    let ox0 = (g - row * p.groups_per_row) * 4u;
    let b = row / p.ho;
    let oy = row - b * p.ho;
    let co0 = wg.z * 16u;
    let ix0 = i32(ox0 * 2u) - p.pad_left;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0);
    var a9 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0);
    var a15 = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.cin; ci++) {
        let xb = i32((b * p.cin + ci) * p.h * p.w);
        for (var ky = 0u; ky < 3u; ky++) {
            let iy = i32(oy * 2u + ky) - p.pad_top;
            let yok = iy >= 0 && iy < i32(p.h);
            let rb = xb + iy * i32(p.w) + ix0;
            let x0 = ldx(rb + 0, xok(ix0 + 0, yok));
            let x1 = ldx(rb + 1, xok(ix0 + 1, yok));
            let x2 = ldx(rb + 2, xok(ix0 + 2, yok));
            let x3 = ldx(rb + 3, xok(ix0 + 3, yok));
            let x4 = ldx(rb + 4, xok(ix0 + 4, yok));
            let x5 = ldx(rb + 5, xok(ix0 + 5, yok));
            let x6 = ldx(rb + 6, xok(ix0 + 6, yok));
            let x7 = ldx(rb + 7, xok(ix0 + 7, yok));
            let x8 = ldx(rb + 8, xok(ix0 + 8, yok));
            let wt = ((ci * 3u + ky) * 3u) * p.cpad4 + co0 / 4u;
            {
                let xv = vec4<f32>(x0, x2, x4, x6);
                let w0 = staged[wt + 0u];
                let w1 = staged[wt + 1u];
                let w2 = staged[wt + 2u];
                let w3 = staged[wt + 3u];
                a0 += w0.x * xv;
                a1 += w0.y * xv;
                a2 += w0.z * xv;
                a3 += w0.w * xv;
                a4 += w1.x * xv;
                a5 += w1.y * xv;
                a6 += w1.z * xv;
                a7 += w1.w * xv;
                a8 += w2.x * xv;
                a9 += w2.y * xv;
                a10 += w2.z * xv;
                a11 += w2.w * xv;
                a12 += w3.x * xv;
                a13 += w3.y * xv;
                a14 += w3.z * xv;
                a15 += w3.w * xv;
            }
            {
                let xv = vec4<f32>(x1, x3, x5, x7);
                let w0 = staged[wt + 1u * p.cpad4 + 0u];
                let w1 = staged[wt + 1u * p.cpad4 + 1u];
                let w2 = staged[wt + 1u * p.cpad4 + 2u];
                let w3 = staged[wt + 1u * p.cpad4 + 3u];
                a0 += w0.x * xv;
                a1 += w0.y * xv;
                a2 += w0.z * xv;
                a3 += w0.w * xv;
                a4 += w1.x * xv;
                a5 += w1.y * xv;
                a6 += w1.z * xv;
                a7 += w1.w * xv;
                a8 += w2.x * xv;
                a9 += w2.y * xv;
                a10 += w2.z * xv;
                a11 += w2.w * xv;
                a12 += w3.x * xv;
                a13 += w3.y * xv;
                a14 += w3.z * xv;
                a15 += w3.w * xv;
            }
            {
                let xv = vec4<f32>(x2, x4, x6, x8);
                let w0 = staged[wt + 2u * p.cpad4 + 0u];
                let w1 = staged[wt + 2u * p.cpad4 + 1u];
                let w2 = staged[wt + 2u * p.cpad4 + 2u];
                let w3 = staged[wt + 2u * p.cpad4 + 3u];
                a0 += w0.x * xv;
                a1 += w0.y * xv;
                a2 += w0.z * xv;
                a3 += w0.w * xv;
                a4 += w1.x * xv;
                a5 += w1.y * xv;
                a6 += w1.z * xv;
                a7 += w1.w * xv;
                a8 += w2.x * xv;
                a9 += w2.y * xv;
                a10 += w2.z * xv;
                a11 += w2.w * xv;
                a12 += w3.x * xv;
                a13 += w3.y * xv;
                a14 += w3.z * xv;
                a15 += w3.w * xv;
            }
        }
    }
    if (!valid) { return; }
    let nco = min(16u, p.cout - co0);
    if (0u < nco) { store4(co0 + 0u, b, oy, ox0, a0); }
    if (1u < nco) { store4(co0 + 1u, b, oy, ox0, a1); }
    if (2u < nco) { store4(co0 + 2u, b, oy, ox0, a2); }
    if (3u < nco) { store4(co0 + 3u, b, oy, ox0, a3); }
    if (4u < nco) { store4(co0 + 4u, b, oy, ox0, a4); }
    if (5u < nco) { store4(co0 + 5u, b, oy, ox0, a5); }
    if (6u < nco) { store4(co0 + 6u, b, oy, ox0, a6); }
    if (7u < nco) { store4(co0 + 7u, b, oy, ox0, a7); }
    if (8u < nco) { store4(co0 + 8u, b, oy, ox0, a8); }
    if (9u < nco) { store4(co0 + 9u, b, oy, ox0, a9); }
    if (10u < nco) { store4(co0 + 10u, b, oy, ox0, a10); }
    if (11u < nco) { store4(co0 + 11u, b, oy, ox0, a11); }
    if (12u < nco) { store4(co0 + 12u, b, oy, ox0, a12); }
    if (13u < nco) { store4(co0 + 13u, b, oy, ox0, a13); }
    if (14u < nco) { store4(co0 + 14u, b, oy, ox0, a14); }
    if (15u < nco) { store4(co0 + 15u, b, oy, ox0, a15); }
}

// ---- forward / input gradient, 1x1, stride 1 ----
@compute @workgroup_size(64)
fn conv2d_direct_k1s1(@builtin(workgroup_id) wg: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let lane = (wg.x + wg.y * nwg.x) * 64u + li;
    // A lane past the end computes a clamped group and stores nothing.
    let valid = lane < p.n_lanes;
    let g = min(lane, p.n_lanes - 1u);
    let row = g / p.groups_per_row;
    let ox0 = (g - row * p.groups_per_row) * 4u;
    let b = row / p.ho;
    let oy = row - b * p.ho;
    let co0 = wg.z * 16u;
    let ix0 = i32(ox0 * 1u) - p.pad_left;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0);
    var a9 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0);
    var a15 = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.cin; ci++) {
        let xb = i32((b * p.cin + ci) * p.h * p.w);
        for (var ky = 0u; ky < 1u; ky++) {
            let iy = i32(oy * 1u + ky) - p.pad_top;
            let yok = iy >= 0 && iy < i32(p.h);
            let rb = xb + iy * i32(p.w) + ix0;
            let x0 = ldx(rb + 0, xok(ix0 + 0, yok));
            let x1 = ldx(rb + 1, xok(ix0 + 1, yok));
            let x2 = ldx(rb + 2, xok(ix0 + 2, yok));
            let x3 = ldx(rb + 3, xok(ix0 + 3, yok));
            let wt = ((ci * 1u + ky) * 1u) * p.cpad4 + co0 / 4u;
            {
                let xv = vec4<f32>(x0, x1, x2, x3);
                let w0 = staged[wt + 0u];
                let w1 = staged[wt + 1u];
                let w2 = staged[wt + 2u];
                let w3 = staged[wt + 3u];
                a0 += w0.x * xv;
                a1 += w0.y * xv;
                a2 += w0.z * xv;
                a3 += w0.w * xv;
                a4 += w1.x * xv;
                a5 += w1.y * xv;
                a6 += w1.z * xv;
                a7 += w1.w * xv;
                a8 += w2.x * xv;
                a9 += w2.y * xv;
                a10 += w2.z * xv;
                a11 += w2.w * xv;
                a12 += w3.x * xv;
                a13 += w3.y * xv;
                a14 += w3.z * xv;
                a15 += w3.w * xv;
            }
        }
    }
    if (!valid) { return; }
    let nco = min(16u, p.cout - co0);
    if (0u < nco) { store4(co0 + 0u, b, oy, ox0, a0); }
    if (1u < nco) { store4(co0 + 1u, b, oy, ox0, a1); }
    if (2u < nco) { store4(co0 + 2u, b, oy, ox0, a2); }
    if (3u < nco) { store4(co0 + 3u, b, oy, ox0, a3); }
    if (4u < nco) { store4(co0 + 4u, b, oy, ox0, a4); }
    if (5u < nco) { store4(co0 + 5u, b, oy, ox0, a5); }
    if (6u < nco) { store4(co0 + 6u, b, oy, ox0, a6); }
    if (7u < nco) { store4(co0 + 7u, b, oy, ox0, a7); }
    if (8u < nco) { store4(co0 + 8u, b, oy, ox0, a8); }
    if (9u < nco) { store4(co0 + 9u, b, oy, ox0, a9); }
    if (10u < nco) { store4(co0 + 10u, b, oy, ox0, a10); }
    if (11u < nco) { store4(co0 + 11u, b, oy, ox0, a11); }
    if (12u < nco) { store4(co0 + 12u, b, oy, ox0, a12); }
    if (13u < nco) { store4(co0 + 13u, b, oy, ox0, a13); }
    if (14u < nco) { store4(co0 + 14u, b, oy, ox0, a14); }
    if (15u < nco) { store4(co0 + 15u, b, oy, ox0, a15); }
}

// ---- weight gradient, 3x3, stride 1 ----
// Grid: x = block of 16 (ci, ky) lanes, y = image, z = output-channel block.
@compute @workgroup_size(16)
fn conv2d_direct_dw_k3s1(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let lane = wg.x * 16u + li;
    let valid = lane < p.n_lanes;
    let l = min(lane, p.n_lanes - 1u);
    let ci = l / 3u;
    let ky = l - ci * 3u;
    let b = wg.y;
    let co0 = wg.z * 16u;
    let xb = i32((b * p.cin + ci) * p.h * p.w);
    let wo4 = 4u * p.groups_per_row;
    var a0_0 = vec4<f32>(0.0);
    var a0_1 = vec4<f32>(0.0);
    var a0_2 = vec4<f32>(0.0);
    var a0_3 = vec4<f32>(0.0);
    var a1_0 = vec4<f32>(0.0);
    var a1_1 = vec4<f32>(0.0);
    var a1_2 = vec4<f32>(0.0);
    var a1_3 = vec4<f32>(0.0);
    var a2_0 = vec4<f32>(0.0);
    var a2_1 = vec4<f32>(0.0);
    var a2_2 = vec4<f32>(0.0);
    var a2_3 = vec4<f32>(0.0);
    for (var oy = 0u; oy < p.ho; oy++) {
        let iy = i32(oy * 1u + ky) - p.pad_top;
        let yok = iy >= 0 && iy < i32(p.h);
        // staged dout of pixel (b, oy, 0), channel co0.
        let drow = (b * p.ho + oy) * wo4 * p.cpad4 + co0 / 4u;
        for (var ox0 = 0u; ox0 < p.wo; ox0 += 4u) {
            let ix0 = i32(ox0 * 1u) - p.pad_left;
            let rb = xb + iy * i32(p.w) + ix0;
            let x0 = ldx(rb + 0, xok(ix0 + 0, yok));
            let x1 = ldx(rb + 1, xok(ix0 + 1, yok));
            let x2 = ldx(rb + 2, xok(ix0 + 2, yok));
            let x3 = ldx(rb + 3, xok(ix0 + 3, yok));
            let x4 = ldx(rb + 4, xok(ix0 + 4, yok));
            let x5 = ldx(rb + 5, xok(ix0 + 5, yok));
            let d = drow + ox0 * p.cpad4;
            let d0_0 = staged[d + 0u];
            let d0_1 = staged[d + 1u];
            let d0_2 = staged[d + 2u];
            let d0_3 = staged[d + 3u];
            let d1_0 = staged[d + 1u * p.cpad4 + 0u];
            let d1_1 = staged[d + 1u * p.cpad4 + 1u];
            let d1_2 = staged[d + 1u * p.cpad4 + 2u];
            let d1_3 = staged[d + 1u * p.cpad4 + 3u];
            let d2_0 = staged[d + 2u * p.cpad4 + 0u];
            let d2_1 = staged[d + 2u * p.cpad4 + 1u];
            let d2_2 = staged[d + 2u * p.cpad4 + 2u];
            let d2_3 = staged[d + 2u * p.cpad4 + 3u];
            let d3_0 = staged[d + 3u * p.cpad4 + 0u];
            let d3_1 = staged[d + 3u * p.cpad4 + 1u];
            let d3_2 = staged[d + 3u * p.cpad4 + 2u];
            let d3_3 = staged[d + 3u * p.cpad4 + 3u];
            a0_0 += x0 * d0_0;
            a0_1 += x0 * d0_1;
            a0_2 += x0 * d0_2;
            a0_3 += x0 * d0_3;
            a0_0 += x1 * d1_0;
            a0_1 += x1 * d1_1;
            a0_2 += x1 * d1_2;
            a0_3 += x1 * d1_3;
            a0_0 += x2 * d2_0;
            a0_1 += x2 * d2_1;
            a0_2 += x2 * d2_2;
            a0_3 += x2 * d2_3;
            a0_0 += x3 * d3_0;
            a0_1 += x3 * d3_1;
            a0_2 += x3 * d3_2;
            a0_3 += x3 * d3_3;
            a1_0 += x1 * d0_0;
            a1_1 += x1 * d0_1;
            a1_2 += x1 * d0_2;
            a1_3 += x1 * d0_3;
            a1_0 += x2 * d1_0;
            a1_1 += x2 * d1_1;
            a1_2 += x2 * d1_2;
            a1_3 += x2 * d1_3;
            a1_0 += x3 * d2_0;
            a1_1 += x3 * d2_1;
            a1_2 += x3 * d2_2;
            a1_3 += x3 * d2_3;
            a1_0 += x4 * d3_0;
            a1_1 += x4 * d3_1;
            a1_2 += x4 * d3_2;
            a1_3 += x4 * d3_3;
            a2_0 += x2 * d0_0;
            a2_1 += x2 * d0_1;
            a2_2 += x2 * d0_2;
            a2_3 += x2 * d0_3;
            a2_0 += x3 * d1_0;
            a2_1 += x3 * d1_1;
            a2_2 += x3 * d1_2;
            a2_3 += x3 * d1_3;
            a2_0 += x4 * d2_0;
            a2_1 += x4 * d2_1;
            a2_2 += x4 * d2_2;
            a2_3 += x4 * d2_3;
            a2_0 += x5 * d3_0;
            a2_1 += x5 * d3_1;
            a2_2 += x5 * d3_2;
            a2_3 += x5 * d3_3;
        }
    }
    if (!valid) { return; }
    let nco = min(16u, p.cout - co0);
    let ncol = p.cin * 9u;
    let ob = (b * p.cout + co0) * ncol + ci * 9u + ky * 3u;
    if (0u < nco) { out[ob + 0u * ncol + 0u] = a0_0.x; }
    if (1u < nco) { out[ob + 1u * ncol + 0u] = a0_0.y; }
    if (2u < nco) { out[ob + 2u * ncol + 0u] = a0_0.z; }
    if (3u < nco) { out[ob + 3u * ncol + 0u] = a0_0.w; }
    if (4u < nco) { out[ob + 4u * ncol + 0u] = a0_1.x; }
    if (5u < nco) { out[ob + 5u * ncol + 0u] = a0_1.y; }
    if (6u < nco) { out[ob + 6u * ncol + 0u] = a0_1.z; }
    if (7u < nco) { out[ob + 7u * ncol + 0u] = a0_1.w; }
    if (8u < nco) { out[ob + 8u * ncol + 0u] = a0_2.x; }
    if (9u < nco) { out[ob + 9u * ncol + 0u] = a0_2.y; }
    if (10u < nco) { out[ob + 10u * ncol + 0u] = a0_2.z; }
    if (11u < nco) { out[ob + 11u * ncol + 0u] = a0_2.w; }
    if (12u < nco) { out[ob + 12u * ncol + 0u] = a0_3.x; }
    if (13u < nco) { out[ob + 13u * ncol + 0u] = a0_3.y; }
    if (14u < nco) { out[ob + 14u * ncol + 0u] = a0_3.z; }
    if (15u < nco) { out[ob + 15u * ncol + 0u] = a0_3.w; }
    if (0u < nco) { out[ob + 0u * ncol + 1u] = a1_0.x; }
    if (1u < nco) { out[ob + 1u * ncol + 1u] = a1_0.y; }
    if (2u < nco) { out[ob + 2u * ncol + 1u] = a1_0.z; }
    if (3u < nco) { out[ob + 3u * ncol + 1u] = a1_0.w; }
    if (4u < nco) { out[ob + 4u * ncol + 1u] = a1_1.x; }
    if (5u < nco) { out[ob + 5u * ncol + 1u] = a1_1.y; }
    if (6u < nco) { out[ob + 6u * ncol + 1u] = a1_1.z; }
    if (7u < nco) { out[ob + 7u * ncol + 1u] = a1_1.w; }
    if (8u < nco) { out[ob + 8u * ncol + 1u] = a1_2.x; }
    if (9u < nco) { out[ob + 9u * ncol + 1u] = a1_2.y; }
    if (10u < nco) { out[ob + 10u * ncol + 1u] = a1_2.z; }
    if (11u < nco) { out[ob + 11u * ncol + 1u] = a1_2.w; }
    if (12u < nco) { out[ob + 12u * ncol + 1u] = a1_3.x; }
    if (13u < nco) { out[ob + 13u * ncol + 1u] = a1_3.y; }
    if (14u < nco) { out[ob + 14u * ncol + 1u] = a1_3.z; }
    if (15u < nco) { out[ob + 15u * ncol + 1u] = a1_3.w; }
    if (0u < nco) { out[ob + 0u * ncol + 2u] = a2_0.x; }
    if (1u < nco) { out[ob + 1u * ncol + 2u] = a2_0.y; }
    if (2u < nco) { out[ob + 2u * ncol + 2u] = a2_0.z; }
    if (3u < nco) { out[ob + 3u * ncol + 2u] = a2_0.w; }
    if (4u < nco) { out[ob + 4u * ncol + 2u] = a2_1.x; }
    if (5u < nco) { out[ob + 5u * ncol + 2u] = a2_1.y; }
    if (6u < nco) { out[ob + 6u * ncol + 2u] = a2_1.z; }
    if (7u < nco) { out[ob + 7u * ncol + 2u] = a2_1.w; }
    if (8u < nco) { out[ob + 8u * ncol + 2u] = a2_2.x; }
    if (9u < nco) { out[ob + 9u * ncol + 2u] = a2_2.y; }
    if (10u < nco) { out[ob + 10u * ncol + 2u] = a2_2.z; }
    if (11u < nco) { out[ob + 11u * ncol + 2u] = a2_2.w; }
    if (12u < nco) { out[ob + 12u * ncol + 2u] = a2_3.x; }
    if (13u < nco) { out[ob + 13u * ncol + 2u] = a2_3.y; }
    if (14u < nco) { out[ob + 14u * ncol + 2u] = a2_3.z; }
    if (15u < nco) { out[ob + 15u * ncol + 2u] = a2_3.w; }
}

// ---- weight gradient, 3x3, stride 2 ----
// Grid: x = block of 16 (ci, ky) lanes, y = image, z = output-channel block.
@compute @workgroup_size(16)
fn conv2d_direct_dw_k3s2(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let lane = wg.x * 16u + li;
    let valid = lane < p.n_lanes;
    let l = min(lane, p.n_lanes - 1u);
    let ci = l / 3u;
    let ky = l - ci * 3u;
    let b = wg.y;
    let co0 = wg.z * 16u;
    let xb = i32((b * p.cin + ci) * p.h * p.w);
    let wo4 = 4u * p.groups_per_row;
    var a0_0 = vec4<f32>(0.0);
    var a0_1 = vec4<f32>(0.0);
    var a0_2 = vec4<f32>(0.0);
    var a0_3 = vec4<f32>(0.0);
    var a1_0 = vec4<f32>(0.0);
    var a1_1 = vec4<f32>(0.0);
    var a1_2 = vec4<f32>(0.0);
    var a1_3 = vec4<f32>(0.0);
    var a2_0 = vec4<f32>(0.0);
    var a2_1 = vec4<f32>(0.0);
    var a2_2 = vec4<f32>(0.0);
    var a2_3 = vec4<f32>(0.0);
    for (var oy = 0u; oy < p.ho; oy++) {
        let iy = i32(oy * 2u + ky) - p.pad_top;
        let yok = iy >= 0 && iy < i32(p.h);
        // staged dout of pixel (b, oy, 0), channel co0.
        let drow = (b * p.ho + oy) * wo4 * p.cpad4 + co0 / 4u;
        for (var ox0 = 0u; ox0 < p.wo; ox0 += 4u) {
            let ix0 = i32(ox0 * 2u) - p.pad_left;
            let rb = xb + iy * i32(p.w) + ix0;
            let x0 = ldx(rb + 0, xok(ix0 + 0, yok));
            let x1 = ldx(rb + 1, xok(ix0 + 1, yok));
            let x2 = ldx(rb + 2, xok(ix0 + 2, yok));
            let x3 = ldx(rb + 3, xok(ix0 + 3, yok));
            let x4 = ldx(rb + 4, xok(ix0 + 4, yok));
            let x5 = ldx(rb + 5, xok(ix0 + 5, yok));
            let x6 = ldx(rb + 6, xok(ix0 + 6, yok));
            let x7 = ldx(rb + 7, xok(ix0 + 7, yok));
            let x8 = ldx(rb + 8, xok(ix0 + 8, yok));
            let d = drow + ox0 * p.cpad4;
            let d0_0 = staged[d + 0u];
            let d0_1 = staged[d + 1u];
            let d0_2 = staged[d + 2u];
            let d0_3 = staged[d + 3u];
            let d1_0 = staged[d + 1u * p.cpad4 + 0u];
            let d1_1 = staged[d + 1u * p.cpad4 + 1u];
            let d1_2 = staged[d + 1u * p.cpad4 + 2u];
            let d1_3 = staged[d + 1u * p.cpad4 + 3u];
            let d2_0 = staged[d + 2u * p.cpad4 + 0u];
            let d2_1 = staged[d + 2u * p.cpad4 + 1u];
            let d2_2 = staged[d + 2u * p.cpad4 + 2u];
            let d2_3 = staged[d + 2u * p.cpad4 + 3u];
            let d3_0 = staged[d + 3u * p.cpad4 + 0u];
            let d3_1 = staged[d + 3u * p.cpad4 + 1u];
            let d3_2 = staged[d + 3u * p.cpad4 + 2u];
            let d3_3 = staged[d + 3u * p.cpad4 + 3u];
            a0_0 += x0 * d0_0;
            a0_1 += x0 * d0_1;
            a0_2 += x0 * d0_2;
            a0_3 += x0 * d0_3;
            a0_0 += x2 * d1_0;
            a0_1 += x2 * d1_1;
            a0_2 += x2 * d1_2;
            a0_3 += x2 * d1_3;
            a0_0 += x4 * d2_0;
            a0_1 += x4 * d2_1;
            a0_2 += x4 * d2_2;
            a0_3 += x4 * d2_3;
            a0_0 += x6 * d3_0;
            a0_1 += x6 * d3_1;
            a0_2 += x6 * d3_2;
            a0_3 += x6 * d3_3;
            a1_0 += x1 * d0_0;
            a1_1 += x1 * d0_1;
            a1_2 += x1 * d0_2;
            a1_3 += x1 * d0_3;
            a1_0 += x3 * d1_0;
            a1_1 += x3 * d1_1;
            a1_2 += x3 * d1_2;
            a1_3 += x3 * d1_3;
            a1_0 += x5 * d2_0;
            a1_1 += x5 * d2_1;
            a1_2 += x5 * d2_2;
            a1_3 += x5 * d2_3;
            a1_0 += x7 * d3_0;
            a1_1 += x7 * d3_1;
            a1_2 += x7 * d3_2;
            a1_3 += x7 * d3_3;
            a2_0 += x2 * d0_0;
            a2_1 += x2 * d0_1;
            a2_2 += x2 * d0_2;
            a2_3 += x2 * d0_3;
            a2_0 += x4 * d1_0;
            a2_1 += x4 * d1_1;
            a2_2 += x4 * d1_2;
            a2_3 += x4 * d1_3;
            a2_0 += x6 * d2_0;
            a2_1 += x6 * d2_1;
            a2_2 += x6 * d2_2;
            a2_3 += x6 * d2_3;
            a2_0 += x8 * d3_0;
            a2_1 += x8 * d3_1;
            a2_2 += x8 * d3_2;
            a2_3 += x8 * d3_3;
        }
    }
    if (!valid) { return; }
    let nco = min(16u, p.cout - co0);
    let ncol = p.cin * 9u;
    let ob = (b * p.cout + co0) * ncol + ci * 9u + ky * 3u;
    if (0u < nco) { out[ob + 0u * ncol + 0u] = a0_0.x; }
    if (1u < nco) { out[ob + 1u * ncol + 0u] = a0_0.y; }
    if (2u < nco) { out[ob + 2u * ncol + 0u] = a0_0.z; }
    if (3u < nco) { out[ob + 3u * ncol + 0u] = a0_0.w; }
    if (4u < nco) { out[ob + 4u * ncol + 0u] = a0_1.x; }
    if (5u < nco) { out[ob + 5u * ncol + 0u] = a0_1.y; }
    if (6u < nco) { out[ob + 6u * ncol + 0u] = a0_1.z; }
    if (7u < nco) { out[ob + 7u * ncol + 0u] = a0_1.w; }
    if (8u < nco) { out[ob + 8u * ncol + 0u] = a0_2.x; }
    if (9u < nco) { out[ob + 9u * ncol + 0u] = a0_2.y; }
    if (10u < nco) { out[ob + 10u * ncol + 0u] = a0_2.z; }
    if (11u < nco) { out[ob + 11u * ncol + 0u] = a0_2.w; }
    if (12u < nco) { out[ob + 12u * ncol + 0u] = a0_3.x; }
    if (13u < nco) { out[ob + 13u * ncol + 0u] = a0_3.y; }
    if (14u < nco) { out[ob + 14u * ncol + 0u] = a0_3.z; }
    if (15u < nco) { out[ob + 15u * ncol + 0u] = a0_3.w; }
    if (0u < nco) { out[ob + 0u * ncol + 1u] = a1_0.x; }
    if (1u < nco) { out[ob + 1u * ncol + 1u] = a1_0.y; }
    if (2u < nco) { out[ob + 2u * ncol + 1u] = a1_0.z; }
    if (3u < nco) { out[ob + 3u * ncol + 1u] = a1_0.w; }
    if (4u < nco) { out[ob + 4u * ncol + 1u] = a1_1.x; }
    if (5u < nco) { out[ob + 5u * ncol + 1u] = a1_1.y; }
    if (6u < nco) { out[ob + 6u * ncol + 1u] = a1_1.z; }
    if (7u < nco) { out[ob + 7u * ncol + 1u] = a1_1.w; }
    if (8u < nco) { out[ob + 8u * ncol + 1u] = a1_2.x; }
    if (9u < nco) { out[ob + 9u * ncol + 1u] = a1_2.y; }
    if (10u < nco) { out[ob + 10u * ncol + 1u] = a1_2.z; }
    if (11u < nco) { out[ob + 11u * ncol + 1u] = a1_2.w; }
    if (12u < nco) { out[ob + 12u * ncol + 1u] = a1_3.x; }
    if (13u < nco) { out[ob + 13u * ncol + 1u] = a1_3.y; }
    if (14u < nco) { out[ob + 14u * ncol + 1u] = a1_3.z; }
    if (15u < nco) { out[ob + 15u * ncol + 1u] = a1_3.w; }
    if (0u < nco) { out[ob + 0u * ncol + 2u] = a2_0.x; }
    if (1u < nco) { out[ob + 1u * ncol + 2u] = a2_0.y; }
    if (2u < nco) { out[ob + 2u * ncol + 2u] = a2_0.z; }
    if (3u < nco) { out[ob + 3u * ncol + 2u] = a2_0.w; }
    if (4u < nco) { out[ob + 4u * ncol + 2u] = a2_1.x; }
    if (5u < nco) { out[ob + 5u * ncol + 2u] = a2_1.y; }
    if (6u < nco) { out[ob + 6u * ncol + 2u] = a2_1.z; }
    if (7u < nco) { out[ob + 7u * ncol + 2u] = a2_1.w; }
    if (8u < nco) { out[ob + 8u * ncol + 2u] = a2_2.x; }
    if (9u < nco) { out[ob + 9u * ncol + 2u] = a2_2.y; }
    if (10u < nco) { out[ob + 10u * ncol + 2u] = a2_2.z; }
    if (11u < nco) { out[ob + 11u * ncol + 2u] = a2_2.w; }
    if (12u < nco) { out[ob + 12u * ncol + 2u] = a2_3.x; }
    if (13u < nco) { out[ob + 13u * ncol + 2u] = a2_3.y; }
    if (14u < nco) { out[ob + 14u * ncol + 2u] = a2_3.z; }
    if (15u < nco) { out[ob + 15u * ncol + 2u] = a2_3.w; }
}

// ---- weight gradient, 1x1, stride 1 ----
// Grid: x = block of 16 (ci, ky) lanes, y = image, z = output-channel block.
@compute @workgroup_size(16)
fn conv2d_direct_dw_k1s1(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let lane = wg.x * 16u + li;
    let valid = lane < p.n_lanes;
    let l = min(lane, p.n_lanes - 1u);
    let ci = l / 1u;
    let ky = l - ci * 1u;
    let b = wg.y;
    let co0 = wg.z * 16u;
    let xb = i32((b * p.cin + ci) * p.h * p.w);
    let wo4 = 4u * p.groups_per_row;
    var a0_0 = vec4<f32>(0.0);
    var a0_1 = vec4<f32>(0.0);
    var a0_2 = vec4<f32>(0.0);
    var a0_3 = vec4<f32>(0.0);
    for (var oy = 0u; oy < p.ho; oy++) {
        let iy = i32(oy * 1u + ky) - p.pad_top;
        let yok = iy >= 0 && iy < i32(p.h);
        // staged dout of pixel (b, oy, 0), channel co0.
        let drow = (b * p.ho + oy) * wo4 * p.cpad4 + co0 / 4u;
        for (var ox0 = 0u; ox0 < p.wo; ox0 += 4u) {
            let ix0 = i32(ox0 * 1u) - p.pad_left;
            let rb = xb + iy * i32(p.w) + ix0;
            let x0 = ldx(rb + 0, xok(ix0 + 0, yok));
            let x1 = ldx(rb + 1, xok(ix0 + 1, yok));
            let x2 = ldx(rb + 2, xok(ix0 + 2, yok));
            let x3 = ldx(rb + 3, xok(ix0 + 3, yok));
            let d = drow + ox0 * p.cpad4;
            let d0_0 = staged[d + 0u];
            let d0_1 = staged[d + 1u];
            let d0_2 = staged[d + 2u];
            let d0_3 = staged[d + 3u];
            let d1_0 = staged[d + 1u * p.cpad4 + 0u];
            let d1_1 = staged[d + 1u * p.cpad4 + 1u];
            let d1_2 = staged[d + 1u * p.cpad4 + 2u];
            let d1_3 = staged[d + 1u * p.cpad4 + 3u];
            let d2_0 = staged[d + 2u * p.cpad4 + 0u];
            let d2_1 = staged[d + 2u * p.cpad4 + 1u];
            let d2_2 = staged[d + 2u * p.cpad4 + 2u];
            let d2_3 = staged[d + 2u * p.cpad4 + 3u];
            let d3_0 = staged[d + 3u * p.cpad4 + 0u];
            let d3_1 = staged[d + 3u * p.cpad4 + 1u];
            let d3_2 = staged[d + 3u * p.cpad4 + 2u];
            let d3_3 = staged[d + 3u * p.cpad4 + 3u];
            a0_0 += x0 * d0_0;
            a0_1 += x0 * d0_1;
            a0_2 += x0 * d0_2;
            a0_3 += x0 * d0_3;
            a0_0 += x1 * d1_0;
            a0_1 += x1 * d1_1;
            a0_2 += x1 * d1_2;
            a0_3 += x1 * d1_3;
            a0_0 += x2 * d2_0;
            a0_1 += x2 * d2_1;
            a0_2 += x2 * d2_2;
            a0_3 += x2 * d2_3;
            a0_0 += x3 * d3_0;
            a0_1 += x3 * d3_1;
            a0_2 += x3 * d3_2;
            a0_3 += x3 * d3_3;
        }
    }
    if (!valid) { return; }
    let nco = min(16u, p.cout - co0);
    let ncol = p.cin * 1u;
    let ob = (b * p.cout + co0) * ncol + ci * 1u + ky * 1u;
    if (0u < nco) { out[ob + 0u * ncol + 0u] = a0_0.x; }
    if (1u < nco) { out[ob + 1u * ncol + 0u] = a0_0.y; }
    if (2u < nco) { out[ob + 2u * ncol + 0u] = a0_0.z; }
    if (3u < nco) { out[ob + 3u * ncol + 0u] = a0_0.w; }
    if (4u < nco) { out[ob + 4u * ncol + 0u] = a0_1.x; }
    if (5u < nco) { out[ob + 5u * ncol + 0u] = a0_1.y; }
    if (6u < nco) { out[ob + 6u * ncol + 0u] = a0_1.z; }
    if (7u < nco) { out[ob + 7u * ncol + 0u] = a0_1.w; }
    if (8u < nco) { out[ob + 8u * ncol + 0u] = a0_2.x; }
    if (9u < nco) { out[ob + 9u * ncol + 0u] = a0_2.y; }
    if (10u < nco) { out[ob + 10u * ncol + 0u] = a0_2.z; }
    if (11u < nco) { out[ob + 11u * ncol + 0u] = a0_2.w; }
    if (12u < nco) { out[ob + 12u * ncol + 0u] = a0_3.x; }
    if (13u < nco) { out[ob + 13u * ncol + 0u] = a0_3.y; }
    if (14u < nco) { out[ob + 14u * ncol + 0u] = a0_3.z; }
    if (15u < nco) { out[ob + 15u * ncol + 0u] = a0_3.w; }
}
