// Draws one RGBA8 field image of the diffusion lab (src/lab/field.rs, shaders/lab_field.wgsl)
// into the current viewport of a caller's render pass: one triangle covering the viewport,
// nearest-pixel lookup in the storage buffer, so the page composes panels on one canvas
// without copying images to textures or back to the CPU.

struct Params {
    width: u32,
    height: u32,
    // 1 when the target format is *Srgb: the image holds sRGB-encoded bytes, so they are
    // decoded here and the target's encoding writes the same bytes back.
    srgb: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// image: (height, width) packed RGBA8 (pack4x8unorm), row 0 = top
@group(0) @binding(1) var<storage, read> image: array<u32>;

struct VertexOut {
    @builtin(position) pos: vec4<f32>,
    // (0, 0) at the viewport's top-left corner, (1, 1) at its bottom-right.
    @location(0) uv: vec2<f32>,
}

@vertex
fn vs(@builtin(vertex_index) i: u32) -> VertexOut {
    // A triangle covering the viewport: uv (0,0), (2,0), (0,2).
    let uv = vec2<f32>(f32((i << 1u) & 2u), f32(i & 2u));
    var out: VertexOut;
    out.pos = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

@fragment
fn fs(v: VertexOut) -> @location(0) vec4<f32> {
    let px = min(u32(max(v.uv.x, 0.0) * f32(p.width)), p.width - 1u);
    let py = min(u32(max(v.uv.y, 0.0) * f32(p.height)), p.height - 1u);
    var c = unpack4x8unorm(image[py * p.width + px]);
    if (p.srgb == 1u) {
        c = vec4<f32>(srgb_to_linear(c.rgb), c.a);
    }
    return c;
}
