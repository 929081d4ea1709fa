// The diffusion lab MLP's sizes and flat parameter layout, shared by mlp.wgsl and
// mlp_update.wgsl; src/lab/mlp.rs has the same constants (its tests compare them with these).

const H: u32 = 128u;
const E: u32 = 32u;
const IN: u32 = 34u; // 2 + E
// Row strides of the activations (input, a1, a2, a3) and deltas (d1, d2, d3, d_out).
const AS: u32 = 418u; // IN + 3H
const DS: u32 = 386u; // 3H + 2

const OFF_W1: u32 = 0u;
const OFF_B1: u32 = 4352u; // H*IN
const OFF_W2: u32 = 4480u;
const OFF_B2: u32 = 20864u;
const OFF_W3: u32 = 20992u;
const OFF_B3: u32 = 37376u;
const OFF_W4: u32 = 37504u;
const OFF_B4: u32 = 37760u;
const OFF_EMB: u32 = 37762u;
