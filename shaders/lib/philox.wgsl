// Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC 2011), the counter-based generator behind
// the Gaussian noise (noise.wgsl) and the dropout masks (dropout.wgsl); appended to them by
// src/shaders.rs. It MUST match ops::noise::philox4x32_10, the CPU reference that the tests
// compare bit for bit, so that a seed gives the same numbers natively and in the browser.

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

// The 4 words of block b of a stream: counter (b, stream, 0, 0), key (seed lo, seed hi).
fn philox_block(b: u32, stream: u32, seed_lo: u32, seed_hi: u32) -> vec4<u32> {
    return philox4x32_10(vec4<u32>(b, stream, 0u, 0u), vec2<u32>(seed_lo, seed_hi));
}
