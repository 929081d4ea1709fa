// Draws the reverse process onto the page's WebGPU canvas: for every sample, x_t and the
// predicted x̂_0 side by side (as in Ho et al. 2020, Figure 6), in a grid. One full-screen
// triangle; the fragment shader finds which sample/image/pixel it covers and reads the
// storage buffers directly, so nothing is copied back to the CPU per step.
// Values in [-1, 1] map to [0, 1] (gray for 1 channel, RGB for 3; other channel counts
// show channel 0).

struct Params {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    cols: u32,
    // Canvas pixels per image pixel.
    scale: f32,
    // Gap between x_t and x̂_0 of one sample, and between samples, in canvas pixels.
    inner_gap: f32,
    outer_gap: f32,
    // Top-left corner of the grid, in canvas pixels.
    origin_x: f32,
    origin_y: f32,
    // Background colour.
    bg_r: f32,
    bg_g: f32,
    bg_b: f32,
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// xt: (N, C, H, W)
@group(0) @binding(1) var<storage, read> xt: array<f32>;
// x0: (N, C, H, W)
@group(0) @binding(2) var<storage, read> x0: array<f32>;

@vertex
fn vs(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    // A triangle covering the viewport: (-1,-1), (3,-1), (-1,3).
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return vec4<f32>(uv * 2.0 - 1.0, 0.0, 1.0);
}

fn value(which: u32, idx: u32) -> f32 {
    if which == 0u {
        return xt[idx];
    }
    return x0[idx];
}

@fragment
fn fs(@builtin(position) pos: vec4<f32>) -> @location(0) vec4<f32> {
    let bg = vec4<f32>(p.bg_r, p.bg_g, p.bg_b, 1.0);
    // pos.xy: pixel centre, origin top-left.
    let q = pos.xy - vec2<f32>(p.origin_x, p.origin_y);
    let img = vec2<f32>(f32(p.w), f32(p.h)) * p.scale;
    let cell = vec2<f32>(2.0 * img.x + p.inner_gap + p.outer_gap, img.y + p.outer_gap);
    if q.x < 0.0 || q.y < 0.0 {
        return bg;
    }
    let col = u32(q.x / cell.x);
    let row = u32(q.y / cell.y);
    let s = row * p.cols + col;
    if col >= p.cols || s >= p.n {
        return bg;
    }
    var r = q - vec2<f32>(f32(col) * cell.x, f32(row) * cell.y);
    var which = 0u;
    if r.x >= img.x + p.inner_gap {
        which = 1u;
        r.x = r.x - img.x - p.inner_gap;
    }
    if r.x >= img.x || r.y >= img.y {
        return bg;
    }
    let px = min(u32(r.x / p.scale), p.w - 1u);
    let py = min(u32(r.y / p.scale), p.h - 1u);
    let plane = p.h * p.w;
    let base = s * p.c * plane + py * p.w + px;
    var rgb: vec3<f32>;
    if p.c == 3u {
        rgb = vec3<f32>(value(which, base), value(which, base + plane), value(which, base + 2u * plane));
    } else {
        rgb = vec3<f32>(value(which, base));
    }
    return vec4<f32>(clamp(rgb * 0.5 + 0.5, vec3<f32>(0.0), vec3<f32>(1.0)), 1.0);
}
