// Draws the diffusion lab's points onto its WebGPU canvas straight from GPU buffers: the data
// set, the particles of the reverse process (at any recorded step), picked particles'
// trajectories and their Tweedie x̂_0. Nothing is read back to the CPU per frame.
//
// `vs_points` draws one triangle per point (vertices 3i..3i+2 of one draw; a disc or a ring
// cut out of it in `fs_points`);
// `vs_traj` draws one line strip per picked particle through its recorded steps.
// In the forward-process view the data are noised in the vertex shader,
// x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε (Ho et al. 2020, eq. 4), with ε from a hash of the point's index.

struct View {
    // World → clip space: clip = world · scale + offset.
    scale_x: f32,
    scale_y: f32,
    offset_x: f32,
    offset_y: f32,
    // Clip-space size of one canvas pixel.
    px_x: f32,
    px_y: f32,
    // Disc radius in canvas pixels, and opacity.
    radius_px: f32,
    alpha: f32,
    // Point i is pts[(base + i) · stride ..]: (x, y[, class, …]).
    base: u32,
    stride: u32,
    // Points per recorded step (trajectories: row k of the history starts at k · count).
    count: u32,
    // 1: instance i draws point picks[i] (picked particles) instead of point i.
    use_pick: u32,
    // Classes ≥ num_classes are unconditional (one neutral colour).
    num_classes: u32,
    // 1: a ring instead of a disc.
    ring: u32,
    // Forward process: x_t = sqrt_ab · x + sqrt_one_minus_ab · ε (1 and 0 leave x alone).
    sqrt_ab: f32,
    sqrt_one_minus_ab: f32,
    noise_seed: u32,
    // 1: colour = (r, g, b) below instead of the class palette.
    use_color: u32,
    r: f32,
    g: f32,
    b: f32,
    // Particles between two recorded steps: drawn at mix(row base, row prev_base, back), so
    // the picture moves smoothly while the next step is computed (0: row base alone).
    back: f32,
    prev_base: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> view: View;
// pts: (rows, stride) — data (n, 4), particle history (steps + 1, n, 4) or x̂_0 history (steps + 1, n, 4)
@group(0) @binding(1) var<storage, read> pts: array<f32>;
// picks: (k) indices of picked particles (at least one element)
@group(0) @binding(2) var<storage, read> picks: array<u32>;
// layer: (H, W) a static layer (the data points) drawn once into a texture of the target's
// size and format, then copied under the moving points every frame by `vs_layer`/`fs_layer`
// (a bind group of its own: those entry points use nothing else).
@group(0) @binding(3) var layer: texture_2d<f32>;

struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
    @location(1) color: vec4<f32>,
}

fn hash(x: u32) -> u32 {
    // PCG output permutation of an LCG step.
    let s = x * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

fn gauss2(i: u32) -> vec2<f32> {
    let h1 = hash(i ^ hash(view.noise_seed));
    let h2 = hash(h1 + 0x9e3779b9u);
    let u1 = (f32(h1 >> 8u) + 1.0) / 16777217.0;
    let u2 = f32(h2 >> 8u) / 16777216.0;
    let r = sqrt(-2.0 * log(u1));
    let a = 6.2831853 * u2;
    return vec2<f32>(r * cos(a), r * sin(a));
}

fn class_color(c: u32) -> vec3<f32> {
    if c >= view.num_classes {
        return vec3<f32>(0.45, 0.75, 1.0);
    }
    switch c % 8u {
        case 0u: { return vec3<f32>(1.0, 0.42, 0.42); }
        case 1u: { return vec3<f32>(0.35, 0.85, 0.45); }
        case 2u: { return vec3<f32>(0.40, 0.62, 1.0); }
        case 3u: { return vec3<f32>(1.0, 0.80, 0.25); }
        case 4u: { return vec3<f32>(0.85, 0.45, 1.0); }
        case 5u: { return vec3<f32>(0.25, 0.90, 0.90); }
        case 6u: { return vec3<f32>(1.0, 0.60, 0.20); }
        default: { return vec3<f32>(0.95, 0.95, 0.95); }
    }
}

fn to_clip(p: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(p.x * view.scale_x + view.offset_x, p.y * view.scale_y + view.offset_y);
}

fn point_color(o: u32) -> vec4<f32> {
    var rgb = vec3<f32>(view.r, view.g, view.b);
    if view.use_color == 0u {
        var c = view.num_classes;
        if view.stride >= 3u {
            c = u32(max(pts[o + 2u], 0.0));
        }
        rgb = class_color(c);
    }
    return vec4<f32>(rgb, view.alpha);
}

// Vertex 3i + c is corner c of point i's triangle (its incircle is the disc): one
// non-instanced draw of 3n vertices. On SwiftShader instancing costs ~20 µs per instance
// (10,000 instanced quads: ~200 ms), 10,000 quads as 60,000 vertices of one draw ~25 ms,
// as 10,000 triangles ~15 ms (bench/lab_kernels/draw.html).
@vertex
fn vs_points(@builtin(vertex_index) vi: u32) -> VsOut {
    let v = vi % 3u;
    let i = vi / 3u;
    var idx = i;
    if view.use_pick == 1u {
        idx = picks[i];
    }
    let o = (view.base + idx) * view.stride;
    var p = vec2<f32>(pts[o], pts[o + 1u]);
    if view.back > 0.0 {
        let q = (view.prev_base + idx) * view.stride;
        p = mix(p, vec2<f32>(pts[q], pts[q + 1u]), view.back);
    }
    if view.sqrt_one_minus_ab > 0.0 {
        p = view.sqrt_ab * p + view.sqrt_one_minus_ab * gauss2(idx);
    }
    // An equilateral triangle around the unit disc (inradius 1), in disc radii.
    var corners = array<vec2<f32>, 3>(
        vec2<f32>(0.0, 2.0), vec2<f32>(-1.7320508, -1.0), vec2<f32>(1.7320508, -1.0)
    );
    let corner = corners[v];
    let c = to_clip(p) + corner * view.radius_px * vec2<f32>(view.px_x, view.px_y);
    var out: VsOut;
    out.pos = vec4<f32>(c, 0.0, 1.0);
    out.uv = corner;
    out.color = point_color(o);
    return out;
}

@fragment
fn fs_points(in: VsOut) -> @location(0) vec4<f32> {
    let d = length(in.uv);
    if d > 1.0 || (view.ring == 1u && d < 0.55) {
        discard;
    }
    // Soft edge over the outer fifth.
    let a = in.color.a * clamp((1.0 - d) * 5.0, 0.0, 1.0);
    return vec4<f32>(in.color.rgb * a, a);
}

// One triangle covering the target; each pixel takes the layer's texel (same size and format,
// so the bytes are copied as they are).
@vertex
fn vs_layer(@builtin(vertex_index) i: u32) -> @builtin(position) vec4<f32> {
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    return vec4<f32>(uv * 2.0 - 1.0, 0.0, 1.0);
}

@fragment
fn fs_layer(@builtin(position) p: vec4<f32>) -> @location(0) vec4<f32> {
    return textureLoad(layer, vec2<i32>(p.xy), 0);
}

@vertex
fn vs_traj(@builtin(vertex_index) k: u32, @builtin(instance_index) j: u32) -> VsOut {
    let o = (k * view.count + picks[j]) * view.stride;
    let p = vec2<f32>(pts[o], pts[o + 1u]);
    var out: VsOut;
    out.pos = vec4<f32>(to_clip(p), 0.0, 1.0);
    out.uv = vec2<f32>(0.0, 0.0);
    out.color = point_color(o);
    return out;
}

@fragment
fn fs_traj(in: VsOut) -> @location(0) vec4<f32> {
    return vec4<f32>(in.color.rgb * in.color.a, in.color.a);
}
