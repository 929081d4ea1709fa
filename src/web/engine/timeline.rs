//! The timeline: recorded x_t / x̂_0 frames of the live run and which one the canvas shows.
//!
//! Frames are GPU buffer copies (`copy_buffer_to_buffer` right after the step was
//! submitted), taken every `record_every` steps so that at most [`MAX_FRAMES`] are kept
//! (and at most [`FRAME_BUDGET_BYTES`]); scrubbing binds a recorded pair to the same render
//! pipeline. Nothing is read back to the CPU while animating.
//!
//! Owns [`Timeline`] (inside the [`Engine`]): the frames, the recording interval and whether
//! the canvas follows the live run. [`run`](super::run) plans it for a new run, clears it on
//! restart and records steps into it; the scrubber ([`scrub`]) picks the frame shown.

use std::sync::Arc;

use leptos::prelude::*;

use super::{ui, with_engine, Engine};

/// At most this many recorded frames (plus memory budget [`FRAME_BUDGET_BYTES`]).
pub const MAX_FRAMES: usize = 100;
const FRAME_BUDGET_BYTES: usize = 48 << 20;

struct Frame {
    /// Tracked by the context: destroyed explicitly once the frame is dropped.
    xt: Arc<wgpu::Buffer>,
    x0: Arc<wgpu::Buffer>,
    /// The timestep x_t is at (None: x_T before the first step).
    t: Option<usize>,
    step: usize,
}

pub struct Timeline {
    frames: Vec<Frame>,
    record_every: usize,
    /// The canvas shows the live run (else the frame the scrubber is at).
    follow: bool,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            frames: Vec::new(),
            record_every: 1,
            follow: true,
        }
    }
}

impl Timeline {
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// Recorded frames and the bytes of their buffers (`window.kakusanMemory()`).
    pub fn held(&self) -> (usize, u64) {
        let bytes = self.frames.iter().map(|f| f.xt.size() + f.x0.size()).sum();
        (self.frames.len(), bytes)
    }

    /// Choose the recording interval for a run of `steps` steps whose x_t takes
    /// `tensor_bytes`.
    pub fn plan(&mut self, tensor_bytes: u64, steps: usize) {
        let frame_bytes = 2 * tensor_bytes as usize;
        let max_frames = (FRAME_BUDGET_BYTES / frame_bytes.max(1)).clamp(2, MAX_FRAMES);
        // Frame 0 is x_T; then every `record_every` steps, and always the last step.
        self.record_every = steps.div_ceil(max_frames - 1).max(1);
    }

    /// Whether step `done` of `total` is recorded.
    pub fn due(&self, done: usize, total: usize) -> bool {
        done.is_multiple_of(self.record_every) || done == total
    }

    pub fn following(&self) -> bool {
        self.follow
    }

    /// Show the live run again (a new or restarted run).
    pub fn follow_live(&mut self) {
        self.follow = true;
    }

    /// The pair to draw for recorded frame `frame`, None for the live run or a frame that
    /// does not exist.
    fn buffers(&self, frame: Option<usize>) -> Option<(&wgpu::Buffer, &wgpu::Buffer)> {
        frame
            .and_then(|i| self.frames.get(i))
            .map(|f| (&*f.xt, &*f.x0))
    }

    /// The frame the canvas shows: None when it follows the live run.
    pub fn shown(&self) -> Option<usize> {
        (!self.follow).then(|| ui().timeline.get_untracked())
    }
}

impl Engine {
    /// Copy the live run's x_t and x̂_0 into a new frame (`t`: where x_t is).
    pub(super) fn record_frame(&mut self, t: Option<usize>) {
        let Some(live) = &self.live else { return };
        let ctx = self.session.ctx();
        let run = &live.run;
        let bytes = run.x_t().bytes();
        let _tag = ctx.tag_scope("timeline");
        let make = || {
            ctx.tracked_buffer(
                "timeline frame",
                bytes,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            )
        };
        let (xt, x0) = (make(), make());
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(&run.x_t().buffer, 0, &xt, 0, bytes);
        enc.copy_buffer_to_buffer(&run.x0().buffer, 0, &x0, 0, bytes);
        ctx.queue.submit([enc.finish()]);
        let timeline = &mut self.timeline;
        timeline.frames.push(Frame {
            xt,
            x0,
            t,
            step: run.steps_done(),
        });
        let ui = ui();
        let n = timeline.frames.len();
        ui.frames.set(n);
        if timeline.follow {
            ui.timeline.set(n - 1);
        }
    }

    /// The (N, C, H, W) shape and the x_t / x̂_0 pair of recorded frame `frame`, or of the
    /// live run (`frame` None or not recorded). None without a run.
    pub(super) fn pair(
        &self,
        frame: Option<usize>,
    ) -> Option<([usize; 4], &wgpu::Buffer, &wgpu::Buffer)> {
        let live = self.live.as_ref()?;
        let (xt, x0) = self
            .timeline
            .buffers(frame)
            .unwrap_or((&*live.run.x_t().buffer, &*live.run.x0().buffer));
        Some((live.shape, xt, x0))
    }

    /// Draw the live run (`frame` None) or a recorded frame onto the canvas.
    pub(super) fn draw(&self, frame: Option<usize>) {
        if let Some((shape, xt, x0)) = self.pair(frame) {
            self.session.present(shape, xt, x0);
        }
    }
}

/// Show recorded frame `i` (following the live run again when it is the last one).
pub fn scrub(i: usize) {
    let ui = ui();
    let r = with_engine(|e| {
        let last = e.timeline.frames.len().saturating_sub(1);
        let i = i.min(last);
        let follow = i == last;
        e.timeline.follow = follow;
        e.draw(if follow { None } else { Some(i) });
        let t_train = e.t_train();
        e.timeline.frames.get(i).map(|f| (f.t, f.step, t_train))
    });
    if let Some(Some((t, step, t_train))) = r {
        ui.timeline.set(i);
        ui.current_t.set(t);
        ui.frame_text.set(match t {
            Some(t) => format!("frame {i}: t = {t}/{t_train}, after step {step}"),
            None => format!("frame {i}: x_T (pure noise)"),
        });
    }
}

/// Draw again what the canvas shows, at the canvas's current size (window or layout
/// changes).
pub fn redraw() {
    with_engine(|e| {
        e.session.resize();
        e.draw(e.timeline.shown());
    });
}
