// 2-D convolution as an implicit GEMM: M = Cout, N = batch*Ho*Wo, K = Cin*KH*KW.
// out[b, co, oy, ox] = (sum_k W[co, k] * im2col[k, (b, oy, ox)] + bias[co] + channel_bias[b, co]
//                       + residual[b, co, oy, ox]) * out_scale
// im2col is never materialised: the B tile is gathered from x on the fly (zero padding =
// masked loads), so the only extra memory traffic is the redundancy of the gather itself.
//
// Tiling: shaders/lib/gemm_tile.wgsl (appended): 8 x WM threads, (8·WM)x128 output tile
// (Cout x pixels), 8x16 register tile per thread, K step 16 staged as vec4s in workgroup
// memory. All loads are clamped and masked (select, not branches), so any size works. Entry
// points conv2d (WM = 8, 64 rows), conv2d_m32 and conv2d_m16 share conv2d_tile(): small Cout
// (the MNIST model's 32 channels, conv_out's 1) would otherwise leave most of a 64-row tile
// masked. They are separate entry points with literal WM rather than override constants so
// that the workgroup size and loop bounds are compile-time constants everywhere (the
// workgroup arrays are sized for the largest variant).
//
// Grid: x/y = the pixel tile as a linear index (wg.x + wg.y * num_workgroups.x, see
// gpu::grid_1d), z = the Cout tile.

struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    // Cin * KH * KW
    kdim: u32,
    // batch * Ho * Wo
    ncols: u32,
    n_tiles: u32,
    // bit 0: bias; bit 1: channel_bias; bit 2: residual.
    flags: u32,
    out_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (N, Cin, H, W)
@group(0) @binding(1) var<storage, read> x: array<f32>;
// weight: (Cout, Cin, KH, KW) = row-major (Cout, K)
@group(0) @binding(2) var<storage, read> weight: array<f32>;
// bias: (Cout); any buffer when absent
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// channel_bias: (N, Cout); any buffer when absent
@group(0) @binding(4) var<storage, read> channel_bias: array<f32>;
// residual: (N, Cout, Ho, Wo); any buffer when absent
@group(0) @binding(5) var<storage, read> residual: array<f32>;
// out: (N, Cout, Ho, Wo)
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

fn load_x(i: u32, ok: bool) -> f32 {
    return select(0.0, x[select(0u, i, ok)], ok);
}

fn load_w(i: u32, ok: bool) -> f32 {
    return select(0.0, weight[select(0u, i, ok)], ok);
}

// The epilogue for gemm_tile.wgsl: 1 / (Ho·Wo) for div_small.
struct Epilogue {
    inv_hw: f32,
}

fn tile_store1(e: Epilogue, co: u32, n: u32, v: f32) {
    if (n >= p.ncols) { return; }
    let hw = p.ho * p.wo;
    let b = div_small(n, hw, e.inv_hw);
    let o = (b * p.cout + co) * hw + (n - b * hw);
    var r = v;
    if ((p.flags & 1u) != 0u) { r += bias[co]; }
    if ((p.flags & 2u) != 0u) { r += channel_bias[b * p.cout + co]; }
    if ((p.flags & 4u) != 0u) { r += residual[o]; }
    out[o] = r * p.out_scale;
}

// The four im2col columns (pixels) c .. c+4 one loader stages, decomposed once per thread:
// the top-left input tap of each and its image's base offset in x.
struct Cols {
    ok: vec4<bool>,
    x_base: vec4<u32>,
    iy0: vec4<i32>,
    ix0: vec4<i32>,
}

fn cols_at(c: u32) -> Cols {
    let hw_out = p.ho * p.wo;
    let cols = vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u);
    let cb = cols / vec4<u32>(hw_out);  // once per thread: plain division is fine
    let pix = cols - cb * vec4<u32>(hw_out);
    let oy = pix / vec4<u32>(p.wo);
    let ox = pix - oy * vec4<u32>(p.wo);
    return Cols(cols < vec4<u32>(p.ncols), cb * vec4<u32>(p.cin * p.h * p.w),
                vec4<i32>(oy * vec4<u32>(p.stride)) - vec4<i32>(i32(p.pad_top)),
                vec4<i32>(ox * vec4<u32>(p.stride)) - vec4<i32>(i32(p.pad_left)));
}

// im2col[k, cols] for k = (ci, ky, kx); out-of-image taps are the zero padding.
fn gather(c: Cols, kok: bool, ci: u32, ky: u32, kx: u32) -> vec4<f32> {
    let hi = vec4<i32>(i32(p.h));
    let wi = vec4<i32>(i32(p.w));
    let iy = c.iy0 + vec4<i32>(i32(ky));
    let ix = c.ix0 + vec4<i32>(i32(kx));
    let ok = c.ok & vec4<bool>(kok) & (iy >= vec4<i32>(0)) & (iy < hi) & (ix >= vec4<i32>(0))
        & (ix < wi);
    let xi = c.x_base + vec4<u32>(ci * p.h * p.w) + vec4<u32>(iy * wi + ix);
    return vec4<f32>(load_x(xi.x, ok.x), load_x(xi.y, ok.y), load_x(xi.z, ok.z),
                     load_x(xi.w, ok.w));
}

// The whole tile with wm threads along M (BM = 8 wm rows, 8 wm threads).
fn conv2d_tile(wm: u32, wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, li: u32) {
    let n_tile = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (n_tile >= p.n_tiles) { return; }
    let t = tile_threads(wm, lid, li);
    let m0 = wg.z * 8u * wm;
    let n0 = n_tile * BN;

    // The loaders' pixel columns do not change along K: decompose them once.
    let c0 = cols_at(n0 + 4u * t.bc);
    let c1 = cols_at(n0 + 4u * t.bc + 64u);
    let khw = p.kh * p.kw;
    let inv_khw = 1.0 / f32(khw);
    let inv_kw = 1.0 / f32(p.kw);

    // The loader's four weight rows (output channels).
    let rows = vec4<u32>(m0 + 4u * t.lc) + vec4<u32>(0u, 1u, 2u, 3u);
    let row_ok = rows < vec4<u32>(p.cout);
    let w_base = rows * vec4<u32>(p.kdim);

    // Zero-initialized (WGSL function variables are).
    var acc: array<vec4<f32>, 32>;

    for (var k0 = 0u; k0 < p.kdim; k0 += BK) {
        // Weights W[rows, k].
        for (var j = 0u; j < 4u; j++) {
            let kk = t.lr + 4u * j;
            let k = k0 + kk;
            let wok = row_ok & vec4<bool>(k < p.kdim);
            let wi4 = w_base + vec4<u32>(k);
            tile_a[kk * t.bm4 + t.lc] = vec4<f32>(load_w(wi4.x, wok.x), load_w(wi4.y, wok.y),
                                                  load_w(wi4.z, wok.z), load_w(wi4.w, wok.w));
        }
        // im2col[k, cols] with k = (ci, ky, kx).
        for (var j = 0u; j < 16u / t.bstep; j++) {
            let kk = t.br + t.bstep * j;
            let k = k0 + kk;
            let ci = div_small(k, khw, inv_khw);
            let r = k - ci * khw;
            let ky = div_small(r, p.kw, inv_kw);
            let kx = r - ky * p.kw;
            let kok = k < p.kdim;
            tile_b[kk * 32u + t.bc] = gather(c0, kok, ci, ky, kx);
            if (t.two_groups) {
                tile_b[kk * 32u + t.bc + 16u] = gather(c1, kok, ci, ky, kx);
            }
        }
        mac_staged(&acc, t);
    }

    store_tile(Epilogue(1.0 / f32(p.ho * p.wo)), &acc, t, m0, n0, p.cout);
}

@compute @workgroup_size(8, 8)
fn conv2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    conv2d_tile(8u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 4)
fn conv2d_m32(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    conv2d_tile(4u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 2)
fn conv2d_m16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    conv2d_tile(2u, wg, nwg, lid, li);
}
