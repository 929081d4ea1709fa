// Gradients of the 2-D convolution out = conv2d(x, W, stride, padding) · scale, as implicit
// GEMMs tiled like the forward (shaders/lib/gemm_tile.wgsl, appended): 8 x WM threads,
// (8·WM)x128 output tile, 8x16 register tile per thread, K step 16 staged as vec4s in
// workgroup memory, all loads clamped and masked (select, not branches), so any size works.
// As in the forward, each GEMM has entry points for WM = 8, 4, 2 (64-, 32- and 16-row tiles;
// suffixes none, _m32, _m16) sharing one function, chosen by the launcher from M.
//
// conv2d_backward_input (the transposed convolution):
//   dx[b, ci, iy, ix] = scale · Σ_{co, ky, kx} W[co, ci, ky, kx] · dout[b, co, oy, ox]
//   with oy = (iy + pad_top - ky) / stride when that divides exactly and lies in [0, Ho).
//   Sub-pixel decomposition: the launcher records one dispatch per phase class
//   (py, px) = ((iy + pad_top) mod stride, (ix + pad_left) mod stride). In a class only the
//   taps ky = py + stride·ty, kx = px + stride·tx divide exactly, so no tap is wasted
//   (stride 2, 3x3: 4 + 2 + 2 + 1 taps instead of 4 x 9), and oy = qy - ty with
//   qy = (iy + pad_top - py) / stride, no division in the kernel.
//   GEMM per class: M = Cin, N = batch · (class rows) · (class cols), K = Cout·taps_y·taps_x;
//   the B tile is gathered from dout. Input pixels that no output reads (stride 2 not
//   covering the last row/column) get 0 (a class with no taps writes 0).
// conv2d_backward_weight:
//   dW[co, (ci, ky, kx)] = scale · Σ_{b, oy, ox} dout[b, co, oy, ox] · x[b, ci, iy, ix]
//   GEMM: M = Cout, N = Cin·KH·KW, K = batch·Ho·Wo. K is long and M·N small, so K is split
//   into `splits` chunks (grid z = split · m_tiles + m tile); each chunk writes its raw
//   partial sums to a scratch buffer and conv2d_backward_weight_reduce adds them in a fixed
//   order: deterministic, no float atomics. With one chunk the epilogue writes dW directly.
//
// Bindings are shared by the entry points (one layout: uniform, two inputs, one output);
// what each holds is listed per entry point.

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
    // GEMM sizes (see above).
    m: u32,
    n: u32,
    k: u32,
    n_tiles: u32,
    m_tiles: u32,
    // K elements per split (a multiple of 16); the weight gradient only.
    k_chunk: u32,
    // bit 0: accumulate (out += result); bit 1: write raw partial sums (split K).
    flags: u32,
    // Number of K splits (conv2d_backward_weight_reduce).
    splits: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // Input gradient, phase class: first x row/col of the class, its rows/cols, its first
    // tap (py, px), its taps per axis, and qy/qx of its first row/col.
    y0: u32,
    x0: u32,
    hc: u32,
    wc: u32,
    ky0: u32,
    kx0: u32,
    taps_y: u32,
    taps_x: u32,
    qy0: u32,
    qx0: u32,
    _pad3: u32,
    _pad4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// in0: input:  dout (N, Cout, Ho, Wo)
//      weight: x (N, Cin, H, W)
//      reduce: partials (splits, Cout, Cin·KH·KW)
@group(0) @binding(1) var<storage, read> in0: array<f32>;
// in1: input:  weight (Cout, Cin, KH, KW)
//      weight: dout (N, Cout, Ho, Wo)
//      reduce: unused (any buffer)
@group(0) @binding(2) var<storage, read> in1: array<f32>;
// out: input:  dx (N, Cin, H, W)
//      weight: dw (Cout, Cin, KH, KW), or partials (splits, Cout, Cin·KH·KW) when split
//      reduce: dw (Cout, Cin, KH, KW)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn ld0(i: u32, ok: bool) -> f32 {
    return select(0.0, in0[select(0u, i, ok)], ok);
}

fn ld1(i: u32, ok: bool) -> f32 {
    return select(0.0, in1[select(0u, i, ok)], ok);
}

// ---- input gradient -------------------------------------------------------------------

fn dx_store1(ci: u32, col: u32, v: f32, inv_hwc: f32, inv_wc: f32) {
    if (col >= p.n) { return; }
    let hwc = p.hc * p.wc;
    let b = div_small(col, hwc, inv_hwc);
    let pix = col - b * hwc;
    let yc = div_small(pix, p.wc, inv_wc);
    let xc = pix - yc * p.wc;
    let o = (b * p.cin + ci) * p.h * p.w + (p.y0 + p.stride * yc) * p.w + p.x0 + p.stride * xc;
    var old = 0.0;
    if ((p.flags & 1u) != 0u) { old = out[o]; }
    out[o] = v * p.scale + old;
}

// The epilogue for gemm_tile.wgsl: which gradient (dW or dx) and what its stores need.
struct Epilogue {
    weight: bool,
    // dW: the K split's offset in the partials.
    ob: u32,
    // dx: 1 / (class pixels per image), 1 / (class columns), for div_small.
    inv_hwc: f32,
    inv_wc: f32,
}

fn tile_store1(e: Epilogue, m: u32, n: u32, v: f32) {
    if (e.weight) {
        dw_store1(e.ob, m, n, v);
    } else {
        dx_store1(m, n, v, e.inv_hwc, e.inv_wc);
    }
}

// The loader's four class pixels c .. c+4 (b, yc, xc), fixed along K, as (qy, qx): the
// output row/col that tap (ty, tx) = (0, 0) reads, and the image's base offset in dout.
struct InCols {
    ok: vec4<bool>,
    qy: vec4<i32>,
    qx: vec4<i32>,
    dout_base: vec4<u32>,
}

fn in_cols(c: u32) -> InCols {
    let hwc = p.hc * p.wc;
    let cols = vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u);
    let cb = cols / vec4<u32>(max(hwc, 1u));
    let pix = cols - cb * vec4<u32>(hwc);
    let yc = pix / vec4<u32>(max(p.wc, 1u));
    let xc = pix - yc * vec4<u32>(p.wc);
    return InCols(cols < vec4<u32>(p.n), vec4<i32>(yc + vec4<u32>(p.qy0)),
                  vec4<i32>(xc + vec4<u32>(p.qx0)), cb * vec4<u32>(p.cout * p.ho * p.wo));
}

// dout[b, co, qy - t_y, qx - t_x] for the four pixels; 0 outside dout.
fn in_gather(c: InCols, kok: bool, co: u32, t_y: u32, t_x: u32) -> vec4<f32> {
    let hoi = vec4<i32>(i32(p.ho));
    let woi = vec4<i32>(i32(p.wo));
    let oy = c.qy - vec4<i32>(i32(t_y));
    let ox = c.qx - vec4<i32>(i32(t_x));
    let ok = c.ok & vec4<bool>(kok) & (oy >= vec4<i32>(0)) & (oy < hoi) & (ox >= vec4<i32>(0))
        & (ox < woi);
    let di = c.dout_base + vec4<u32>(co * p.ho * p.wo) + vec4<u32>(oy * woi + ox);
    return vec4<f32>(ld0(di.x, ok.x), ld0(di.y, ok.y), ld0(di.z, ok.z), ld0(di.w, ok.w));
}

// Grid: x/y = the pixel tile of the phase class (linear, see gpu::grid_1d), z = Cin tile.
// wm threads along M (BM = 8 wm rows, 8 wm threads).
fn input_tile(wm: u32, wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, li: u32) {
    let n_tile = wg.x + wg.y * nwg.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (n_tile >= p.n_tiles) { return; }
    let t = tile_threads(wm, lid, li);
    let m0 = wg.z * 8u * wm;
    let n0 = n_tile * BN;
    // Loaders as in conv2d.wgsl: weights group lc of rows lr + 4 j; dout group bc (and
    // bc + 16 with 16 threads) of rows br + bstep j.
    let c0 = in_cols(n0 + 4u * t.bc);
    let c1 = in_cols(n0 + 4u * t.bc + 64u);
    let taps = p.taps_y * p.taps_x;
    let inv_taps = 1.0 / f32(max(taps, 1u));
    let inv_tx = 1.0 / f32(max(p.taps_x, 1u));
    let khw = p.kh * p.kw;

    // The loader's four weight rows (input channels): W[co, ci, ky, kx] at
    // (co·Cin + ci)·KHW + ky·KW + kx.
    let rows = vec4<u32>(m0 + 4u * t.lc) + vec4<u32>(0u, 1u, 2u, 3u);
    let row_ok = rows < vec4<u32>(p.m);
    let w_row = rows * vec4<u32>(khw);

    var acc: array<vec4<f32>, 32>;

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var j = 0u; j < 4u; j++) {
            let kk = t.lr + 4u * j;
            let k = k0 + kk;
            let co = div_small(k, taps, inv_taps);
            let r = k - co * taps;
            let t_y = div_small(r, p.taps_x, inv_tx);
            let t_x = r - t_y * p.taps_x;
            let wr = (p.ky0 + p.stride * t_y) * p.kw + p.kx0 + p.stride * t_x;
            let wok = row_ok & vec4<bool>(k < p.k);
            let wi4 = w_row + vec4<u32>(co * p.cin * khw + wr);
            tile_a[kk * t.bm4 + t.lc] = vec4<f32>(ld1(wi4.x, wok.x), ld1(wi4.y, wok.y),
                                                  ld1(wi4.z, wok.z), ld1(wi4.w, wok.w));
        }
        for (var j = 0u; j < 16u / t.bstep; j++) {
            let kk = t.br + t.bstep * j;
            let k = k0 + kk;
            let co = div_small(k, taps, inv_taps);
            let r = k - co * taps;
            let t_y = div_small(r, p.taps_x, inv_tx);
            let t_x = r - t_y * p.taps_x;
            let kok = k < p.k;
            tile_b[kk * 32u + t.bc] = in_gather(c0, kok, co, t_y, t_x);
            if (t.two_groups) {
                tile_b[kk * 32u + t.bc + 16u] = in_gather(c1, kok, co, t_y, t_x);
            }
        }
        mac_staged(&acc, t);
    }

    let e = Epilogue(false, 0u, 1.0 / f32(max(p.hc * p.wc, 1u)), 1.0 / f32(max(p.wc, 1u)));
    store_tile(e, &acc, t, m0, n0, p.m);
}

// ---- weight gradient ------------------------------------------------------------------

fn dw_store1(ob: u32, co: u32, col: u32, v: f32) {
    if (col >= p.n) { return; }
    let o = co * p.n + col;
    if ((p.flags & 2u) != 0u) {
        // Raw partial sum of this K split; the reduce pass scales and accumulates.
        out[ob + o] = v;
        return;
    }
    var old = 0.0;
    if ((p.flags & 1u) != 0u) { old = out[o]; }
    out[o] = v * p.scale + old;
}

// The loader's four columns c .. c+4 = (ci, ky, kx), fixed along K: the tap offsets and
// the channel's offset in an image of x.
struct WCols {
    ok: vec4<bool>,
    ky_off: vec4<i32>,
    kx_off: vec4<i32>,
    x_ci: vec4<u32>,
}

fn w_cols(c: u32) -> WCols {
    let khw = p.kh * p.kw;
    let cols = vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u);
    let ci = cols / vec4<u32>(khw);
    let r = cols - ci * vec4<u32>(khw);
    let ky = r / vec4<u32>(p.kw);
    let kx = r - ky * vec4<u32>(p.kw);
    return WCols(cols < vec4<u32>(p.n), vec4<i32>(ky) - vec4<i32>(i32(p.pad_top)),
                 vec4<i32>(kx) - vec4<i32>(i32(p.pad_left)), ci * vec4<u32>(p.h * p.w));
}

// x[b, ci, oy·stride + ky - pad_top, ox·stride + kx - pad_left]; 0 in the padding.
fn w_gather(c: WCols, kok: bool, b: u32, oy: u32, ox: u32) -> vec4<f32> {
    let hi = vec4<i32>(i32(p.h));
    let wi = vec4<i32>(i32(p.w));
    let iy = vec4<i32>(i32(oy * p.stride)) + c.ky_off;
    let ix = vec4<i32>(i32(ox * p.stride)) + c.kx_off;
    let ok = c.ok & vec4<bool>(kok) & (iy >= vec4<i32>(0)) & (iy < hi) & (ix >= vec4<i32>(0))
        & (ix < wi);
    let xi = vec4<u32>(b * p.cin * p.h * p.w) + c.x_ci + vec4<u32>(iy * wi + ix);
    return vec4<f32>(ld0(xi.x, ok.x), ld0(xi.y, ok.y), ld0(xi.z, ok.z), ld0(xi.w, ok.w));
}

// Grid: x/y = the (ci, ky, kx) tile (linear), z = split · m_tiles + Cout tile.
// wm threads along M (BM = 8 wm rows, 8 wm threads).
fn weight_tile(wm: u32, wg: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>, li: u32) {
    let n_tile = wg.x + wg.y * nwg.x;
    if (n_tile >= p.n_tiles) { return; }
    let t = tile_threads(wm, lid, li);
    let threads = 8u * wm;
    let m_tile = wg.z % p.m_tiles;
    let split = wg.z / p.m_tiles;
    let m0 = m_tile * 8u * wm;
    let n0 = n_tile * BN;
    let k_begin = split * p.k_chunk;
    let k_end = min(p.k, k_begin + p.k_chunk);

    let hw_out = p.ho * p.wo;
    let inv_hwo = 1.0 / f32(hw_out);
    let inv_wo = 1.0 / f32(p.wo);

    // A loader (dout): consecutive threads take consecutive K (pixels), which are adjacent
    // in memory; each stages 4 of the bm4 groups of 4 output channels (ag, ag + astep, ...).
    let akk = li % 16u;
    let ag = li / 16u;
    let astep = threads / 16u;
    // B loader (x gather): vec4 group bc of columns (ci, ky, kx), as in tile_threads.
    let c0 = w_cols(n0 + 4u * t.bc);
    let c1 = w_cols(n0 + 4u * t.bc + 64u);

    var acc: array<vec4<f32>, 32>;

    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        {
            let k = k0 + akk;
            let kok = k < k_end;
            let b = div_small(k, hw_out, inv_hwo);
            let base = b * p.cout * hw_out + (k - b * hw_out);
            for (var j = 0u; j < 4u; j++) {
                let g = ag + astep * j;
                let rows = vec4<u32>(m0 + 4u * g) + vec4<u32>(0u, 1u, 2u, 3u);
                let ok = (rows < vec4<u32>(p.m)) & vec4<bool>(kok);
                let di = vec4<u32>(base) + rows * vec4<u32>(hw_out);
                tile_a[akk * t.bm4 + g] = vec4<f32>(ld1(di.x, ok.x), ld1(di.y, ok.y),
                                                    ld1(di.z, ok.z), ld1(di.w, ok.w));
            }
        }
        for (var j = 0u; j < 16u / t.bstep; j++) {
            let kk = t.br + t.bstep * j;
            let k = k0 + kk;
            let b = div_small(k, hw_out, inv_hwo);
            let pix = k - b * hw_out;
            let oy = div_small(pix, p.wo, inv_wo);
            let ox = pix - oy * p.wo;
            let kok = k < k_end;
            tile_b[kk * 32u + t.bc] = w_gather(c0, kok, b, oy, ox);
            if (t.two_groups) {
                tile_b[kk * 32u + t.bc + 16u] = w_gather(c1, kok, b, oy, ox);
            }
        }
        mac_staged(&acc, t);
    }

    store_tile(Epilogue(true, split * p.m * p.n, 0.0, 0.0), &acc, t, m0, n0, p.m);
}

// ---- entry points (64-, 32- and 16-row tiles) ------------------------------------

@compute @workgroup_size(8, 8)
fn conv2d_backward_input(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    input_tile(8u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 4)
fn conv2d_backward_input_m32(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_id) lid: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
    input_tile(4u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 2)
fn conv2d_backward_input_m16(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_id) lid: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
    input_tile(2u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 8)
fn conv2d_backward_weight(@builtin(workgroup_id) wg: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_id) lid: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    weight_tile(8u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 4)
fn conv2d_backward_weight_m32(@builtin(workgroup_id) wg: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_id) lid: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    weight_tile(4u, wg, nwg, lid, li);
}

@compute @workgroup_size(8, 2)
fn conv2d_backward_weight_m16(@builtin(workgroup_id) wg: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_id) lid: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    weight_tile(2u, wg, nwg, lid, li);
}

// Sum the K splits' partials in split order (deterministic), then scale and accumulate.
// Grid: linear over Cout·Cin·KH·KW, 256 per workgroup.
@compute @workgroup_size(256)
fn conv2d_backward_weight_reduce(@builtin(workgroup_id) wg: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) li: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + li;
    let total = p.m * p.n;
    if (i >= total) { return; }
    var s = 0.0;
    for (var j = 0u; j < p.splits; j++) {
        s += in0[j * total + i];
    }
    var old = 0.0;
    if ((p.flags & 1u) != 0u) { old = out[i]; }
    out[i] = s * p.scale + old;
}
