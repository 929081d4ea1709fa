//! Field views of the 2-D lab, rendered on the GPU into RGBA8 images that stay in storage
//! buffers (one u32 per pixel, `pack4x8unorm` = bytes r, g, b, a in memory, row 0 = top), so
//! the page draws them on its WebGPU canvas with [`FieldBlit`] and nothing is read back per
//! frame. Kernels: `shaders/lab_field.wgsl`; blit: `shaders/lab_blit.wgsl`.
//!
//! Four panels ([`Panel`]) over one world rectangle ([`View`]; pixel (px, py) covers
//! x ∈ [x_min + px·pw, x_min + (px+1)·pw), y ∈ (y_max − (py+1)·ph, y_max − py·ph], pw and ph
//! the world size of a pixel):
//! - [`Panel::ParticleDensity`]: a 2-D histogram of particle positions (atomics; optionally
//!   smoothed by a Gaussian of `smooth_px` pixels), as a density count/(N·pw·ph);
//! - [`Panel::ExactDensity`]: q(x_t) = (1/N) Σ_i N(√ᾱ_t x_i, (1−ᾱ_t) I) at the pixel centres
//!   (the exact-score kernel of [`super::score`]);
//!
//!   both with one colour map and one scale — the maximum of q(x_t) over the view, colour =
//!   map((v/max)^gamma) — so the two are directly comparable;
//! - [`Panel::LearnedScore`]: the learned score s_θ = −ε_θ(x, t)/√(1−ᾱ_t) (ε-prediction is
//!   denoising score matching, Ho et al. 2020 §3.2) as arrows on a G×G grid, over a heat map
//!   of ‖ε_θ − ε*‖ (bilinear between the arrows, saturating at `err_max`);
//! - [`Panel::ExactScore`]: the exact score s* = −ε*/√(1−ᾱ_t) as arrows over the exact density.
//!
//! With a class y shown ([`FieldParams::class`]) the densities are those of class y:
//! q(x_t | y), the mixture over class y's points alone, and the histogram of class y's
//! particles; the arrows are classifier-free guided. Switching class writes uniforms only
//! (one exact and one arrows program is recorded per class).
//!
//! Arrows are centred on their grid cell and point along the score (uphill in density); their
//! length is normalised for readability: 0.9·cell·(‖s‖/max ‖s‖)^arrow_gamma, with one max over
//! both arrow panels (so learned and exact arrows compare), arrow_gamma = 0.5 by default
//! (0: all arrows the same length, 1: proportional to ‖s‖).
//!
//! Use (the page): make [`FieldViews::new`] once per view size (every buffer is allocated
//! there and the three programs are recorded); [`FieldViews::bind_particles`] /
//! [`FieldViews::bind_model`] / [`FieldViews::bind_data`] when the particle buffer, the
//! weights or the data set is replaced (records bind groups, creates no buffer);
//! [`FieldViews::update`] when t or a display setting changes (writes uniforms and the arrow
//! grid's rows only); then each frame encode [`FieldViews::exact_program`] (after an update:
//! q(x_t) on every pixel, the costly one), [`FieldViews::arrows_program`] (after an update or
//! when the weights changed) and [`FieldViews::particles_program`] (every frame), in that
//! order (the particle density uses the exact density's scale), or all three with
//! [`FieldViews::encode`]. Re-encoding creates nothing. [`FieldBlit`] draws a
//! panel into a viewport of the caller's render pass.

use crate::diffusion::schedule::Schedule;
use crate::error::{Error, Result};
use crate::gpu::blit::BlitPipeline;
use crate::gpu::{grid_1d, DispatchDesc, GpuContext, Params, Program, Tensor};
use crate::shaders::{LAB_BLIT, LAB_FIELD};

use super::mlp;
use super::score::ExactScore;

/// Largest image side in pixels.
pub const MAX_SIDE: u32 = 4096;
/// Largest number of arrows per side.
pub const MAX_GRID: usize = 128;
/// Largest histogram smoothing σ in pixels (the kernel reaches 3σ).
pub const MAX_SMOOTH_PX: f32 = 5.0;
/// Largest |w| of the guided score panels.
pub const MAX_GUIDANCE: f32 = 100.0;
/// Floats per arrow in [`FieldViews::arrows`]: (s_θ.x, s_θ.y, s*.x, s*.y, ‖ε_θ − ε*‖).
pub const ARROW_STRIDE: usize = 5;
/// `particle_class` of lab_field.wgsl's uniforms when every particle enters the histogram.
const ALL_CLASSES: u32 = u32::MAX;

/// A world rectangle drawn into a `width` × `height` image (row 0 = top = `y_max`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub x_min: f32,
    pub x_max: f32,
    pub y_min: f32,
    pub y_max: f32,
    pub width: u32,
    pub height: u32,
}

impl View {
    /// [−extent, extent]² in a `side` × `side` image.
    pub fn square(extent: f32, side: u32) -> View {
        View {
            x_min: -extent,
            x_max: extent,
            y_min: -extent,
            y_max: extent,
            width: side,
            height: side,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let finite = [self.x_min, self.x_max, self.y_min, self.y_max]
            .iter()
            .all(|v| v.is_finite());
        if !finite || self.x_min >= self.x_max || self.y_min >= self.y_max {
            return Err(Error::config(format!(
                "field view: the world rectangle x [{}, {}], y [{}, {}] must be finite and non-empty",
                self.x_min, self.x_max, self.y_min, self.y_max
            )));
        }
        if self.width == 0 || self.height == 0 || self.width > MAX_SIDE || self.height > MAX_SIDE {
            return Err(Error::config(format!(
                "field view: {}×{} pixels; each side must be 1 to {MAX_SIDE}",
                self.width, self.height
            )));
        }
        Ok(())
    }

    pub fn pixels(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// World width of one pixel (pw).
    pub fn pixel_width(&self) -> f64 {
        (self.x_max as f64 - self.x_min as f64) / self.width as f64
    }

    /// World height of one pixel (ph).
    pub fn pixel_height(&self) -> f64 {
        (self.y_max as f64 - self.y_min as f64) / self.height as f64
    }

    /// World coordinates of the centre of pixel (px, py).
    pub fn pixel_center(&self, px: u32, py: u32) -> [f64; 2] {
        [
            self.x_min as f64 + (px as f64 + 0.5) * self.pixel_width(),
            self.y_max as f64 - (py as f64 + 0.5) * self.pixel_height(),
        ]
    }

    /// The pixel that contains world point `p`, if any.
    pub fn pixel_of(&self, p: [f64; 2]) -> Option<(u32, u32)> {
        let fx = (p[0] - self.x_min as f64) / self.pixel_width();
        let fy = (self.y_max as f64 - p[1]) / self.pixel_height();
        if fx >= 0.0 && fx < self.width as f64 && fy >= 0.0 && fy < self.height as f64 {
            Some((fx as u32, fy as u32))
        } else {
            None
        }
    }

    /// World position of arrow (gx, gy) of a `grid` × `grid` arrow field: the centre of its
    /// cell, gy = 0 at the top. Arrow index = gy·grid + gx.
    pub fn arrow_anchor(&self, grid: usize, gx: usize, gy: usize) -> [f64; 2] {
        let cw = (self.x_max as f64 - self.x_min as f64) / grid as f64;
        let ch = (self.y_max as f64 - self.y_min as f64) / grid as f64;
        [
            self.x_min as f64 + (gx as f64 + 0.5) * cw,
            self.y_max as f64 - (gy as f64 + 0.5) * ch,
        ]
    }
}

/// What the views show at the current frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldParams {
    /// Timestep given to ε_θ.
    pub t: usize,
    /// ᾱ_t, in (0, 1).
    pub alpha_bar: f64,
    /// Class shown; `None` = all points (the null class: unconditional ε_θ against the
    /// exact score of all data points, q(x_t) and every particle). `Some(y)`: the score panels
    /// compare the guided ε_∅ + w(ε_y − ε_∅) with the same combination of exact scores, ε*_∅
    /// (all points) and ε*_y (class y's points, [`FieldViews::bind_classes`]); the exact
    /// density (both density backgrounds) is q(x_t | y), the mixture over class y's points
    /// alone; the particle histogram counts only the particles of class y (rows (x, y,
    /// class, ·) of an (n, 4) buffer; (n, 2) positions have no class and all count).
    pub class: Option<u32>,
    /// Guidance scale w of the class's arrows (1 = the class's own conditional score).
    pub guidance: f32,
    /// Density colour = map((v / max q)^gamma).
    pub gamma: f32,
    /// σ of the histogram's Gaussian smoothing in pixels (0 = raw counts), ≤ [`MAX_SMOOTH_PX`].
    pub smooth_px: f32,
    /// ‖ε_θ − ε*‖ at which the error map saturates.
    pub err_max: f32,
    /// Arrow length exponent (see the module doc).
    pub arrow_gamma: f32,
}

impl FieldParams {
    /// Timestep `t` of `schedule`, default display settings.
    pub fn at(schedule: &Schedule, t: usize) -> Result<FieldParams> {
        let ac = &schedule.alphas_cumprod;
        let alpha_bar = *ac.get(t).ok_or_else(|| {
            Error::config(format!("field view: t = {t} is past T = {}", ac.len()))
        })?;
        Ok(FieldParams {
            t,
            alpha_bar,
            class: None,
            guidance: 1.0,
            gamma: 0.5,
            smooth_px: 1.0,
            err_max: 1.0,
            arrow_gamma: 0.5,
        })
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.alpha_bar > 0.0 && self.alpha_bar < 1.0) {
            return Err(Error::config(format!(
                "field view: ᾱ must lie in (0, 1), got {}",
                self.alpha_bar
            )));
        }
        let ok = |v: f32| v.is_finite() && v >= 0.0;
        if !(ok(self.gamma) && self.gamma > 0.0 && ok(self.arrow_gamma)) {
            return Err(Error::config(format!(
                "field view: gamma {} must be > 0 and arrow_gamma {} ≥ 0",
                self.gamma, self.arrow_gamma
            )));
        }
        if !(ok(self.err_max) && self.err_max > 0.0) {
            return Err(Error::config(format!(
                "field view: err_max must be > 0, got {}",
                self.err_max
            )));
        }
        if !(self.guidance.is_finite() && self.guidance.abs() <= MAX_GUIDANCE) {
            return Err(Error::config(format!(
                "field view: guidance w must lie in [−{MAX_GUIDANCE}, {MAX_GUIDANCE}], got {}",
                self.guidance
            )));
        }
        if !(ok(self.smooth_px) && self.smooth_px <= MAX_SMOOTH_PX) {
            return Err(Error::config(format!(
                "field view: smoothing σ must be 0 to {MAX_SMOOTH_PX} pixels, got {}",
                self.smooth_px
            )));
        }
        Ok(())
    }
}

/// The four images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    ParticleDensity,
    ExactDensity,
    LearnedScore,
    ExactScore,
}

impl Panel {
    pub const ALL: [Panel; 4] = [
        Panel::ParticleDensity,
        Panel::ExactDensity,
        Panel::LearnedScore,
        Panel::ExactScore,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

/// Mirrors `Uniforms` in lab_field.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct FieldUniforms {
    width: u32,
    height: u32,
    n_particles: u32,
    particle_stride: u32,
    grid: u32,
    smooth_radius: u32,
    particle_class: u32,
    _pad0: u32,
    x_min: f32,
    y_max: f32,
    pw: f32,
    ph: f32,
    hist_scale: f32,
    smooth_inv_two_var: f32,
    smooth_norm: f32,
    gamma: f32,
    err_max: f32,
    arrow_gamma: f32,
    inv_sqrt_one_minus_ab: f32,
    guidance: f32,
    guided: u32,
    _pad1: [u32; 3],
}

/// The histogram's Gaussian kernel: (radius in pixels, 1/(2σ²), 1/Σ weights). The weights are
/// normalised over the whole (2r+1)² kernel, so mass near the border leaks out of the view.
pub fn smoothing_kernel(smooth_px: f32) -> (u32, f64, f64) {
    if smooth_px <= 0.0 {
        return (0, 0.0, 1.0);
    }
    let s = smooth_px as f64;
    let r = (3.0 * s).ceil() as i64;
    let inv = 1.0 / (2.0 * s * s);
    let mut sum = 0.0;
    for dy in -r..=r {
        for dx in -r..=r {
            sum += (-((dx * dx + dy * dy) as f64) * inv).exp();
        }
    }
    (r as u32, inv, 1.0 / sum)
}

const DENSITY_STOPS: [[f64; 3]; 5] = [
    [0.03, 0.03, 0.08],
    [0.12, 0.14, 0.45],
    [0.10, 0.45, 0.78],
    [0.45, 0.80, 0.93],
    [0.96, 0.98, 1.0],
];
const ERROR_STOPS: [[f64; 3]; 5] = [
    [0.03, 0.03, 0.08],
    [0.35, 0.05, 0.12],
    [0.72, 0.12, 0.10],
    [0.95, 0.45, 0.08],
    [1.0, 0.90, 0.45],
];
/// Arrow colours (linear 0..1 as written to the image): learned and exact.
pub const LEARNED_ARROW: [f64; 3] = [0.55, 0.95, 1.0];
pub const EXACT_ARROW: [f64; 3] = [1.0, 0.62, 0.12];

fn map(stops: &[[f64; 3]; 5], v: f64) -> [f64; 3] {
    let s = v.clamp(0.0, 1.0) * 4.0;
    let i = (s as usize).min(3);
    let f = s - i as f64;
    std::array::from_fn(|c| stops[i][c] + f * (stops[i + 1][c] - stops[i][c]))
}

/// `pack4x8unorm`'s bytes of an (r, g, b) colour with alpha 1.
pub fn to_rgba8(c: [f64; 3]) -> [u8; 4] {
    let b = |v: f64| (v.clamp(0.0, 1.0) * 255.0 + 0.5).floor() as u8;
    [b(c[0]), b(c[1]), b(c[2]), 255]
}

/// The density colour map (0..1 → colour), for legends.
pub fn density_map(v: f64) -> [f64; 3] {
    map(&DENSITY_STOPS, v)
}

/// The error colour map (0..1 → colour), for legends.
pub fn error_map(v: f64) -> [f64; 3] {
    map(&ERROR_STOPS, v)
}

/// Density `v` as drawn with scale `max` (the maximum of q(x_t) on the view).
pub fn density_colour(v: f64, max: f64, gamma: f64) -> [f64; 3] {
    let x = if v > 0.0 {
        (v / max.max(1e-30)).min(1.0).powf(gamma)
    } else {
        0.0
    };
    density_map(x)
}

/// f64 reference: particles per pixel (row-major, row 0 = top), those outside dropped.
pub fn histogram_ref(view: &View, points: &[[f64; 2]]) -> Vec<u32> {
    let mut counts = vec![0u32; view.pixels()];
    for p in points {
        if let Some((x, y)) = view.pixel_of(*p) {
            counts[(y * view.width + x) as usize] += 1;
        }
    }
    counts
}

/// f64 reference: the (smoothed) histogram as a density, count/(N·pw·ph).
pub fn particle_density_ref(view: &View, counts: &[u32], n: usize, smooth_px: f32) -> Vec<f64> {
    let (r, inv, norm) = smoothing_kernel(smooth_px);
    let (w, h, r) = (view.width as i64, view.height as i64, r as i64);
    let scale = if n == 0 {
        0.0
    } else {
        1.0 / (n as f64 * view.pixel_width() * view.pixel_height())
    };
    let mut out = vec![0.0; view.pixels()];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for dy in -r..=r {
                for dx in -r..=r {
                    let (qx, qy) = (x + dx, y + dy);
                    if qx >= 0 && qy >= 0 && qx < w && qy < h {
                        acc += counts[(qy * w + qx) as usize] as f64
                            * (-((dx * dx + dy * dy) as f64) * inv).exp();
                    }
                }
            }
            out[(y * w + x) as usize] = acc * norm * scale;
        }
    }
    out
}

/// f64 reference: q(x_t) at every pixel centre.
pub fn exact_density_ref(view: &View, data: &[[f64; 2]], alpha_bar: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(view.pixels());
    for py in 0..view.height {
        for px in 0..view.width {
            let (_, log_q) = super::score::exact_ref(data, view.pixel_center(px, py), alpha_bar);
            out.push(log_q.exp());
        }
    }
    out
}

/// The field views' GPU state: every buffer for one view size and grid, and three recorded
/// programs (see the module doc).
pub struct FieldViews {
    view: View,
    grid: usize,
    params: FieldParams,
    exact_score: ExactScore,
    /// Particles bound: (count, floats per row).
    particles: (usize, usize),
    particle_tensor: Option<Tensor>,
    /// Classes of the bound model (None: no model, the learned ε is 0).
    model_classes: Option<usize>,
    model: Option<Tensor>,
    uniforms: wgpu::Buffer,
    score_pixel_uniforms: wgpu::Buffer,
    score_arrow_uniforms: wgpu::Buffer,
    mlp_uniforms: wgpu::Buffer,
    /// (W·H, 2) pixel centres; (W·H, 3) lab_score's output there.
    pixel_queries: Tensor,
    exact_pixels: Tensor,
    /// (H, W) densities.
    exact_density: Tensor,
    particle_density: Tensor,
    /// (H, W) u32 particle counts.
    counts: Tensor,
    /// (4) u32: f32 bits of max q(x_t), max ‖s‖.
    stats: Tensor,
    /// (G², 2) anchors; (2·G², 4) ε_θ input rows (null class, then the shown class); (2·G², 2)
    /// ε_θ; (G², 3) lab_score's output over all points and over the class's points;
    /// (G², ARROW_STRIDE) arrows.
    arrow_queries: Tensor,
    arrow_rows: Tensor,
    eps_learned: Tensor,
    exact_arrows: Tensor,
    exact_arrows_class: Tensor,
    arrows: Tensor,
    /// Per class: the exact score of its points (None: the class has none).
    class_scores: Vec<Option<ClassScore>>,
    images: [Tensor; 4],
    ro_dummy: Tensor,
    rw_dummies: [Tensor; 4],
    mlp_scratch: [Tensor; 3],
    /// The exact program per class: [0] all points, [y + 1] class y's points.
    exact_programs: Vec<Program>,
    /// The arrows program per class: [0] unconditional, [y + 1] class y.
    arrow_programs: Vec<Program>,
    particle_program: Program,
}

/// One class's exact score (the mixture over its points only, q(x_t | y)) and the uniforms of
/// its two query sets (the arrow grid and the pixels).
struct ClassScore {
    score: ExactScore,
    arrow_uniforms: wgpu::Buffer,
    pixel_uniforms: wgpu::Buffer,
}

/// Buffers of one lab_field dispatch by slot; `None` = a dummy.
#[derive(Default)]
struct Slots<'a> {
    src_a: Option<&'a Tensor>,
    src_b: Option<&'a Tensor>,
    src_c: Option<&'a Tensor>,
    counts: Option<&'a Tensor>,
    stats: Option<&'a Tensor>,
    values: Option<&'a Tensor>,
    image: Option<&'a Tensor>,
}

impl FieldViews {
    /// Allocate every buffer for `view` and a `grid` × `grid` arrow field over the data of
    /// `exact`, and record the programs. No particles and no model are bound yet (the
    /// particle panel stays empty and the learned ε is 0 until they are).
    pub fn new(
        ctx: &GpuContext,
        view: View,
        grid: usize,
        exact: &ExactScore,
        params: &FieldParams,
    ) -> Result<FieldViews> {
        view.validate()?;
        params.validate()?;
        if !(1..=MAX_GRID).contains(&grid) {
            return Err(Error::config(format!(
                "field view: {grid} arrows per side; must be 1 to {MAX_GRID}"
            )));
        }
        let hw = view.pixels();
        let mut pq = Vec::with_capacity(2 * hw);
        for py in 0..view.height {
            for px in 0..view.width {
                let c = view.pixel_center(px, py);
                pq.extend([c[0] as f32, c[1] as f32]);
            }
        }
        let g2 = grid * grid;
        let mut aq = Vec::with_capacity(2 * g2);
        for gy in 0..grid {
            for gx in 0..grid {
                let a = view.arrow_anchor(grid, gx, gy);
                aq.extend([a[0] as f32, a[1] as f32]);
            }
        }
        let mut fv = FieldViews {
            view,
            grid,
            params: *params,
            exact_score: exact.clone(),
            particles: (0, 2),
            particle_tensor: None,
            model_classes: None,
            model: None,
            uniforms: ctx.uniform_buffer(std::mem::size_of::<FieldUniforms>()),
            score_pixel_uniforms: ExactScore::uniform_buffer(ctx),
            score_arrow_uniforms: ExactScore::uniform_buffer(ctx),
            mlp_uniforms: ctx.uniform_buffer(mlp::EVAL_UNIFORM_BYTES),
            pixel_queries: ctx.upload(&pq, &[hw, 2])?,
            exact_pixels: ctx.zeros(&[hw, 3])?,
            exact_density: ctx.zeros(&[view.height as usize, view.width as usize])?,
            particle_density: ctx.zeros(&[view.height as usize, view.width as usize])?,
            counts: ctx.zeros(&[view.height as usize, view.width as usize])?,
            stats: ctx.zeros(&[4])?,
            arrow_queries: ctx.upload(&aq, &[g2, 2])?,
            arrow_rows: ctx.zeros(&[2 * g2, 4])?,
            eps_learned: ctx.zeros(&[2 * g2, 2])?,
            exact_arrows: ctx.zeros(&[g2, 3])?,
            exact_arrows_class: ctx.zeros(&[g2, 3])?,
            class_scores: Vec::new(),
            arrows: ctx.zeros(&[g2, ARROW_STRIDE])?,
            images: [
                ctx.zeros(&[view.height as usize, view.width as usize])?,
                ctx.zeros(&[view.height as usize, view.width as usize])?,
                ctx.zeros(&[view.height as usize, view.width as usize])?,
                ctx.zeros(&[view.height as usize, view.width as usize])?,
            ],
            ro_dummy: ctx.zeros(&[4])?,
            rw_dummies: [
                ctx.zeros(&[4])?,
                ctx.zeros(&[4])?,
                ctx.zeros(&[4])?,
                ctx.zeros(&[4])?,
            ],
            mlp_scratch: [ctx.zeros(&[4])?, ctx.zeros(&[4])?, ctx.zeros(&[4])?],
            exact_programs: Vec::new(),
            arrow_programs: Vec::new(),
            particle_program: Program::new(),
        };
        fv.write_uniforms(ctx)?;
        fv.record_exact(ctx)?;
        fv.record_arrows(ctx)?;
        fv.record_particles(ctx)?;
        Ok(fv)
    }

    pub fn view(&self) -> &View {
        &self.view
    }

    pub fn grid(&self) -> usize {
        self.grid
    }

    pub fn params(&self) -> &FieldParams {
        &self.params
    }

    /// The image of `panel`: (height, width) u32, packed RGBA8, row 0 = top.
    pub fn image(&self, panel: Panel) -> &Tensor {
        &self.images[panel.index()]
    }

    /// (H, W) u32 particles per pixel (after the particles program).
    pub fn counts(&self) -> &Tensor {
        &self.counts
    }

    /// (H, W) the particle density drawn (after the particles program).
    pub fn particle_density(&self) -> &Tensor {
        &self.particle_density
    }

    /// (H, W) q(x_t) at the pixel centres (after the exact program).
    pub fn exact_density(&self) -> &Tensor {
        &self.exact_density
    }

    /// (G², [`ARROW_STRIDE`]) the arrows before drawing: s_θ, s*, ‖ε_θ − ε*‖, index
    /// gy·G + gx at [`View::arrow_anchor`] (after the arrows program).
    pub fn arrows(&self) -> &Tensor {
        &self.arrows
    }

    /// (4) u32, f32 bits of the scales the images were drawn with: [0] max q(x_t) on the
    /// pixels (both density panels), [1] max ‖s‖ over both arrow fields (for a legend);
    /// [2] (a plain u32) the particles the histogram counted (N of the particle density).
    pub fn maxima(&self) -> &Tensor {
        &self.stats
    }

    /// Write the uniforms of `params` (t, ᾱ, class, display settings) and the arrow grid's
    /// input rows; creates nothing, records nothing.
    pub fn update(&mut self, ctx: &GpuContext, params: &FieldParams) -> Result<()> {
        params.validate()?;
        self.check_class(params.class, self.model_classes)?;
        self.params = *params;
        self.write_uniforms(ctx)
    }

    /// A class must be one of the model's and have points bound by [`FieldViews::bind_classes`].
    fn check_class(&self, class: Option<u32>, model_classes: Option<usize>) -> Result<()> {
        let Some(c) = class else {
            return Ok(());
        };
        if let Some(nc) = model_classes {
            if c as usize >= nc {
                return Err(Error::config(format!(
                    "field view: class {c} given to a model with {nc} classes"
                )));
            }
        }
        match self.class_scores.get(c as usize) {
            Some(Some(_)) => Ok(()),
            Some(None) => Err(Error::config(format!(
                "field view: class {c} has no data points"
            ))),
            None => Err(Error::config(format!(
                "field view: class {c} given, but the data bound have {} classes",
                self.class_scores.len()
            ))),
        }
    }

    /// The data points of each class (`per_class[y]` = class y's points, empty for a class
    /// without points), for the exact density and score of a class (see
    /// [`FieldParams::class`]). Makes two small uniform buffers per class and re-records the
    /// exact and arrows programs; the shown class is then chosen by [`FieldViews::update`]
    /// without recording anything.
    pub fn bind_classes(&mut self, ctx: &GpuContext, per_class: &[Vec<[f32; 2]>]) -> Result<()> {
        self.class_scores = per_class
            .iter()
            .map(|pts| -> Result<_> {
                if pts.is_empty() {
                    return Ok(None);
                }
                Ok(Some(ClassScore {
                    score: ExactScore::new(ctx, pts)?,
                    arrow_uniforms: ExactScore::uniform_buffer(ctx),
                    pixel_uniforms: ExactScore::uniform_buffer(ctx),
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        if self
            .check_class(self.params.class, self.model_classes)
            .is_err()
        {
            self.params.class = None;
        }
        self.write_uniforms(ctx)?;
        self.record_exact(ctx)?;
        self.record_arrows(ctx)
    }

    /// Draw the density of these particles: (n, 2) positions or (n, 4) rows (x, y, …) such as
    /// [`super::sample::Particles::state`] or `x0_hat`.
    pub fn bind_particles(&mut self, ctx: &GpuContext, particles: &Tensor) -> Result<()> {
        let n = particles.shape.first().copied().unwrap_or(0);
        if particles.shape.len() != 2 || !(particles.shape[1] == 2 || particles.shape[1] == 4) {
            return Err(Error::shape(format!(
                "field view: particles must be (n, 2) or (n, 4), got {:?}",
                particles.shape
            )));
        }
        self.particles = (n, particles.shape[1]);
        self.particle_tensor = Some(particles.clone());
        self.write_uniforms(ctx)?;
        self.record_particles(ctx)
    }

    /// Evaluate ε_θ with these weights (e.g. [`super::train::LabTrainer::ema`]).
    pub fn bind_model(
        &mut self,
        ctx: &GpuContext,
        params: &Tensor,
        num_classes: usize,
    ) -> Result<()> {
        mlp::check_params(params, num_classes)?;
        self.check_class(self.params.class, Some(num_classes))?;
        self.model_classes = Some(num_classes);
        self.model = Some(params.clone());
        self.write_uniforms(ctx)?;
        self.record_arrows(ctx)
    }

    /// Replace the data set (a new [`ExactScore`]); particles and model stay bound, the
    /// classes' points are dropped (the shown class becomes the null class).
    pub fn bind_data(&mut self, ctx: &GpuContext, exact: &ExactScore) -> Result<()> {
        self.exact_score = exact.clone();
        self.class_scores.clear();
        self.params.class = None;
        self.write_uniforms(ctx)?;
        self.record_exact(ctx)?;
        self.record_arrows(ctx)
    }

    /// q(x_t) on every pixel and the exact density image — with a class y shown,
    /// q(x_t | y), the mixture over class y's points only; run after [`FieldViews::update`]
    /// (when t or the class changed).
    pub fn exact_program(&self) -> &Program {
        let i = self.params.class.map_or(0, |c| c as usize + 1);
        &self.exact_programs[i.min(self.exact_programs.len() - 1)]
    }

    /// Both score fields, the error map and the arrow panels (for the shown class); run after
    /// the exact program whenever t, the class or the weights changed.
    pub fn arrows_program(&self) -> &Program {
        let i = self.params.class.map_or(0, |c| c as usize + 1);
        &self.arrow_programs[i.min(self.arrow_programs.len() - 1)]
    }

    /// Histogram and particle density image; run every frame, after the exact program has run
    /// once for the current t.
    pub fn particles_program(&self) -> &Program {
        &self.particle_program
    }

    /// Encode all three programs in order.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        self.exact_program().encode(encoder);
        self.arrows_program().encode(encoder);
        self.particle_program.encode(encoder);
    }

    /// Submit all three programs.
    pub fn run(&self, ctx: &GpuContext) -> Result<()> {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("lab field views"),
            });
        self.encode(&mut encoder);
        ctx.queue.submit([encoder.finish()]);
        ctx.check()
    }

    /// A panel's pixels as RGBA8 bytes (row 0 = top), e.g. for a PNG.
    pub async fn read_image(&self, ctx: &GpuContext, panel: Panel) -> Result<Vec<u8>> {
        let words = ctx.read_u32(self.image(panel)).await?;
        Ok(bytemuck::cast_slice(&words).to_vec())
    }

    fn write_uniforms(&self, ctx: &GpuContext) -> Result<()> {
        let v = &self.view;
        let p = &self.params;
        let (pw, ph) = (v.pixel_width(), v.pixel_height());
        let (radius, inv, norm) = smoothing_kernel(p.smooth_px);
        let (n, stride) = self.particles;
        let uni = FieldUniforms {
            width: v.width,
            height: v.height,
            n_particles: n as u32,
            particle_stride: stride as u32,
            grid: self.grid as u32,
            smooth_radius: radius,
            particle_class: match p.class {
                Some(c) if stride == 4 => c,
                _ => ALL_CLASSES,
            },
            x_min: v.x_min,
            y_max: v.y_max,
            pw: pw as f32,
            ph: ph as f32,
            // The histogram divides by the particles it counted (stats[2]).
            hist_scale: if n == 0 {
                0.0
            } else {
                (1.0 / (pw * ph)) as f32
            },
            smooth_inv_two_var: inv as f32,
            smooth_norm: norm as f32,
            gamma: p.gamma,
            err_max: p.err_max,
            arrow_gamma: p.arrow_gamma,
            inv_sqrt_one_minus_ab: (1.0 / (1.0 - p.alpha_bar).sqrt()) as f32,
            guidance: p.guidance,
            guided: p.class.is_some() as u32,
            ..Default::default()
        };
        ctx.queue
            .write_buffer(&self.uniforms, 0, bytemuck::bytes_of(&uni));
        self.exact_score.write_uniforms(
            ctx,
            &self.score_pixel_uniforms,
            v.pixels(),
            p.alpha_bar,
        )?;
        let g2 = self.grid * self.grid;
        self.exact_score
            .write_uniforms(ctx, &self.score_arrow_uniforms, g2, p.alpha_bar)?;
        for c in self.class_scores.iter().flatten() {
            c.score
                .write_uniforms(ctx, &c.arrow_uniforms, g2, p.alpha_bar)?;
            c.score
                .write_uniforms(ctx, &c.pixel_uniforms, v.pixels(), p.alpha_bar)?;
        }
        let classes = self.model_classes.unwrap_or(0);
        mlp::write_eval_uniforms(ctx, &self.mlp_uniforms, 2 * g2, classes);
        // Rows [0, G²): the null class; [G², 2·G²): the shown class (the null class again
        // when none is shown; the shader then ignores them).
        let null = classes as f32;
        let mut rows = Vec::with_capacity(8 * g2);
        for class in [null, p.class.map_or(null, |c| c as f32)] {
            for gy in 0..self.grid {
                for gx in 0..self.grid {
                    let a = v.arrow_anchor(self.grid, gx, gy);
                    rows.extend([a[0] as f32, a[1] as f32, p.t as f32, class]);
                }
            }
        }
        ctx.write(&self.arrow_rows, &rows)
    }

    fn dispatch(
        &self,
        ctx: &GpuContext,
        program: &mut Program,
        entry: &'static str,
        slots: Slots<'_>,
        workgroups: [u32; 3],
    ) -> Result<()> {
        let ro = |t: Option<&Tensor>| t.map_or(&self.ro_dummy.buffer, |t| &t.buffer).clone();
        let rw = |t: Option<&Tensor>, i: usize| {
            t.map_or(&self.rw_dummies[i].buffer, |t| &t.buffer).clone()
        };
        let (a, b, c3) = (ro(slots.src_a), ro(slots.src_b), ro(slots.src_c));
        let (c, s, v, im) = (
            rw(slots.counts, 0),
            rw(slots.stats, 1),
            rw(slots.values, 2),
            rw(slots.image, 3),
        );
        ctx.record(
            program,
            DispatchDesc {
                label: entry,
                shader: &LAB_FIELD,
                entry,
                constants: &[],
                params: Params::Buffer(&self.uniforms),
                inputs: &[&a, &b, &c3],
                outputs: &[&c, &s, &v, &im],
                workgroups,
            },
        )
    }

    fn pixel_grid(&self) -> [u32; 3] {
        [self.view.width.div_ceil(8), self.view.height.div_ceil(8), 1]
    }

    fn record_exact(&mut self, ctx: &GpuContext) -> Result<()> {
        let mut programs = Vec::with_capacity(self.class_scores.len() + 1);
        programs.push(self.record_exact_for(ctx, &self.exact_score, &self.score_pixel_uniforms)?);
        for c in &self.class_scores {
            programs.push(match c {
                Some(c) => self.record_exact_for(ctx, &c.score, &c.pixel_uniforms)?,
                // Never shown (check_class refuses it): the all-points program's slot.
                None => Program::new(),
            });
        }
        self.exact_programs = programs;
        Ok(())
    }

    /// The exact program over the points of `score` (all, or one class's).
    fn record_exact_for(
        &self,
        ctx: &GpuContext,
        score: &ExactScore,
        uniforms: &wgpu::Buffer,
    ) -> Result<Program> {
        let mut p = Program::new();
        self.dispatch(
            ctx,
            &mut p,
            "clear_density_max",
            Slots {
                stats: Some(&self.stats),
                ..Default::default()
            },
            [1, 1, 1],
        )?;
        score.record_with_uniforms(
            ctx,
            &mut p,
            &self.pixel_queries,
            &self.exact_pixels,
            uniforms,
        )?;
        self.dispatch(
            ctx,
            &mut p,
            "exact_density",
            Slots {
                src_a: Some(&self.exact_pixels),
                stats: Some(&self.stats),
                values: Some(&self.exact_density),
                ..Default::default()
            },
            self.pixel_grid(),
        )?;
        self.dispatch(
            ctx,
            &mut p,
            "colour_exact",
            Slots {
                src_a: Some(&self.exact_density),
                stats: Some(&self.stats),
                image: Some(&self.images[Panel::ExactDensity.index()]),
                ..Default::default()
            },
            self.pixel_grid(),
        )?;
        Ok(p)
    }

    fn record_arrows(&mut self, ctx: &GpuContext) -> Result<()> {
        let g2 = self.grid * self.grid;
        if self.model.is_none() {
            // No model: ε_θ stays 0 (the buffer is never written).
            ctx.write(&self.eps_learned, &vec![0.0; 4 * g2])?;
        }
        let mut programs = Vec::with_capacity(self.class_scores.len() + 1);
        for class in std::iter::once(None).chain(self.class_scores.iter().map(Some)) {
            programs.push(self.record_arrows_for(ctx, class.and_then(|c| c.as_ref()))?);
        }
        self.arrow_programs = programs;
        Ok(())
    }

    /// The arrows program with `class` = (that class's exact score, its uniforms) evaluated
    /// into `exact_arrows_class`, or none (unconditional).
    fn record_arrows_for(&self, ctx: &GpuContext, class: Option<&ClassScore>) -> Result<Program> {
        let g2 = self.grid * self.grid;
        let mut p = Program::new();
        self.dispatch(
            ctx,
            &mut p,
            "clear_arrow_max",
            Slots {
                stats: Some(&self.stats),
                ..Default::default()
            },
            [1, 1, 1],
        )?;
        self.exact_score.record_with_uniforms(
            ctx,
            &mut p,
            &self.arrow_queries,
            &self.exact_arrows,
            &self.score_arrow_uniforms,
        )?;
        if let Some(c) = class {
            c.score.record_with_uniforms(
                ctx,
                &mut p,
                &self.arrow_queries,
                &self.exact_arrows_class,
                &c.arrow_uniforms,
            )?;
        }
        if let (Some(params), Some(nc)) = (&self.model, self.model_classes) {
            mlp::record_eval_forward(
                ctx,
                &mut p,
                params,
                nc,
                &self.arrow_rows,
                &self.eps_learned,
                &self.mlp_uniforms,
                &self.mlp_scratch,
            )?;
        }
        self.dispatch(
            ctx,
            &mut p,
            "arrow_vectors",
            Slots {
                src_a: Some(&self.eps_learned),
                src_b: Some(&self.exact_arrows),
                src_c: Some(&self.exact_arrows_class),
                stats: Some(&self.stats),
                values: Some(&self.arrows),
                ..Default::default()
            },
            grid_1d(g2.div_ceil(64) as u64)?,
        )?;
        self.dispatch(
            ctx,
            &mut p,
            "draw_learned",
            Slots {
                stats: Some(&self.stats),
                values: Some(&self.arrows),
                image: Some(&self.images[Panel::LearnedScore.index()]),
                ..Default::default()
            },
            self.pixel_grid(),
        )?;
        self.dispatch(
            ctx,
            &mut p,
            "draw_exact",
            Slots {
                src_b: Some(&self.exact_density),
                stats: Some(&self.stats),
                values: Some(&self.arrows),
                image: Some(&self.images[Panel::ExactScore.index()]),
                ..Default::default()
            },
            self.pixel_grid(),
        )?;
        Ok(p)
    }

    fn record_particles(&mut self, ctx: &GpuContext) -> Result<()> {
        let mut p = Program::new();
        self.dispatch(
            ctx,
            &mut p,
            "clear_counts",
            Slots {
                counts: Some(&self.counts),
                stats: Some(&self.stats),
                ..Default::default()
            },
            grid_1d(self.view.pixels().div_ceil(64) as u64)?,
        )?;
        if let Some(t) = &self.particle_tensor {
            self.dispatch(
                ctx,
                &mut p,
                "histogram",
                Slots {
                    src_a: Some(t),
                    counts: Some(&self.counts),
                    stats: Some(&self.stats),
                    ..Default::default()
                },
                grid_1d(self.particles.0.div_ceil(64) as u64)?,
            )?;
        }
        self.dispatch(
            ctx,
            &mut p,
            "particle_density",
            Slots {
                counts: Some(&self.counts),
                stats: Some(&self.stats),
                values: Some(&self.particle_density),
                image: Some(&self.images[Panel::ParticleDensity.index()]),
                ..Default::default()
            },
            self.pixel_grid(),
        )?;
        self.particle_program = p;
        Ok(())
    }
}

/// Draws field images into viewports of a caller's render pass (`shaders/lab_blit.wgsl`):
/// one render pipeline for one target format, made once ([`BlitPipeline`]).
pub struct FieldBlit {
    blit: BlitPipeline,
    srgb: bool,
}

/// One image ready to be drawn by [`FieldBlit::draw`] (its bind group and size uniform, made
/// once per image buffer).
pub struct BlitSource {
    bind_group: wgpu::BindGroup,
    _uniforms: wgpu::Buffer,
    pub width: u32,
    pub height: u32,
}

impl FieldBlit {
    /// A blit into render targets of `format`. The images hold sRGB-encoded bytes (as an image
    /// file would); for an `*Srgb` format the shader decodes them first, so the target ends
    /// up with the same bytes.
    pub fn new(ctx: &GpuContext, format: wgpu::TextureFormat) -> FieldBlit {
        FieldBlit {
            blit: BlitPipeline::new(ctx, &LAB_BLIT, 1, format),
            srgb: format.is_srgb(),
        }
    }

    /// Prepare `image` ((height, width) packed RGBA8, e.g. [`FieldViews::image`]) for drawing.
    pub fn source(&self, ctx: &GpuContext, image: &Tensor) -> Result<BlitSource> {
        if image.shape.len() != 2 || image.numel() == 0 {
            return Err(Error::shape(format!(
                "field blit: an image must be (height, width), got {:?}",
                image.shape
            )));
        }
        let (height, width) = (image.shape[0] as u32, image.shape[1] as u32);
        let uniforms = ctx.uniform_buffer(16);
        ctx.queue.write_buffer(
            &uniforms,
            0,
            bytemuck::cast_slice(&[width, height, self.srgb as u32, 0]),
        );
        let bind_group = self.blit.bind_group(ctx, &uniforms, &[&image.buffer])?;
        Ok(BlitSource {
            bind_group,
            _uniforms: uniforms,
            width,
            height,
        })
    }

    /// Draw `src` stretched (nearest pixel) over the rectangle (x, y, w, h) of the pass's
    /// target, in target pixels from the top-left corner. Sets the pass's viewport; a caller
    /// drawing other things afterwards sets its own.
    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>, src: &BlitSource, rect: [f32; 4]) {
        pass.set_viewport(rect[0], rect[1], rect[2], rect[3], 0.0, 1.0);
        self.blit.draw(pass, &src.bind_group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{assert_close, ctx, random};
    use crate::rng::SplitMix64;

    fn params(ab: f64) -> FieldParams {
        FieldParams {
            t: 10,
            alpha_bar: ab,
            class: None,
            guidance: 1.0,
            gamma: 0.5,
            smooth_px: 0.0,
            err_max: 1.0,
            arrow_gamma: 0.5,
        }
    }

    fn data(n: usize, seed: u64) -> Vec<[f64; 2]> {
        random(2 * n, seed)
            .chunks(2)
            .map(|c| [1.5 * c[0] as f64, 1.5 * c[1] as f64])
            .collect()
    }

    fn as_f32(p: &[[f64; 2]]) -> Vec<[f32; 2]> {
        p.iter().map(|p| [p[0] as f32, p[1] as f32]).collect()
    }

    fn image_pixels(ctx: &GpuContext, fv: &FieldViews, panel: Panel) -> Vec<[u8; 4]> {
        block_on(fv.read_image(ctx, panel))
            .unwrap()
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect()
    }

    fn assert_colours(got: &[[u8; 4]], want: &[[u8; 4]], tol: u8, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: pixel count");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            for c in 0..4 {
                assert!(
                    g[c].abs_diff(w[c]) <= tol,
                    "{what}: pixel {i}: got {g:?}, want {w:?} (tolerance {tol})"
                );
            }
        }
    }

    /// Particles at random pixel centres jittered by up to ±0.35 pixel (no point near a bin
    /// edge, where f32 and f64 could disagree), some outside the view and one NaN: the GPU
    /// counts equal the f64 histogram exactly; the (smoothed) densities and the image match the
    /// f64 reference (density colour on the exact density's scale).
    #[test]
    fn particle_histogram_and_density_match_reference() {
        let ctx = ctx();
        let view = View {
            x_min: -2.0,
            x_max: 1.5,
            y_min: -1.0,
            y_max: 2.0,
            width: 37,
            height: 29,
        };
        let pts = data(20, 1);
        let exact = ExactScore::new(&ctx, &as_f32(&pts)).unwrap();
        let mut rng = SplitMix64(7);
        let mut parts: Vec<[f64; 2]> = (0..600)
            .map(|_| {
                // A few pixels cluster so that counts exceed 1.
                let px = (rng.below(view.width as u64 / 3) * 3) as u32;
                let py = rng.below(view.height as u64) as u32;
                let c = view.pixel_center(px, py);
                let j = |r: &mut SplitMix64| (r.next_f64() - 0.5) * 0.7;
                [
                    c[0] + j(&mut rng) * view.pixel_width(),
                    c[1] + j(&mut rng) * view.pixel_height(),
                ]
            })
            .collect();
        parts.extend([[5.0, 0.0], [0.0, -1.5], [-2.5, 3.0]]);
        let mut rows: Vec<f32> = parts
            .iter()
            .flat_map(|p| [p[0] as f32, p[1] as f32, 0.0, 0.0])
            .collect();
        rows.extend([f32::NAN, 0.0, 0.0, 0.0]);
        let n = parts.len() + 1;
        let state = ctx.upload(&rows, &[n, 4]).unwrap();
        let want_counts = histogram_ref(&view, &parts);
        assert_eq!(want_counts.iter().sum::<u32>(), 600);
        let want_exact = exact_density_ref(&view, &pts, 0.6);
        let max_q = want_exact.iter().cloned().fold(0.0, f64::max);
        for smooth in [0.0f32, 1.3] {
            let p = FieldParams {
                smooth_px: smooth,
                ..params(0.6)
            };
            let mut fv = FieldViews::new(&ctx, view, 5, &exact, &p).unwrap();
            fv.bind_particles(&ctx, &state).unwrap();
            fv.run(&ctx).unwrap();
            let counts = block_on(ctx.read_u32(fv.counts())).unwrap();
            assert_eq!(counts, want_counts, "histogram");
            let want = particle_density_ref(&view, &want_counts, n, smooth);
            let got = block_on(ctx.read(fv.particle_density())).unwrap();
            let scale = want.iter().cloned().fold(0.0, f64::max);
            assert_close(&got, &want, 1e-5 * scale, 1e-5, "particle density");
            let colours: Vec<[u8; 4]> = want
                .iter()
                .map(|&v| to_rgba8(density_colour(v, max_q, 0.5)))
                .collect();
            let img = image_pixels(&ctx, &fv, Panel::ParticleDensity);
            assert_colours(&img, &colours, 1, "particle density image");
            // The same positions as an (n, 2) buffer give the same counts.
            let xy: Vec<f32> = rows.chunks(4).flat_map(|r| [r[0], r[1]]).collect();
            let xy = ctx.upload(&xy, &[n, 2]).unwrap();
            fv.bind_particles(&ctx, &xy).unwrap();
            ctx.run(fv.particles_program()).unwrap();
            assert_eq!(block_on(ctx.read_u32(fv.counts())).unwrap(), want_counts);
        }
    }

    /// q(x_t) at every pixel centre and its image against the f64 mixture density.
    #[test]
    fn exact_density_matches_reference() {
        let ctx = ctx();
        let view = View {
            x_min: -2.0,
            x_max: 2.0,
            y_min: -1.5,
            y_max: 1.0,
            width: 23,
            height: 17,
        };
        let pts = data(300, 2);
        let exact = ExactScore::new(&ctx, &as_f32(&pts)).unwrap();
        let mut fv = FieldViews::new(&ctx, view, 3, &exact, &params(0.9)).unwrap();
        for (ab, gamma) in [(0.9, 0.5), (0.2, 1.0)] {
            fv.update(
                &ctx,
                &FieldParams {
                    gamma,
                    ..params(ab)
                },
            )
            .unwrap();
            ctx.run(fv.exact_program()).unwrap();
            let want = exact_density_ref(&view, &pts, ab);
            let got = block_on(ctx.read(fv.exact_density())).unwrap();
            let max_q = want.iter().cloned().fold(0.0, f64::max);
            assert_close(&got, &want, 1e-6 * max_q, 2e-4, "exact density");
            let scale = f32::from_bits(block_on(ctx.read_u32(fv.maxima())).unwrap()[0]);
            assert_close(&[scale], &[max_q], 0.0, 2e-4, "max q(x_t)");
            let colours: Vec<[u8; 4]> = want
                .iter()
                .map(|&v| to_rgba8(density_colour(v, max_q, gamma as f64)))
                .collect();
            let img = image_pixels(&ctx, &fv, Panel::ExactDensity);
            assert_colours(&img, &colours, 1, "exact density image");
        }
    }

    /// For a point mass at a, q(x_t) = N(√ᾱ a, (1−ᾱ)I): every exact arrow is
    /// s* = (√ᾱ a − x)/(1−ᾱ), pointing at √ᾱ a. The learned arrows are −ε_θ/√(1−ᾱ) of the f64
    /// MLP reference, the error column ‖ε_θ − ε*‖. In the images, each arrow's head lies on the
    /// side it points to: a pixel beside the head has the arrow colour, its mirror beside the
    /// tail the background.
    #[test]
    fn point_mass_arrows_point_at_the_scaled_point() {
        let ctx = ctx();
        let view = View::square(2.0, 160);
        let grid = 4;
        let a = [0.6, -0.4];
        let ab = 0.5;
        let exact = ExactScore::new(&ctx, &[[a[0] as f32, a[1] as f32]]).unwrap();
        let p = FieldParams {
            arrow_gamma: 0.0,
            ..params(ab)
        };
        let mut fv = FieldViews::new(&ctx, view, grid, &exact, &p).unwrap();
        let nc = 2;
        let w32 = mlp::init_params(nc, 11);
        let w64: Vec<f64> = w32.iter().map(|&v| v as f64).collect();
        let weights = ctx.upload(&w32, &[w32.len()]).unwrap();
        fv.bind_model(&ctx, &weights, nc).unwrap();
        fv.run(&ctx).unwrap();
        let arrows = block_on(ctx.read(fv.arrows())).unwrap();
        let mut want = Vec::new();
        let mut dirs = Vec::new();
        for gy in 0..grid {
            for gx in 0..grid {
                let x = view.arrow_anchor(grid, gx, gy);
                let s_exact = [
                    (ab.sqrt() * a[0] - x[0]) / (1.0 - ab),
                    (ab.sqrt() * a[1] - x[1]) / (1.0 - ab),
                ];
                let eps_exact = [
                    -s_exact[0] * (1.0 - ab).sqrt(),
                    -s_exact[1] * (1.0 - ab).sqrt(),
                ];
                let eps = mlp::forward_ref(&w64, x, p.t as f64, nc);
                let s_learned = [-eps[0] / (1.0 - ab).sqrt(), -eps[1] / (1.0 - ab).sqrt()];
                let err =
                    ((eps[0] - eps_exact[0]).powi(2) + (eps[1] - eps_exact[1]).powi(2)).sqrt();
                want.extend([s_learned[0], s_learned[1], s_exact[0], s_exact[1], err]);
                dirs.push((x, s_learned, s_exact));
            }
        }
        assert_close(&arrows, &want, 2e-4, 1e-3, "arrow vectors");
        let learned = image_pixels(&ctx, &fv, Panel::LearnedScore);
        let exact_img = image_pixels(&ctx, &fv, Panel::ExactScore);
        let density = image_pixels(&ctx, &fv, Panel::ExactDensity);
        // Geometry of lab_field.wgsl's arrows with arrow_gamma = 0: every arrow is 0.9 cell long.
        let cell = 160.0 / grid as f64;
        let len = 0.9 * cell;
        let head = (0.4 * len).min(0.3 * cell);
        let arrow_rgba = |c: [f64; 3]| to_rgba8(c);
        for (x, s_l, s_e) in dirs {
            let (ax, ay) = view.pixel_of(x).unwrap();
            let anchor = [ax as f64 + 0.5, ay as f64 + 0.5];
            for (s, img, colour) in [
                (s_e, &exact_img, EXACT_ARROW),
                (s_l, &learned, LEARNED_ARROW),
            ] {
                // Pixel direction (y down).
                let n = (s[0] * s[0] + s[1] * s[1]).sqrt();
                let d = [s[0] / n, -s[1] / n];
                let perp = [-d[1], d[0]];
                let at = |along: f64| {
                    let q = [
                        anchor[0] + along * d[0] + 3.0 * perp[0],
                        anchor[1] + along * d[1] + 3.0 * perp[1],
                    ];
                    (q[1].floor() as usize) * 160 + q[0].floor() as usize
                };
                let near_tip = at(0.5 * len - 0.7 * head);
                let near_tail = at(-(0.5 * len - 0.7 * head));
                assert_colours(
                    &[img[near_tip]],
                    &[arrow_rgba(colour)],
                    1,
                    &format!("beside the head of the arrow at {x:?}"),
                );
                if std::ptr::eq(img, &exact_img) {
                    assert_eq!(
                        img[near_tail], density[near_tail],
                        "beside the tail of the exact arrow at {x:?}: the density shows"
                    );
                } else {
                    assert!(
                        img[near_tail][2] < 200,
                        "beside the tail of the learned arrow at {x:?}: {:?} is not the error map",
                        img[near_tail]
                    );
                }
            }
        }
        // A class outside the model is refused.
        let e = fv
            .update(
                &ctx,
                &FieldParams {
                    class: Some(3),
                    ..p
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("class 3"), "{e}");
    }

    /// Per-class arrows: with class y and guidance w both fields are ε_∅ + w(ε_y − ε_∅), the
    /// learned one from the f64 MLP at the null class and at y, the exact one from the exact
    /// score of all points and of class y's points (a guided target; w = 1 is the class's own
    /// conditional score); without a class the guidance is ignored. Switching class or w is an
    /// update: nothing is created. A class without points or outside the model is refused.
    #[test]
    fn class_arrows_are_guided_combinations() {
        let ctx = ctx();
        let view = View::square(2.0, 24);
        let grid = 5;
        let ab = 0.4;
        // Class 0: one point; class 1: two points; class 2: none.
        let per_class: Vec<Vec<[f64; 2]>> =
            vec![vec![[0.9, -0.3]], vec![[-0.8, 0.6], [-0.2, 1.1]], vec![]];
        let all: Vec<[f64; 2]> = per_class.iter().flatten().copied().collect();
        let exact = ExactScore::new(&ctx, &as_f32(&all)).unwrap();
        let mut fv = FieldViews::new(&ctx, view, grid, &exact, &params(ab)).unwrap();
        let nc = 3;
        let mut w32 = mlp::init_params(nc, 5);
        // Stronger class embeddings, so that ε_y differs clearly from ε_∅.
        for v in &mut w32[mlp::OFF_EMB..] {
            *v *= 20.0;
        }
        let w64: Vec<f64> = w32.iter().map(|&v| v as f64).collect();
        let weights = ctx.upload(&w32, &[w32.len()]).unwrap();
        fv.bind_model(&ctx, &weights, nc).unwrap();
        let classes_f32: Vec<Vec<[f32; 2]>> = per_class.iter().map(|c| as_f32(c)).collect();
        fv.bind_classes(&ctx, &classes_f32).unwrap();
        fv.run(&ctx).unwrap();
        block_on(ctx.finish()).unwrap();
        let (bytes, pipelines) = (ctx.allocated_bytes(), ctx.pipeline_count());
        let sq = (1.0 - ab).sqrt();
        for (class, w) in [
            (Some(1u32), 1.0f32),
            (Some(1), 2.5),
            (Some(0), -0.5),
            (None, 3.0),
        ] {
            let p = FieldParams {
                class,
                guidance: w,
                ..params(ab)
            };
            fv.update(&ctx, &p).unwrap();
            ctx.run(fv.arrows_program()).unwrap();
            let got = block_on(ctx.read(fv.arrows())).unwrap();
            let mut want = Vec::new();
            for gy in 0..grid {
                for gx in 0..grid {
                    let x = view.arrow_anchor(grid, gx, gy);
                    let e_null = mlp::forward_ref(&w64, x, p.t as f64, nc);
                    let x_all = super::super::score::exact_ref(&all, x, ab).0;
                    let (eps, eps_exact) = match class {
                        Some(y) => {
                            let e_y = mlp::forward_ref(&w64, x, p.t as f64, y as usize);
                            let x_y =
                                super::super::score::exact_ref(&per_class[y as usize], x, ab).0;
                            let w = w as f64;
                            (
                                [0, 1].map(|d| e_null[d] + w * (e_y[d] - e_null[d])),
                                [0, 1].map(|d| x_all[d] + w * (x_y[d] - x_all[d])),
                            )
                        }
                        None => (e_null, x_all),
                    };
                    let err =
                        ((eps[0] - eps_exact[0]).powi(2) + (eps[1] - eps_exact[1]).powi(2)).sqrt();
                    want.extend([
                        -eps[0] / sq,
                        -eps[1] / sq,
                        -eps_exact[0] / sq,
                        -eps_exact[1] / sq,
                        err,
                    ]);
                }
            }
            assert_close(
                &got,
                &want,
                2e-4,
                1e-3,
                &format!("arrows, class {class:?}, w {w}"),
            );
        }
        block_on(ctx.finish()).unwrap();
        assert_eq!(
            ctx.allocated_bytes(),
            bytes,
            "buffers created by a class switch"
        );
        assert_eq!(
            ctx.pipeline_count(),
            pipelines,
            "pipelines created by a class switch"
        );
        for (class, what) in [(2, "no data points"), (3, "model with 3 classes")] {
            let e = fv
                .update(
                    &ctx,
                    &FieldParams {
                        class: Some(class),
                        ..params(ab)
                    },
                )
                .unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        let e = fv
            .update(
                &ctx,
                &FieldParams {
                    guidance: f32::NAN,
                    ..params(ab)
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("guidance"), "{e}");
    }

    /// With a class y shown, both density panels are class y's: the exact density is
    /// q(x_t | y) (the f64 mixture over class y's points alone, not all points) and the
    /// histogram counts only class y's particles, as a density of those (count/(N_y·pw·ph)).
    /// The backgrounds of the exact score panel follow. Switching class is an update: nothing
    /// is created; back to no class gives q(x_t) and every particle again.
    #[test]
    fn class_density_is_the_class_mixture() {
        let ctx = ctx();
        let view = View {
            x_min: -2.0,
            x_max: 2.0,
            y_min: -1.5,
            y_max: 1.5,
            width: 21,
            height: 16,
        };
        let ab = 0.7;
        // Two classes in different halves of the view, and an empty third one.
        let mut rng = SplitMix64(5);
        let mut per_class: Vec<Vec<[f64; 2]>> = vec![Vec::new(); 3];
        for (c, cx) in [(0usize, -1.0), (1, 0.9)] {
            for _ in 0..40 + 30 * c {
                per_class[c].push([
                    cx + 0.5 * (rng.next_f64() - 0.5),
                    1.8 * (rng.next_f64() - 0.5),
                ]);
            }
        }
        let all: Vec<[f64; 2]> = per_class.iter().flatten().copied().collect();
        let exact = ExactScore::new(&ctx, &as_f32(&all)).unwrap();
        let mut fv = FieldViews::new(&ctx, view, 4, &exact, &params(ab)).unwrap();
        let per_class32: Vec<Vec<[f32; 2]>> = per_class.iter().map(|c| as_f32(c)).collect();
        fv.bind_classes(&ctx, &per_class32).unwrap();
        // Particles: classes 0, 1 and 3 (= the null class: unconditional), some outside.
        let mut rows = Vec::new();
        let mut parts: [Vec<[f64; 2]>; 4] = Default::default();
        for i in 0..500 {
            let c = [0usize, 1, 1, 3][i % 4];
            // Near pixel centres (no f32 rounding across a pixel edge); every 10th outside.
            let px = rng.below(view.width as u64) as u32;
            let py = rng.below(view.height as u64) as u32;
            let m = view.pixel_center(px, py);
            let j = 0.6 * (rng.next_f64() - 0.5);
            let p = if i % 10 == 9 {
                [3.0, m[1]]
            } else {
                [
                    m[0] + j * view.pixel_width(),
                    m[1] - j * view.pixel_height(),
                ]
            };
            parts[c].push(p);
            rows.extend([p[0] as f32, p[1] as f32, c as f32, 0.0]);
        }
        let state = ctx.upload(&rows, &[500, 4]).unwrap();
        fv.bind_particles(&ctx, &state).unwrap();
        fv.run(&ctx).unwrap();
        block_on(ctx.finish()).unwrap();
        let (bytes, pipelines) = (ctx.allocated_bytes(), ctx.pipeline_count());
        for class in [Some(0u32), Some(1), None] {
            fv.update(
                &ctx,
                &FieldParams {
                    class,
                    guidance: 2.0,
                    ..params(ab)
                },
            )
            .unwrap();
            fv.run(&ctx).unwrap();
            let (pts, shown): (&[[f64; 2]], Vec<[f64; 2]>) = match class {
                Some(y) => (&per_class[y as usize], parts[y as usize].clone()),
                None => (&all, parts.concat()),
            };
            let want = exact_density_ref(&view, pts, ab);
            let got = block_on(ctx.read(fv.exact_density())).unwrap();
            let max_q = want.iter().cloned().fold(0.0, f64::max);
            let what = format!("exact density, class {class:?}");
            assert_close(&got, &want, 1e-6 * max_q, 2e-4, &what);
            if class.is_some() {
                // The test can tell: q(x_t) of all points is far from q(x_t | y).
                let all_q = exact_density_ref(&view, &all, ab);
                let off = all_q
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() / max_q)
                    .fold(0.0, f64::max);
                assert!(off > 0.3, "{what}: all points differ by only {off}");
            }
            let scale = f32::from_bits(block_on(ctx.read_u32(fv.maxima())).unwrap()[0]);
            assert_close(&[scale], &[max_q], 0.0, 2e-4, "max q(x_t | y)");
            let counts = histogram_ref(&view, &shown);
            assert_eq!(
                block_on(ctx.read_u32(fv.counts())).unwrap(),
                counts,
                "histogram, class {class:?}"
            );
            let dens = particle_density_ref(&view, &counts, shown.len(), 0.0);
            let got = block_on(ctx.read(fv.particle_density())).unwrap();
            let top = dens.iter().cloned().fold(0.0, f64::max);
            assert_close(
                &got,
                &dens,
                1e-5 * top,
                1e-5,
                "particle density of the class",
            );
            let colours: Vec<[u8; 4]> = want
                .iter()
                .map(|&v| to_rgba8(density_colour(v, max_q, 0.5)))
                .collect();
            let img = image_pixels(&ctx, &fv, Panel::ExactDensity);
            assert_colours(&img, &colours, 1, "exact density image of the class");
        }
        block_on(ctx.finish()).unwrap();
        assert_eq!(
            ctx.allocated_bytes(),
            bytes,
            "buffers created by a class switch"
        );
        assert_eq!(
            ctx.pipeline_count(),
            pipelines,
            "pipelines created by a class switch"
        );
    }

    /// Per-frame work (update + encode) creates no buffer and no pipeline; rebinding particles
    /// creates no buffer either.
    #[test]
    fn frames_create_no_buffers_or_pipelines() {
        let ctx = ctx();
        let exact = ExactScore::new(&ctx, &as_f32(&data(10, 3))).unwrap();
        let mut fv = FieldViews::new(&ctx, View::square(2.0, 16), 4, &exact, &params(0.5)).unwrap();
        let state = ctx.upload(&random(40, 4), &[10, 4]).unwrap();
        let w = ctx
            .upload(&mlp::init_params(0, 1), &[mlp::num_params(0)])
            .unwrap();
        fv.bind_particles(&ctx, &state).unwrap();
        fv.bind_model(&ctx, &w, 0).unwrap();
        fv.run(&ctx).unwrap();
        let (bytes, pipelines) = (ctx.allocated_bytes(), ctx.pipeline_count());
        for t in [3, 7, 9] {
            fv.update(
                &ctx,
                &FieldParams {
                    t,
                    ..params(0.3 + 0.05 * t as f64)
                },
            )
            .unwrap();
            fv.run(&ctx).unwrap();
        }
        fv.bind_particles(&ctx, &state).unwrap();
        fv.run(&ctx).unwrap();
        block_on(ctx.finish()).unwrap();
        assert_eq!(ctx.allocated_bytes(), bytes, "buffers created per frame");
        assert_eq!(
            ctx.pipeline_count(),
            pipelines,
            "pipelines created per frame"
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let ctx = ctx();
        let exact = ExactScore::new(&ctx, &[[0.0, 0.0], [1.0, 1.0]]).unwrap();
        let good = View::square(1.0, 8);
        for (view, what) in [
            (View { width: 0, ..good }, "pixels"),
            (
                View {
                    x_max: -2.0,
                    ..good
                },
                "rectangle",
            ),
            (
                View {
                    y_min: f32::NAN,
                    ..good
                },
                "rectangle",
            ),
            (
                View {
                    height: MAX_SIDE + 1,
                    ..good
                },
                "pixels",
            ),
        ] {
            let e = FieldViews::new(&ctx, view, 4, &exact, &params(0.5))
                .err()
                .unwrap();
            assert!(e.to_string().contains(what), "{e}");
        }
        assert!(FieldViews::new(&ctx, good, 0, &exact, &params(0.5)).is_err());
        assert!(FieldViews::new(&ctx, good, MAX_GRID + 1, &exact, &params(0.5)).is_err());
        for bad in [
            params(1.0),
            params(0.0),
            FieldParams {
                smooth_px: 6.0,
                ..params(0.5)
            },
            FieldParams {
                gamma: 0.0,
                ..params(0.5)
            },
            FieldParams {
                err_max: f32::NAN,
                ..params(0.5)
            },
        ] {
            assert!(
                FieldViews::new(&ctx, good, 4, &exact, &bad).is_err(),
                "{bad:?}"
            );
        }
        let mut fv = FieldViews::new(&ctx, good, 4, &exact, &params(0.5)).unwrap();
        let e = fv
            .bind_particles(&ctx, &ctx.zeros(&[5, 3]).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("(n, 2) or (n, 4)"), "{e}");
        let e = fv
            .bind_model(&ctx, &ctx.zeros(&[7]).unwrap(), 0)
            .unwrap_err();
        assert!(e.to_string().contains("parameters"), "{e}");
        let s = Schedule::new(&crate::diffusion::schedule::SchedulerConfig {
            num_train_timesteps: 10,
            ..Default::default()
        })
        .unwrap();
        assert!(FieldParams::at(&s, 10).is_err());
        assert_eq!(
            FieldParams::at(&s, 3).unwrap().alpha_bar,
            s.alphas_cumprod[3]
        );
    }

    /// Render `draws` (image, rect) into a `w` × `h` texture of `format` cleared to black and
    /// read it back as RGBA bytes.
    fn render(
        ctx: &GpuContext,
        format: wgpu::TextureFormat,
        w: u32,
        h: u32,
        draws: &[(&Tensor, [f32; 4])],
    ) -> Vec<[u8; 4]> {
        let blit = FieldBlit::new(ctx, format);
        let sources: Vec<BlitSource> = draws
            .iter()
            .map(|(img, _)| blit.source(ctx, img).unwrap())
            .collect();
        let tex = ctx.device.create_texture(&wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = tex.create_view(&Default::default());
        let row = (4 * w).div_ceil(256) * 256;
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (row * h) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: None,
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    depth_slice: None,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            for (src, (_, rect)) in sources.iter().zip(draws) {
                blit.draw(&mut pass, src, *rect);
            }
        }
        enc.copy_texture_to_buffer(
            tex.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &staging,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(row),
                    rows_per_image: None,
                },
            },
            wgpu::Extent3d {
                width: w,
                height: h,
                depth_or_array_layers: 1,
            },
        );
        ctx.queue.submit([enc.finish()]);
        staging.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .unwrap();
        ctx.check().unwrap();
        let bytes = staging.get_mapped_range(..).unwrap().to_vec();
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let i = (y * row + 4 * x) as usize;
                out.push([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
            }
        }
        out
    }

    /// Two images drawn into two viewports of one pass (4× and 3× nearest-pixel scaling):
    /// every target pixel is its image pixel (row 0 = top), black elsewhere; an sRGB target
    /// gets the same bytes (to ±1).
    #[test]
    fn blit_draws_images_into_viewports() {
        let ctx = ctx();
        let pixel = |i: u32, k: u32| {
            [
                (37 * i + 11 * k) as u8,
                (91 * i) as u8,
                (200 - 13 * i) as u8,
                255,
            ]
        };
        let pack = |p: [u8; 4]| u32::from_le_bytes(p);
        let (aw, ah, bw, bh) = (5u32, 3u32, 4u32, 4u32);
        let a: Vec<u32> = (0..aw * ah).map(|i| pack(pixel(i, 0))).collect();
        let b: Vec<u32> = (0..bw * bh).map(|i| pack(pixel(i, 1))).collect();
        let ta = ctx.upload_u32(&a, &[ah as usize, aw as usize]).unwrap();
        let tb = ctx.upload_u32(&b, &[bh as usize, bw as usize]).unwrap();
        let (w, h) = (48u32, 16u32);
        for (format, tol) in [
            (wgpu::TextureFormat::Rgba8Unorm, 0),
            (wgpu::TextureFormat::Rgba8UnormSrgb, 1),
        ] {
            let got = render(
                &ctx,
                format,
                w,
                h,
                &[
                    (&ta, [0.0, 0.0, 20.0, 12.0]),
                    (&tb, [30.0, 2.0, 12.0, 12.0]),
                ],
            );
            let mut want = Vec::new();
            for y in 0..h {
                for x in 0..w {
                    want.push(if x < 20 && y < 12 {
                        pixel((y / 4) * aw + x / 4, 0)
                    } else if (30..42).contains(&x) && (2..14).contains(&y) {
                        pixel(((y - 2) / 3) * bw + (x - 30) / 3, 1)
                    } else {
                        [0, 0, 0, 255]
                    });
                }
            }
            assert_colours(&got, &want, tol, &format!("blit into {format:?}"));
        }
        assert!(FieldBlit::new(&ctx, wgpu::TextureFormat::Rgba8Unorm)
            .source(&ctx, &ctx.zeros(&[12]).unwrap())
            .is_err());
    }
}

/// Timings on this machine's adapter (not a test of speed; run by hand:
/// `cargo test --lib lab::field::bench -- --ignored --nocapture`).
#[cfg(test)]
mod bench {
    use super::*;
    use crate::gpu::block_on;
    use crate::gpu::test_util::{ctx, random};
    use crate::lab::data::{generate, Preset};

    #[test]
    #[ignore]
    fn field_view_programs() {
        let ctx = ctx();
        let data = generate(Preset::Moons, 8000, 0, "").unwrap();
        let exact = ExactScore::new(&ctx, &data.points).unwrap();
        let n = 10_000;
        let particles = ctx.upload(&random(4 * n, 1), &[n, 4]).unwrap();
        let weights = ctx
            .upload(&mlp::init_params(0, 1), &[mlp::num_params(0)])
            .unwrap();
        let params = FieldParams {
            t: 30,
            alpha_bar: 0.5,
            class: None,
            guidance: 1.0,
            gamma: 0.5,
            smooth_px: 1.0,
            err_max: 1.0,
            arrow_gamma: 0.5,
        };
        for side in [128, 256] {
            let mut fv =
                FieldViews::new(&ctx, View::square(2.5, side), 25, &exact, &params).unwrap();
            fv.bind_particles(&ctx, &particles).unwrap();
            fv.bind_model(&ctx, &weights, 0).unwrap();
            fv.run(&ctx).unwrap();
            block_on(ctx.finish()).unwrap();
            for (name, program) in [
                ("exact", fv.exact_program()),
                ("arrows", fv.arrows_program()),
                ("particles", fv.particles_program()),
            ] {
                let mut times = Vec::new();
                for _ in 0..3 {
                    let t0 = std::time::Instant::now();
                    ctx.run(program).unwrap();
                    block_on(ctx.finish()).unwrap();
                    times.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                times.sort_by(f64::total_cmp);
                println!(
                    "{side}x{side}, 8000 data points, 25x25 arrows, {n} particles: {name} {:.1} ms (median of 3)",
                    times[1]
                );
            }
        }
    }
}
