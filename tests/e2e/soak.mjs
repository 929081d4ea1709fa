#!/usr/bin/env node
// Page soak (docs/reliability.md; not part of CI): one page of the browser app in headless
// Chromium, the same launch as tests/e2e/run.mjs, doing RUNS sampling runs in a row —
// changing sampler, steps, seed and batch, restarting, switching between the tiny test model
// and the shipped MNIST model through the page's URL loader, loading a model over WebGPU's
// limits (a clear error, then a good model loads) and losing the GPU device (Restart GPU
// brings the model back), and every LAB_EVERY-th run visiting the Lab tab (train, Reset, another
// preset, train again, back to the sampler) — and checks that memory does not grow.
//
//   node tests/e2e/soak.mjs [--runs 200] [--dist DIR] [--out DIR] [--headed]
//
// The shipped model is loaded (through the page's URL field) for runs 1, 26, 51, ... and the
// test model loaded back after each. Before runs 2, 12, 22, ... the soak visits the Lab tab
// (small sizes from the page URL: LAB_PARAMS): Train until the step counter has moved, Reset,
// switch to the next preset (same point count, unlabelled, so the same buffer sizes), Train
// again, then back to the Sampler tab (which pauses the lab). Memory is measured after a warm-up (the first RUNS/8
// runs, at least 3: past the first switch to the shipped model and back) and after the last run, both times right after the same baseline
// run (test model, DDIM, 4 steps, batch 2, seed 0) and two forced garbage collections:
//   - engine: `window.kakusanMemory()`: run_bytes, the live run's tensors — bound: no growth
//     at all (same model, same settings, same plan) — and engine_bytes, those plus the
//     timeline's frames (how many were recorded when the measurement is taken can differ by a
//     few) — bound: +1 MiB.
//   - engine GPU buffers: `kakusanMemory()`'s gpu_live_bytes, every buffer the engine's context
//     tracks and has not destroyed (sampler run, timeline frames, lab, anything else), with no
//     help from the garbage collector: the engine calls `destroy()` on buffers nothing uses
//     (after the queue's work; the soak waits until none is pending). Bound: +1 MiB (the
//     timeline may hold a few frames more or less). lab_bytes, the lab's share (trainer,
//     data, particles, field views): bound 0 (same sizes at start and end: no growth across
//     resets and preset changes).
//   - browser GPU buffers, counted by wrapping GPUDevice.createBuffer / GPUBuffer.destroy /
//     GPUDevice.destroy and a FinalizationRegistry: gpu_undestroyed_bytes = created -
//     destroyed (explicitly, or with their device) — what would be held without any garbage
//     collection (the ops' small uniform buffers are still left to the collector). Bound:
//     +2 MiB. Reported only: "live" after a forced collection (the registry also reports the
//     wrappers of buffers the engine still uses as collected, so it is not the memory held;
//     see docs/reliability.md).
//   - JS heap (CDP Runtime.getHeapUsage, used size). Bound: +8 MiB.
//   - wasm linear memory (never shrinks: its high-water mark). Bound: +32 MiB.
// Writes target/e2e/soak.json and prints `SOAK: ok` or `SOAK: FAILED (...)`; exit 1 on
// failure (a run that does not finish, an unexpected error, growth beyond a bound).
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import {
  CHROMIUM, CHROMIUM_ARGS, DIST, FIXTURE, HEADED, MODEL_FILES, OUT, errorText, fail, failOnPanic,
  lastPage, log, openPage, opt, prepareModels, probeWebGpu, removeModels, runToDone, setValue,
  shot, sleep, startServer, stopServer, TIMEOUT_MS, visible, waitFor, waitLoaded,
} from "./lib.mjs";

const RUNS = Number(opt("--runs", 200));
const MIB = 1 << 20;
const BOUNDS = {
  run_bytes: 0,
  engine_bytes: 1 * MIB,
  gpu_live_bytes: 1 * MIB,
  lab_bytes: 0,
  gpu_undestroyed_bytes: 2 * MIB,
  js_heap_used: 8 * MIB,
  wasm_memory: 32 * MIB,
};
// The Lab tab is visited before every run i with i % LAB_EVERY === LAB_AT (inside the warm-up,
// so the lab holds its buffers at both measurements).
const LAB_EVERY = 10;
const LAB_AT = 2;
// Small lab sizes (SwiftShader): 500 data points, 200 particles, 5 sampling steps, batch 32.
const LAB_PARAMS = "points=500&particles=200&sample_steps=5&lab_batch=32";
const LAB_PRESETS = ["moons", "spiral", "rings", "checkerboard", "gaussians"];
// Training steps to wait for after each press of Train.
const LAB_STEPS = 5;
// sample_size 136 instead of 16: the attention block at 68x68 needs 4624^2 scores per head
// and sample (2 heads; x2 for classifier-free guidance) = 326 MiB in one storage binding at
// batch 1, over WebGPU's 128 MiB maxStorageBufferBindingSize.
const HUGE_SAMPLE_SIZE = 136;

function prepareHugeModel() {
  const dir = path.join(DIST, "soak-huge-model");
  fs.mkdirSync(dir, { recursive: true });
  for (const f of MODEL_FILES) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
  const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURE, "config.json"), "utf8"));
  cfg.sample_size = HUGE_SAMPLE_SIZE;
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(cfg, null, 2));
}
function removeHugeModel() {
  fs.rmSync(path.join(DIST, "soak-huge-model"), { recursive: true, force: true });
}

/** Counts the page's GPUBuffers (created, destroyed, collected) and finds its wasm memory. */
function instrumentPage() {
  const stats = {
    created: 0, createdBytes: 0, destroyed: 0, destroyedBytes: 0, collected: 0, collectedBytes: 0,
    deviceDestroyedBytes: 0,
  };
  window.__gpuBuffers = stats;
  window.__gpuLiveBytes = () =>
    stats.createdBytes - stats.destroyedBytes - stats.collectedBytes - stats.deviceDestroyedBytes;
  // Without any credit for garbage collection: what explicit destroy() leaves held.
  window.__gpuUndestroyedBytes = () => stats.createdBytes - stats.destroyedBytes - stats.deviceDestroyedBytes;
  for (const name of ["instantiate", "instantiateStreaming"]) {
    const orig = WebAssembly[name];
    WebAssembly[name] = async function (...a) {
      const r = await orig.apply(this, a);
      const inst = r.instance || r;
      if (inst.exports && inst.exports.memory) window.__wasmMemory = inst.exports.memory;
      return r;
    };
  }
  if (typeof GPUDevice === "undefined") return;
  // Records hold no reference to their buffer, so counting never keeps one alive.
  const byDevice = new WeakMap();
  const recordOf = new WeakMap();
  const collected = new FinalizationRegistry((rec) => {
    if (rec.live) {
      rec.live = false;
      rec.set.delete(rec);
      stats.collected++;
      stats.collectedBytes += rec.size;
    }
  });
  const createBuffer = GPUDevice.prototype.createBuffer;
  GPUDevice.prototype.createBuffer = function (desc) {
    const buffer = createBuffer.call(this, desc);
    let set = byDevice.get(this);
    if (!set) byDevice.set(this, (set = new Set()));
    const rec = { size: Number(desc && desc.size) || 0, live: true, set };
    set.add(rec);
    recordOf.set(buffer, rec);
    collected.register(buffer, rec);
    stats.created++;
    stats.createdBytes += rec.size;
    return buffer;
  };
  const destroyBuffer = GPUBuffer.prototype.destroy;
  GPUBuffer.prototype.destroy = function () {
    const rec = recordOf.get(this);
    if (rec && rec.live) {
      rec.live = false;
      rec.set.delete(rec);
      stats.destroyed++;
      stats.destroyedBytes += rec.size;
    }
    return destroyBuffer.call(this);
  };
  const destroyDevice = GPUDevice.prototype.destroy;
  GPUDevice.prototype.destroy = function () {
    const set = byDevice.get(this);
    if (set) {
      for (const rec of set) {
        if (rec.live) {
          rec.live = false;
          stats.deviceDestroyedBytes += rec.size;
        }
      }
      set.clear();
    }
    return destroyDevice.call(this);
  };
}

/** Load a model folder through the page's URL field (#model-url + #model-url-load). */
async function loadUrl(page, url) {
  await setValue(page, "#model-url", url);
  // A DOM click: the model panel may be folded away (a <details>) at this viewport.
  await page.evaluate(() => document.getElementById("model-url-load").click());
  // The name shows "(loading)" first; waitLoaded waits until the model is in.
  await waitFor(`${url} to start loading`, async () => {
    const name = (await page.locator("#model-name").innerText()).trim();
    return name.includes(url) || (await errorText(page));
  }, 20000, 50).catch(() => {});
}

async function applySettings(page, s) {
  for (const [sel, v] of [["#sampler", s.sampler], ["#steps", s.steps], ["#batch", s.batch], ["#seed", s.seed]]) {
    if (v === undefined) continue;
    const cur = await page.locator(sel).inputValue();
    if (String(cur) !== String(v)) await setValue(page, sel, v);
  }
  await sleep(150);
}

async function labAttrs(page) {
  return page.evaluate(() => {
    const p = document.getElementById("lab-panel");
    const r = document.getElementById("lab-rate");
    return {
      state: p ? p.getAttribute("data-state") : null,
      steps: r && r.getAttribute("data-steps") ? Number(r.getAttribute("data-steps")) : null,
    };
  });
}
async function labWait(page, what, ok) {
  return waitFor(`the lab: ${what}`, async () => {
    failOnPanic(page);
    const err = await errorText(page);
    if (err) fail(`#error is visible in the lab: ${err}`);
    const a = await labAttrs(page);
    return ok(a) ? a : false;
  }, TIMEOUT_MS, 200);
}
/** Press #lab-train and wait until the step counter has moved by LAB_STEPS. */
async function labTrain(page) {
  await labWait(page, "ready or paused", (a) => a.state === "ready" || a.state === "paused");
  const from = (await labAttrs(page)).steps || 0;
  await page.evaluate(() => document.getElementById("lab-train").click());
  await labWait(page, "training", (a) => a.state === "training");
  return labWait(page, `${LAB_STEPS} training steps`, (a) => a.steps !== null && a.steps >= from + LAB_STEPS);
}
/**
 * One visit to the Lab tab: Train, Reset, the next preset, Train again, back to the Sampler.
 * Returns what it saw.
 */
async function labVisit(page, visit) {
  const t0 = Date.now();
  await page.evaluate(() => document.getElementById("lab-tab").click());
  await labWait(page, "the lab panel", (a) => a.state !== null && a.state !== "idle");
  const first = await labTrain(page);
  await page.evaluate(() => document.getElementById("lab-reset").click());
  // The counter must read 0 once Reset is done and stay there (a frame awaiting the GPU when
  // Reset lands used to write its stale count back; fixed in the lab's run_loop).
  await labWait(page, "the reset (state ready)", (a) => a.state === "ready");
  let afterReset = (await labAttrs(page)).steps;
  await waitFor("the step counter to stop after Reset", async () => {
    await sleep(1000);
    const now = (await labAttrs(page)).steps;
    const still = now === afterReset;
    afterReset = now;
    return still;
  }, 60000, 0);
  if (afterReset !== 0) fail(`the lab's step counter reads ${afterReset} after Reset, want 0`);
  // The next preset that is not the current one (the same one would not rebuild anything).
  const current = await page.locator("#lab-preset").inputValue();
  let preset = LAB_PRESETS[visit % LAB_PRESETS.length];
  if (preset === current) preset = LAB_PRESETS[(visit + 1) % LAB_PRESETS.length];
  await setValue(page, "#lab-preset", preset);
  await labWait(page, `the ${preset} preset built`, (a) => a.state === "ready" && a.steps === 0);
  const second = await labTrain(page);
  await page.evaluate(() => document.getElementById("sampler-tab").click());
  await waitFor("the lab to pause when hidden", async () => (await labAttrs(page)).state !== "training", 20000, 100);
  await waitFor("the sampler tab", () => visible(page, "#play"), 20000, 100);
  return { preset, steps: [first.steps, second.steps], steps_after_reset: afterReset, ms: Date.now() - t0 };
}

const BASELINE = { sampler: "ddim", steps: 4, batch: 2, seed: 0 };

async function measure(page, cdp, label) {
  await applySettings(page, BASELINE);
  await runToDone(page);
  // Buffers the engine found unused wait for the queue's work before their destroy(); each
  // kakusanMemory() call finishes the ones whose wait is over.
  await waitFor("the engine's pending buffer destroys", () =>
    page.evaluate(() => window.kakusanMemory && window.kakusanMemory().gpu_dying === 0), 20000, 100);
  for (let i = 0; i < 2; i++) {
    await cdp.send("HeapProfiler.collectGarbage");
    await sleep(500); // finalizers run after the collection
  }
  const m = await page.evaluate(() => ({
    engine: typeof window.kakusanMemory === "function" ? window.kakusanMemory() : null,
    browser_live_bytes: window.__gpuLiveBytes ? window.__gpuLiveBytes() : null,
    gpu_undestroyed_bytes: window.__gpuUndestroyedBytes ? window.__gpuUndestroyedBytes() : null,
    gpu_buffers: window.__gpuBuffers ? { ...window.__gpuBuffers } : null,
    wasm_memory: window.__wasmMemory ? window.__wasmMemory.buffer.byteLength : null,
  }));
  const heap = await cdp.send("Runtime.getHeapUsage");
  const r = {
    label,
    at: new Date().toISOString(),
    engine_bytes: m.engine ? m.engine.engine_bytes : null,
    run_bytes: m.engine ? m.engine.run_bytes : null,
    gpu_live_bytes: m.engine ? m.engine.gpu_live_bytes : null,
    lab_bytes: m.engine ? m.engine.lab_bytes : null,
    engine: m.engine,
    gpu_undestroyed_bytes: m.gpu_undestroyed_bytes,
    browser_live_bytes: m.browser_live_bytes,
    gpu_buffers: m.gpu_buffers,
    js_heap_used: heap.usedSize,
    js_heap_total: heap.totalSize,
    wasm_memory: m.wasm_memory,
  };
  const e = m.engine || {};
  const b = m.gpu_buffers || {};
  log(`  memory (${label}): engine ${mib(r.engine_bytes)} (run ${mib(e.run_bytes)}, ` +
    `${e.timeline_frames} frames ${mib(e.timeline_bytes)}); engine GPU buffers live ${e.gpu_live_buffers} ` +
    `${mib(e.gpu_live_bytes)} (sampler ${mib(e.sampler_bytes)}, timeline ${mib(e.timeline_buffer_bytes)}, ` +
    `lab ${mib(e.lab_bytes)}, other ${mib(e.other_bytes)}; on this device ${e.gpu_created} created ` +
    `${mib(e.gpu_created_bytes)}, ${e.gpu_destroyed} destroyed ${mib(e.gpu_destroyed_bytes)}, ` +
    `${e.untracked_created} untracked uniforms ${mib(e.untracked_bytes)}); browser: ${b.created} buffers created ` +
    `${mib(b.createdBytes)}, ${b.destroyed} destroyed ${mib(b.destroyedBytes)}, ${b.collected} collected ` +
    `${mib(b.collectedBytes)}, not destroyed ${mib(r.gpu_undestroyed_bytes)}, live after GC ${mib(r.browser_live_bytes)}; ` +
    `JS heap ${mib(r.js_heap_used)} / ${mib(r.js_heap_total)}, wasm memory ${mib(r.wasm_memory)}`);
  return r;
}
function mib(b) {
  return b === null || b === undefined ? "?" : `${(b / MIB).toFixed(2)} MiB`;
}

/** The settings of run `i`: every sampler, 1-4 steps, batch 1-3, a new seed; every 4th run
 * changes only the seed (the page's restart path, no re-plan). */
function settingsOf(i) {
  if (i % 4 === 3) return { seed: 1000 + i };
  return {
    sampler: ["ddim", "ddpm", "dpm-solver"][i % 3],
    steps: 1 + ((i * 5) % 4),
    batch: 1 + (Math.floor(i / 3) % 3),
    seed: 1000 + i,
  };
}

async function main() {
  if (!(RUNS >= 8)) fail(`--runs ${RUNS}: at least 8`);
  fs.mkdirSync(OUT, { recursive: true });
  prepareModels();
  prepareHugeModel();
  const { base } = await startServer();
  const t0 = Date.now();
  // The shipped model is loaded for one run at runs 1, 1 + EVERY, 1 + 2 EVERY, ...; the
  // warm-up includes the first of them.
  const every = 25;
  const warmup = Math.max(Math.ceil(RUNS / 8), 3);
  const events = new Map([
    [Math.floor(RUNS * 0.3), "huge"],
    [Math.floor(RUNS * 0.55), "device-loss"],
    [Math.floor(RUNS * 0.8), "huge"],
    [Math.floor(RUNS * 0.95), "device-loss"],
  ]);
  const result = { runs: RUNS, warmup, bounds: BOUNDS, events: [], run_ms: [], lab_visits: [], failures: [] };
  let browser = null;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: !HEADED, args: CHROMIUM_ARGS, timeout: 60000 });
    log(`browser: ${CHROMIUM} ${browser.version()}`);
    log(`WebGPU: ${await probeWebGpu(browser, base)}`);
    const page = await openPage(browser, `${base}?model=test-model/&sampler=ddim&steps=2&batch=1&${LAB_PARAMS}`,
      { width: 1280, height: 720 }, instrumentPage);
    // A busy machine renders this page a frame every few seconds (SwiftShader): give
    // Playwright's clicks, which wait for two stable frames, as long as any other wait.
    page.setDefaultTimeout(TIMEOUT_MS);
    const cdp = await page.context().newCDPSession(page);
    await waitLoaded(page, "test-model");
    let model = "test-model/";
    for (let i = 0; i < RUNS; i++) {
      if (i === warmup) result.start = await measure(page, cdp, `start, after ${warmup} warm-up runs`);
      const ev = events.get(i);
      if (ev === "huge") {
        await loadUrl(page, "soak-huge-model/");
        const msg = await waitFor("#error for the model over WebGPU's limits", async () => {
          failOnPanic(page);
          return errorText(page);
        });
        log(`  [${i}] over-limit model: #error ${JSON.stringify(msg.slice(0, 200))}`);
        if (!/storage binding|does not fit|largest buffer/i.test(msg)) fail(`unclear error for the over-limit model: ${msg}`);
        await shot(page, `soak-huge-${i}`);
        // Dismiss it as a user would: otherwise waitLoaded can see this (stale) error before
        // the next load has started and cleared it.
        await page.click("#dismiss-error");
        await loadUrl(page, "test-model/");
        await waitLoaded(page, "test-model");
        model = "test-model/";
        result.events.push({ run: i, event: "over-limit model", error: msg, recovered: true });
      } else if (ev === "device-loss") {
        await page.evaluate(() => window.kakusanSimulateDeviceLoss());
        const msg = await waitFor("#error about the lost device", () => errorText(page));
        if (!/lost/i.test(msg)) fail(`the error does not say the device was lost: ${msg}`);
        if (!(await visible(page, "#restart-device"))) fail("#restart-device is not shown");
        await page.click("#restart-device");
        await waitFor("#error to clear after Restart GPU", async () => !(await errorText(page)));
        await waitLoaded(page, "");
        log(`  [${i}] device loss: ${JSON.stringify(msg.slice(0, 120))}; restarted`);
        result.events.push({ run: i, event: "device loss", error: msg, recovered: true });
      }
      if (i % LAB_EVERY === LAB_AT) {
        const v = await labVisit(page, result.lab_visits.length);
        result.lab_visits.push({ run: i, ...v });
        log(`  [${i}] lab: trained to step ${v.steps[0]}, reset (counter then ${v.steps_after_reset}), ${v.preset}, ` +
          `trained to step ${v.steps[1]} (${(v.ms / 1000).toFixed(1)} s)`);
      }
      const wantModel = i % every === 1 ? "models/mnist/" : "test-model/";
      if (wantModel !== model) {
        await loadUrl(page, wantModel);
        await waitLoaded(page, wantModel.replace(/\/$/, ""));
        model = wantModel;
      }
      const s = model === "models/mnist/" ? { sampler: "ddim", steps: 2, batch: 1, seed: 1000 + i } : settingsOf(i);
      await applySettings(page, s);
      const t = Date.now();
      await runToDone(page);
      result.run_ms.push(Date.now() - t);
      failOnPanic(page);
      if ((i + 1) % 10 === 0 || i === RUNS - 1) {
        const m = await page.evaluate(() => {
          const k = window.kakusanMemory ? window.kakusanMemory() : {};
          return {
            e: k.engine_bytes, live: k.gpu_live_bytes, lab: k.lab_bytes, destroyed: k.gpu_destroyed,
            u: window.__gpuUndestroyedBytes ? window.__gpuUndestroyedBytes() : null,
          };
        });
        log(`[${i + 1}/${RUNS}] ${((Date.now() - t0) / 60000).toFixed(1)} min; ${model} ${JSON.stringify(s)}; ` +
          `engine ${mib(m.e)}, engine GPU buffers live ${mib(m.live)} (lab ${mib(m.lab)}; ${m.destroyed} destroyed on this device), ` +
          `browser GPU buffers not destroyed ${mib(m.u)}`);
      }
    }
    if (model !== "test-model/") {
      await loadUrl(page, "test-model/");
      await waitLoaded(page, "test-model");
    }
    // A last lab visit, so that the lab holds its buffers at the end as at the start (a device
    // loss after the last regular visit drops them with the device).
    const v = await labVisit(page, result.lab_visits.length);
    result.lab_visits.push({ run: RUNS, ...v });
    log(`  [end] lab: trained to step ${v.steps[0]}, reset (counter then ${v.steps_after_reset}), ${v.preset}, ` +
      `trained to step ${v.steps[1]} (${(v.ms / 1000).toFixed(1)} s)`);
    result.end = await measure(page, cdp, `end, after ${RUNS} runs`);
    await shot(page, "soak-end");
    for (const [k, bound] of Object.entries(BOUNDS)) {
      const a = result.start[k];
      const b = result.end[k];
      if (a === null || b === null || a === undefined || b === undefined) {
        result.failures.push(`${k}: not measured`);
      } else if (b - a > bound) {
        result.failures.push(`${k} grew by ${mib(b - a)} (${mib(a)} -> ${mib(b)}), bound ${mib(bound)}`);
      } else {
        log(`  ${k}: ${mib(a)} -> ${mib(b)} (growth ${mib(b - a)}, bound ${mib(bound)}) ok`);
      }
    }
  } catch (e) {
    result.failures.push(e.message.split("\n")[0]);
    log(`FAILED: ${e.stack || e.message}`);
    if (lastPage) {
      try {
        await shot(lastPage, "soak-fail");
      } catch {}
      log("  last console lines:\n    " + lastPage.consoleLog.slice(-15).map((l) => l.split("\n")[0].slice(0, 300)).join("\n    "));
    }
  } finally {
    if (browser) await browser.close().catch(() => {});
    stopServer();
    removeModels();
    removeHugeModel();
  }
  result.minutes = (Date.now() - t0) / 60000;
  result.completed_runs = result.run_ms.length;
  const sorted = [...result.run_ms].sort((a, b) => a - b);
  result.median_run_ms = sorted[Math.floor(sorted.length / 2)] ?? null;
  fs.writeFileSync(path.join(OUT, "soak.json"), JSON.stringify(result, null, 2));
  log(`\n${result.completed_runs}/${RUNS} runs in ${result.minutes.toFixed(1)} min (median run ${result.median_run_ms} ms); ` +
    `${result.events.length} recoveries; ${result.lab_visits.length} lab visits; ` +
    `${path.relative(process.cwd(), path.join(OUT, "soak.json"))}`);
  const g = result.end?.gpu_buffers;
  if (g) {
    log(`browser GPU buffers over the soak: ${g.created} created (${mib(g.createdBytes)}), ${g.destroyed} destroyed ` +
      `explicitly (${mib(g.destroyedBytes)}), ${mib(g.deviceDestroyedBytes)} with lost devices, ${g.collected} collected by GC ` +
      `(${mib(g.collectedBytes)})`);
  }
  if (result.failures.length) {
    log(`SOAK: FAILED (${result.failures.join("; ")})`);
    process.exitCode = 1;
  } else {
    log("SOAK: ok");
  }
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    stopServer();
    removeModels();
    removeHugeModel();
    process.exit(130);
  });
}
main().catch((e) => {
  stopServer();
  console.error(e.stack || e.message);
  process.exit(1);
});
