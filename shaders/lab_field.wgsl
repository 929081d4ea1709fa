// Field views of the 2-D diffusion lab (src/lab/field.rs): heat maps and arrow fields rendered
// into RGBA8 images kept in storage buffers (one u32 per pixel, pack4x8unorm(r, g, b, a), row 0
// = top), so the page draws them (shaders/lab_blit.wgsl) without reading anything back.
//
// World → pixel: pixel (px, py) covers x ∈ [x_min + px·pw, x_min + (px+1)·pw) and
// y ∈ (y_max − (py+1)·ph, y_max − py·ph], pw = (x_max − x_min)/width, ph = (y_max − y_min)/height.
//
// Entry points (one binding set for all; unused slots are bound to small dummies):
//   clear_counts      counts ← 0, stats[2] ← 0
//   histogram         counts[pixel of particle] += 1 (atomics), particles outside are dropped;
//                     with a class filter only rows of that class count; stats[2] += 1 per
//                     particle counted (N, inside the view or not)
//   particle_density  values ← Gaussian-smoothed count / (N·pw·ph) (a density, same units as
//                     q(x_t)), image ← density colour map
//   clear_density_max stats[0] ← 0 (before exact_density); clear_arrow_max: stats[1] ← 0
//   exact_density     values ← q(x_t) = exp(log q) from lab_score.wgsl's output; stats[0] ← max
//   colour_exact      image ← density colour map of src_a (the exact density)
//   arrow_vectors     values ← per grid arrow (s_θ, s*, ‖ε_θ − ε*‖), s = −ε/√(1−ᾱ) (the score,
//                     ∇log q ≈ −ε/√(1−ᾱ), Ho et al. 2020 eq. 12 / denoising score matching);
//                     with a class (guided = 1) both ε are ε_∅ + w(ε_y − ε_∅);
//                     stats[1] ← max ‖s‖ over both fields
//   draw_learned      image ← error map of ‖ε_θ − ε*‖ (bilinear between arrows) + s_θ arrows
//   draw_exact        image ← density colour map of q(x_t) + s* arrows
//
// Both density images use one scale, stats[0] = max of q(x_t) on the pixel grid: value
// (v/max)^gamma through the same colour map, so particle and exact densities compare directly.

struct Uniforms {
    width: u32,
    height: u32,
    n_particles: u32,
    // Floats per particle row: 2 (x, y) or 4 (x, y, class, unused).
    particle_stride: u32,
    // Arrows per side (G).
    grid: u32,
    // Half-width of the histogram's Gaussian kernel in pixels (0: no smoothing).
    smooth_radius: u32,
    // Only particles of this class (row component 2, stride 4) enter the histogram;
    // ALL_CLASSES: every particle.
    particle_class: u32,
    _pad1: u32,
    x_min: f32,
    y_max: f32,
    // World units per pixel, x and y.
    pw: f32,
    ph: f32,
    // 1 / (pw·ph): a count per pixel → a density (divided by N = stats[2] too).
    hist_scale: f32,
    // exp(−r²·smooth_inv_two_var)·smooth_norm is the kernel weight at squared pixel distance r².
    smooth_inv_two_var: f32,
    smooth_norm: f32,
    // Colour = map((v / max)^gamma).
    gamma: f32,
    // ‖ε_θ − ε*‖ at which the error map saturates.
    err_max: f32,
    // Arrow length = 0.9·cell·(‖s‖ / max ‖s‖)^arrow_gamma.
    arrow_gamma: f32,
    // 1/√(1−ᾱ_t).
    inv_sqrt_one_minus_ab: f32,
    // Guided arrows (guided = 1): ε = ε_∅ + w(ε_y − ε_∅) for both fields, w = guidance.
    guidance: f32,
    guided: u32,
    _pad2: u32,
    _pad3: u32,
    _pad4: u32,
}

@group(0) @binding(0) var<uniform> u: Uniforms;
// src_a: histogram: particles (n_particles, particle_stride); exact_density: lab_score output
//        (width·height, 3) = (ε*, log q); colour_exact: exact density (height, width);
//        arrow_vectors: ε_θ (2·G², 2), rows [0, G²) the null class, [G², 2·G²) class y
@group(0) @binding(1) var<storage, read> src_a: array<f32>;
// src_b: arrow_vectors: lab_score output at the arrows over all data points (G², 3);
//        draw_exact: exact density (height, width)
@group(0) @binding(2) var<storage, read> src_b: array<f32>;
// src_c: arrow_vectors (guided only): lab_score output at the arrows over class y's points (G², 3)
@group(0) @binding(3) var<storage, read> src_c: array<f32>;
// counts: (height, width) particles per pixel
@group(0) @binding(4) var<storage, read_write> counts: array<atomic<u32>>;
// stats: (4) [0], [1]: f32 bits of non-negative maxima: max q(x_t) on the pixels, max ‖s‖ of the
//        arrows; [2] u32: particles counted by the histogram (N)
@group(0) @binding(5) var<storage, read_write> stats: array<atomic<u32>>;
// values: particle_density / exact_density: (height, width) densities;
//         arrow_vectors (written) and draw_* (read): arrows (G², 5) = (s_θ.x, s_θ.y, s*.x, s*.y, ‖ε_θ − ε*‖)
@group(0) @binding(6) var<storage, read_write> values: array<f32>;
// image: (height, width) packed RGBA8, row 0 = top
@group(0) @binding(7) var<storage, read_write> image: array<u32>;

const ARROW_STRIDE: u32 = 5u;
const ALL_CLASSES: u32 = 0xffffffffu;
const LEARNED_ARROW: vec3<f32> = vec3<f32>(0.55, 0.95, 1.0);
const EXACT_ARROW: vec3<f32> = vec3<f32>(1.0, 0.62, 0.12);

var<workgroup> wg_max: atomic<u32>;

fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 64u;
}

// Piecewise-linear colour maps over five stops at 0, ¼, ½, ¾, 1 (mirrored in field.rs).
fn density_map(v: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 5>(
        vec3<f32>(0.03, 0.03, 0.08),
        vec3<f32>(0.12, 0.14, 0.45),
        vec3<f32>(0.10, 0.45, 0.78),
        vec3<f32>(0.45, 0.80, 0.93),
        vec3<f32>(0.96, 0.98, 1.0),
    );
    let s = clamp(v, 0.0, 1.0) * 4.0;
    let i = min(u32(s), 3u);
    return mix(stops[i], stops[i + 1u], s - f32(i));
}

fn error_map(v: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 5>(
        vec3<f32>(0.03, 0.03, 0.08),
        vec3<f32>(0.35, 0.05, 0.12),
        vec3<f32>(0.72, 0.12, 0.10),
        vec3<f32>(0.95, 0.45, 0.08),
        vec3<f32>(1.0, 0.90, 0.45),
    );
    let s = clamp(v, 0.0, 1.0) * 4.0;
    let i = min(u32(s), 3u);
    return mix(stops[i], stops[i + 1u], s - f32(i));
}

fn pack(rgb: vec3<f32>) -> u32 {
    return pack4x8unorm(vec4<f32>(rgb, 1.0));
}

fn max_of(slot: u32) -> f32 {
    return max(bitcast<f32>(atomicLoad(&stats[slot])), 1e-30);
}

// (v / max)^gamma, 0 for v ≤ 0.
fn scaled(v: f32, slot: u32) -> f32 {
    if (!(v > 0.0)) {
        return 0.0;
    }
    return pow(min(v / max_of(slot), 1.0), u.gamma);
}

fn density_colour(v: f32) -> vec3<f32> {
    return density_map(scaled(v, 0u));
}

@compute @workgroup_size(64)
fn clear_counts(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i < u.width * u.height) {
        atomicStore(&counts[i], 0u);
    }
    if (i == 0u) {
        atomicStore(&stats[2], 0u);
    }
}

@compute @workgroup_size(64)
fn histogram(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= u.n_particles) {
        return;
    }
    let s = i * u.particle_stride;
    if (u.particle_class != ALL_CLASSES && u32(src_a[s + 2u]) != u.particle_class) {
        return;
    }
    atomicAdd(&stats[2], 1u);
    let fx = (src_a[s] - u.x_min) / u.pw;
    let fy = (u.y_max - src_a[s + 1u]) / u.ph;
    // NaN fails every comparison, so a diverged particle is dropped like one outside.
    if (fx >= 0.0 && fx < f32(u.width) && fy >= 0.0 && fy < f32(u.height)) {
        let p = min(u32(fx), u.width - 1u) + min(u32(fy), u.height - 1u) * u.width;
        atomicAdd(&counts[p], 1u);
    }
}

@compute @workgroup_size(8, 8)
fn particle_density(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= u.width || gid.y >= u.height) {
        return;
    }
    let r = i32(u.smooth_radius);
    var acc = 0.0;
    for (var dy = -r; dy <= r; dy++) {
        let qy = i32(gid.y) + dy;
        if (qy < 0 || qy >= i32(u.height)) {
            continue;
        }
        for (var dx = -r; dx <= r; dx++) {
            let qx = i32(gid.x) + dx;
            if (qx < 0 || qx >= i32(u.width)) {
                continue;
            }
            let c = atomicLoad(&counts[u32(qy) * u.width + u32(qx)]);
            if (c > 0u) {
                acc += f32(c) * exp(-f32(dx * dx + dy * dy) * u.smooth_inv_two_var);
            }
        }
    }
    let p = gid.y * u.width + gid.x;
    let n = f32(max(atomicLoad(&stats[2]), 1u));
    let d = acc * u.smooth_norm * u.hist_scale / n;
    values[p] = d;
    image[p] = pack(density_colour(d));
}

@compute @workgroup_size(1)
fn clear_density_max() {
    atomicStore(&stats[0], 0u);
}

@compute @workgroup_size(1)
fn clear_arrow_max() {
    atomicStore(&stats[1], 0u);
}

@compute @workgroup_size(8, 8)
fn exact_density(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if (lid == 0u) {
        atomicStore(&wg_max, 0u);
    }
    workgroupBarrier();
    if (gid.x < u.width && gid.y < u.height) {
        let p = gid.y * u.width + gid.x;
        let d = exp(src_a[3u * p + 2u]);
        values[p] = d;
        // Non-negative f32 values order like their bits.
        if (d > 0.0 && d <= 3.0e38) {
            atomicMax(&wg_max, bitcast<u32>(d));
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        atomicMax(&stats[0], atomicLoad(&wg_max));
    }
}

@compute @workgroup_size(8, 8)
fn colour_exact(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= u.width || gid.y >= u.height) {
        return;
    }
    let p = gid.y * u.width + gid.x;
    image[p] = pack(density_colour(src_a[p]));
}

@compute @workgroup_size(64)
fn arrow_vectors(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= u.grid * u.grid) {
        return;
    }
    var eps_l = vec2<f32>(src_a[2u * i], src_a[2u * i + 1u]);
    var eps_e = vec2<f32>(src_b[3u * i], src_b[3u * i + 1u]);
    if (u.guided == 1u) {
        // Classifier-free guidance (Ho & Salimans 2022): ε_∅ + w(ε_y − ε_∅); for the exact
        // scores that is −√(1−ᾱ)∇log(q(x_t)^(1−w) q(x_t | y)^w).
        let g2 = u.grid * u.grid;
        let eps_ly = vec2<f32>(src_a[2u * (g2 + i)], src_a[2u * (g2 + i) + 1u]);
        let eps_ey = vec2<f32>(src_c[3u * i], src_c[3u * i + 1u]);
        eps_l += u.guidance * (eps_ly - eps_l);
        eps_e += u.guidance * (eps_ey - eps_e);
    }
    let s_l = -eps_l * u.inv_sqrt_one_minus_ab;
    let s_e = -eps_e * u.inv_sqrt_one_minus_ab;
    let o = ARROW_STRIDE * i;
    values[o] = s_l.x;
    values[o + 1u] = s_l.y;
    values[o + 2u] = s_e.x;
    values[o + 3u] = s_e.y;
    values[o + 4u] = length(eps_l - eps_e);
    let m = max(length(s_l), length(s_e));
    if (m > 0.0 && m <= 3.0e38) {
        atomicMax(&stats[1], bitcast<u32>(m));
    }
}

// Coverage (0..1, about one pixel of anti-aliasing) of pixel centre `c` by the arrows of the
// 3×3 cells around it; `which` = 0 for s_θ, 2 for s*.
fn arrow_coverage(c: vec2<f32>, which: u32) -> f32 {
    let g = i32(u.grid);
    let cell = vec2<f32>(f32(u.width), f32(u.height)) / f32(u.grid);
    let cmin = min(cell.x, cell.y);
    let smax = max_of(1u);
    let half_t = max(0.5, 0.035 * cmin);
    let own = vec2<i32>(floor(c / cell));
    var cov = 0.0;
    for (var oy = -1; oy <= 1; oy++) {
        for (var ox = -1; ox <= 1; ox++) {
            let a = own + vec2<i32>(ox, oy);
            if (a.x < 0 || a.y < 0 || a.x >= g || a.y >= g) {
                continue;
            }
            let k = ARROW_STRIDE * (u32(a.y) * u.grid + u32(a.x)) + which;
            let s = vec2<f32>(values[k], values[k + 1u]);
            let n = length(s);
            if (!(n > 0.0 && n <= 3.0e38)) {
                continue;
            }
            let len = 0.9 * cmin * pow(min(n / smax, 1.0), u.arrow_gamma);
            if (len < 1.0) {
                continue;
            }
            // World y points up, pixel y down.
            let d = normalize(vec2<f32>(s.x / u.pw, -s.y / u.ph));
            let anchor = (vec2<f32>(a) + 0.5) * cell;
            let tip = anchor + 0.5 * len * d;
            let tail = anchor - 0.5 * len * d;
            let head = min(0.4 * len, 0.3 * cmin);
            let half_w = 0.55 * head;
            // Shaft: distance to the segment tail → base of the head.
            let base = tip - head * d;
            let ab = base - tail;
            let h = clamp(dot(c - tail, ab) / max(dot(ab, ab), 1e-12), 0.0, 1.0);
            let dist = length(c - tail - h * ab);
            cov = max(cov, clamp(half_t + 0.5 - dist, 0.0, 1.0));
            // Head: the triangle tip, base ± half_w, in the arrow's frame.
            let rel = c - tip;
            let along = -dot(rel, d);
            let across = abs(rel.x * d.y - rel.y * d.x);
            let edge = (along * half_w / head - across) * head / length(vec2<f32>(head, half_w));
            let inside = min(edge, head - along);
            cov = max(cov, clamp(inside + 0.5, 0.0, 1.0));
        }
    }
    return cov;
}

@compute @workgroup_size(8, 8)
fn draw_learned(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= u.width || gid.y >= u.height) {
        return;
    }
    let c = vec2<f32>(gid.xy) + 0.5;
    // ‖ε_θ − ε*‖ bilinear between the arrow anchors (clamped at the border).
    let cell = vec2<f32>(f32(u.width), f32(u.height)) / f32(u.grid);
    let gmax = f32(u.grid - 1u);
    let f = clamp(c / cell - 0.5, vec2<f32>(0.0), vec2<f32>(gmax));
    let i0 = vec2<u32>(floor(f));
    let i1 = min(i0 + 1u, vec2<u32>(u.grid - 1u));
    let w = f - vec2<f32>(i0);
    let e00 = values[ARROW_STRIDE * (i0.y * u.grid + i0.x) + 4u];
    let e10 = values[ARROW_STRIDE * (i0.y * u.grid + i1.x) + 4u];
    let e01 = values[ARROW_STRIDE * (i1.y * u.grid + i0.x) + 4u];
    let e11 = values[ARROW_STRIDE * (i1.y * u.grid + i1.x) + 4u];
    let err = mix(mix(e00, e10, w.x), mix(e01, e11, w.x), w.y);
    let bg = error_map(err / u.err_max);
    let rgb = mix(bg, LEARNED_ARROW, arrow_coverage(c, 0u));
    image[gid.y * u.width + gid.x] = pack(rgb);
}

@compute @workgroup_size(8, 8)
fn draw_exact(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= u.width || gid.y >= u.height) {
        return;
    }
    let c = vec2<f32>(gid.xy) + 0.5;
    let p = gid.y * u.width + gid.x;
    let bg = density_colour(src_b[p]);
    let rgb = mix(bg, EXACT_ARROW, arrow_coverage(c, 2u));
    image[p] = pack(rgb);
}
