//! kakusan (拡散): DDPM (Ho, Jain & Abbeel, 2020) with hand-written WGSL compute shaders,
//! natively through wgpu and in the browser through WebGPU.
//!
//! Layers, bottom up: [`gpu`] (context, pipeline cache, programs, readback), [`ops`] (one
//! module per kernel family: launcher + CPU reference + tests), [`model`] (diffusers config
//! and weights), [`unet`] (the network as one recorded program), [`diffusion`] (schedules
//! and samplers). The native command line lives in `cli`.

// wgpu's handles are Send + Sync natively but not on wasm32 (single-threaded there); the
// same Arc-based code serves both, so this lint only fires, harmlessly, on wasm32.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub mod diffusion;
pub mod error;
pub mod gpu;
pub mod lab;
pub mod model;
pub mod ops;
pub mod rng;
pub mod shaders;
pub mod train;
pub mod unet;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
#[cfg(not(target_arch = "wasm32"))]
pub mod data;
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
