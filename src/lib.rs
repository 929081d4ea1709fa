//! kakusan (拡散): DDPM (Ho, Jain & Abbeel, 2020) with hand-written WGSL compute shaders,
//! natively through wgpu and in the browser through WebGPU.
//!
//! Layers, bottom up: [`gpu`] (context, pipeline cache, programs, readback), [`ops`] (one
//! module per kernel family: launcher + CPU reference + tests), `model` (diffusers config and
//! weights), `unet` (the network as a recorded program), `diffusion` (schedules and samplers).

pub mod diffusion;
pub mod error;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod shaders;

pub use error::{Error, Result};
