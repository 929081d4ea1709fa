#!/usr/bin/env node
// End-to-end tests of the browser app (see docs/web.md): serves a `trunk build --release`
// output (dist/) on 127.0.0.1, drives the system Chromium (WebGPU on SwiftShader when there
// is no GPU) with playwright-core, and checks the page through the DOM ids of the app's
// contract. Screenshots of every stage go to target/e2e/.
//
//   node tests/e2e/run.mjs [--dist DIR] [--out DIR] [--only a,b,...] [--headed]
//
// Environment: CHROMIUM (default /usr/bin/chromium), E2E_TIMEOUT_S (default 300: the longest
// wait for one thing to happen; SwiftShader compiles and runs shaders on the CPU).
// Prints `E2E: N passed, M failed` and exits 1 on any failure.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { decodePng, imageDiff, imageStats } from "./png.mjs";
import {
  CHROMIUM, CheckFailed, CHROMIUM_ARGS, HEADED, MODEL_FILES, OUT, ROOT, TIMEOUT_MS, errorText, fail, failOnPanic, lastPage,
  log, openPage, opt, panelState, prepareModels, probeWebGpu, removeModels, runToDone,
  setValue, shot, sleep, startServer, stopServer, text, visible, waitFor, waitLoaded,
} from "./lib.mjs";

// ---------- options (the rest: lib.mjs)
const ONLY = opt("--only", null)?.split(",").map((s) => s.trim());

// Two screenshots "differ" when the mean absolute difference per channel exceeds MIN_MAD
// (0..255) and more than MIN_CHANGED of the pixels moved by more than 16 levels.
const MIN_MAD = 2;
const MIN_CHANGED = 0.02;
// A canvas is "blank" (all one colour, or nearly) below these.
const MIN_STD = 3;
const MIN_COLOURS = 8;

// ---------- image comparisons
function diffOk(d) {
  return d.mad > MIN_MAD && d.changed > MIN_CHANGED;
}
function fmtDiff(d) {
  return d.sizeChanged ? "size changed" : `mean |diff| ${d.mad.toFixed(2)}, ${(100 * d.changed).toFixed(1)}% of pixels changed`;
}
function fmtStats(s) {
  return `luma mean ${s.mean.toFixed(1)}, std ${s.std.toFixed(1)}, ${s.colours > 4096 ? ">4096" : s.colours} colours`;
}

/**
 * The picture in a canvas. Headless Chromium's screenshots show WebGPU canvases blank (white),
 * so for #reverse-canvas the app offers `window.kakusanSnapshot()`: a PNG data URL of the same
 * picture rendered offscreen; it is used when present and non-empty (saved as NAME.png, the
 * element screenshot as NAME-screen.png). 2-D canvases (#forward-canvas) screenshot fine.
 */
async function canvasShot(page, sel, name) {
  if (sel === "#reverse-canvas") {
    const url = await page.evaluate(async () =>
      typeof window.kakusanSnapshot === "function" ? String((await window.kakusanSnapshot()) || "") : "");
    await page.locator(sel).screenshot({ path: path.join(OUT, `${name}-screen.png`) });
    const m = url.match(/^data:image\/png;base64,(.*)$/);
    if (m) {
      const buf = Buffer.from(m[1], "base64");
      fs.writeFileSync(path.join(OUT, `${name}.png`), buf);
      return decodePng(buf);
    }
  }
  const buf = await page.locator(sel).screenshot({ path: path.join(OUT, `${name}.png`) });
  return decodePng(buf);
}
/** Screenshot an element until two consecutive ones agree (it has finished redrawing). */
async function stableShot(page, sel, name, timeoutMs = 30000) {
  let prev = await canvasShot(page, sel, name);
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    await sleep(400);
    const cur = await canvasShot(page, sel, name);
    const d = imageDiff(prev, cur);
    if (!d.sizeChanged && d.mad === 0) return cur;
    prev = cur;
  }
  return prev;
}


// ---------- the checks
const checks = [];
function check(id, name, fn, opts = {}) {
  checks.push({ id, name, fn, slow: !!opts.slow });
}
const shared = {};

check("a", "page loads with ?model=test-model/", async ({ browser, base }) => {
  const t0 = Date.now();
  const page = await openPage(browser, `${base}?model=test-model/`);
  shared.page = page;
  await shot(page, "a1-loading");
  const name = await waitLoaded(page, "test-model");
  await shot(page, "a2-loaded");
  log(`  #model-name: ${JSON.stringify(name)}; #status: ${JSON.stringify(await text(page, "#status"))}; ` +
    `loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (await errorText(page)) fail(`#error visible: ${await errorText(page)}`);
  shared.loaded = true;
});

check("b", "short DDIM run (4 steps, batch 2) reaches done; canvas changed, not blank", async () => {
  if (!shared.loaded) fail("needs check a (model loaded)");
  const page = shared.page;
  await setValue(page, "#sampler", "ddim");
  await setValue(page, "#steps", 4);
  await setValue(page, "#batch", 2);
  await sleep(500);
  const before = await stableShot(page, "#reverse-canvas", "b1-canvas-before");
  await shot(page, "b1-before");
  const ms = await runToDone(page);
  const after = await stableShot(page, "#reverse-canvas", "b2-canvas-done");
  await shot(page, "b2-done");
  const st = imageStats(after);
  log(`  done in ${(ms / 1000).toFixed(1)} s; #step-counter: ${JSON.stringify(await text(page, "#step-counter"))}`);
  log(`  canvas ${after.width}x${after.height}: ${fmtStats(st)}`);
  if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`canvas is blank (${fmtStats(st)})`);
  // The starting noise: the run's first recorded frame on #timeline when there is one (the
  // app may start a run by itself as soon as a setting changes, so the picture before
  // pressing #play can already be a finished run); else the picture before the run.
  let start = before;
  let what = "the picture before the run";
  const tl = page.locator("#timeline");
  if ((await tl.count()) && (await tl.isEnabled()) && Number(await tl.getAttribute("max")) >= 1) {
    const max = await tl.getAttribute("max");
    await setValue(page, "#timeline", 0);
    await sleep(300);
    start = await stableShot(page, "#reverse-canvas", "b3-canvas-frame0");
    what = "the first frame on #timeline (x_T)";
    await setValue(page, "#timeline", max);
    await sleep(300);
    const back = await stableShot(page, "#reverse-canvas", "b4-canvas-last-frame");
    const dback = imageDiff(after, back);
    if (diffOk(dback)) fail(`#timeline's last frame differs from the finished run (${fmtDiff(dback)})`);
  }
  const d = imageDiff(start, after);
  log(`  vs ${what}: ${fmtDiff(d)}`);
  if (!diffOk(d)) fail(`the result looks like ${what} (${fmtDiff(d)})`);
  shared.done1 = after;
});

check("c", "a different #seed gives a different result", async () => {
  if (!shared.done1) fail("needs check b");
  const page = shared.page;
  const seed = Number(await page.locator("#seed").inputValue()) || 0;
  await setValue(page, "#seed", seed + 1);
  await sleep(500);
  const ms = await runToDone(page);
  const after = await stableShot(page, "#reverse-canvas", "c1-canvas-seed");
  await shot(page, "c1-seed");
  const st = imageStats(after);
  const d = imageDiff(shared.done1, after);
  log(`  seed ${seed} -> ${seed + 1}: done in ${(ms / 1000).toFixed(1)} s; ${fmtStats(st)}; vs seed ${seed}: ${fmtDiff(d)}`);
  if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`canvas is blank (${fmtStats(st)})`);
  if (!diffOk(d)) fail(`same picture for seeds ${seed} and ${seed + 1} (${fmtDiff(d)})`);
});

check("d", "forward explorer: x_t at mid t differs from t=0 and t=T-1", async ({ browser, base }) => {
  // Works without a model; reuse the loaded page when there is one.
  const own = !shared.page;
  const page = shared.page || (await openPage(browser, base));
  try {
    await page.locator("#forward-t").scrollIntoViewIfNeeded();
    const max = Number(await page.locator("#forward-t").getAttribute("max"));
    if (!(max > 2)) fail(`#forward-t max is ${max}`);
    const mid = Math.round(max / 2);
    const imgs = {};
    for (const [label, t] of [["0", 0], ["mid", mid], ["end", max]]) {
      await setValue(page, "#forward-t", t);
      await sleep(300);
      imgs[label] = await stableShot(page, "#forward-canvas", `d-forward-t${t}`);
      await shot(page, `d-forward-page-t${t}`);
    }
    const st = imageStats(imgs.mid);
    const d0 = imageDiff(imgs["0"], imgs.mid);
    const d1 = imageDiff(imgs.end, imgs.mid);
    log(`  T-1 = ${max}, mid t = ${mid}: ${fmtStats(st)}; vs t=0: ${fmtDiff(d0)}; vs t=${max}: ${fmtDiff(d1)}`);
    if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`forward canvas is blank (${fmtStats(st)})`);
    if (!diffOk(d0)) fail(`x_t at t=${mid} looks like t=0 (${fmtDiff(d0)})`);
    if (!diffOk(d1)) fail(`x_t at t=${mid} looks like t=${max} (${fmtDiff(d1)})`);
  } finally {
    if (own) await page.context_.close();
  }
});

check("phone", "phone-size page (390x844) loads the model", async ({ browser, base }) => {
  // Done with the shared page of checks a-d: close it so that its GPU work stops.
  if (shared.page) {
    await shared.page.context_.close();
    shared.page = null;
  }
  const page = await openPage(browser, `${base}?model=test-model/`, { width: 390, height: 844 });
  try {
    await waitLoaded(page, "test-model");
    await shot(page, "phone-390x844");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    log(`  document width ${overflow}px at a 390px viewport${overflow > 390 ? " (scrolls sideways)" : ""}`);
    failOnPanic(page);
    if (await errorText(page)) fail(`#error visible: ${await errorText(page)}`);
  } finally {
    await page.context_.close();
  }
});

check("e", "?model=bad-model/ (truncated safetensors) shows an error naming the file", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=bad-model/`);
  try {
    const msg = await waitFor("#error to become visible", () => {
      failOnPanic(page);
      return errorText(page);
    });
    await shot(page, "e-bad-model");
    log(`  #error: ${JSON.stringify(msg)}`);
    if (!/safetensors/i.test(msg)) fail("the error does not name the broken file (diffusion_pytorch_model.safetensors)");
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("f", "default page loads the shipped MNIST model; a 4-step DDIM run of class 7 finishes; a guidance interval without steps equals w = 1", async ({ browser, base }) => {
  const page = await openPage(browser, base);
  try {
    const t0 = Date.now();
    const name = await waitLoaded(page, "mnist");
    log(`  default model: ${JSON.stringify(name)}, loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (!/mnist/i.test(name)) fail(`#model-name ${JSON.stringify(name)} is not the shipped MNIST model`);
    await setValue(page, "#sampler", "ddim");
    await setValue(page, "#steps", 4);
    await setValue(page, "#batch", 1);
    await setValue(page, "#class", 7);
    await sleep(300);
    const ms = await runToDone(page);
    const after = await stableShot(page, "#reverse-canvas", "f-default-canvas");
    await shot(page, "f-default");
    const st = imageStats(after);
    log(`  4 DDIM steps of the shipped model in ${(ms / 1000).toFixed(1)} s; canvas: ${fmtStats(st)}`);
    if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`canvas is blank (${fmtStats(st)})`);
    // "Guide only at": offered as 80..580 for T = 1000; an interval holding none of the 4
    // DDIM timesteps (750, 500, 250, 0) must give the conditional model alone, i.e. the
    // picture of guidance w = 1, and differ from the guided one.
    if (!(await page.locator("#guidance-lo").isDisabled())) fail("#guidance-lo enabled with the interval off");
    await page.locator("#guidance-interval").check();
    await sleep(300);
    const lo = await page.locator("#guidance-lo").inputValue();
    const hi = await page.locator("#guidance-hi").inputValue();
    log(`  guidance interval offered: ${lo}..${hi}`);
    if (lo !== "80" || hi !== "580") fail(`guidance interval offered as ${lo}..${hi}, expected 80..580`);
    await setValue(page, "#guidance-hi", 249);
    await setValue(page, "#guidance-lo", 1);
    await sleep(300);
    await runToDone(page);
    const unguided = await stableShot(page, "#reverse-canvas", "f-interval-1-249");
    await page.locator("#guidance-interval").uncheck();
    await setValue(page, "#guidance", 1);
    await sleep(300);
    await runToDone(page);
    const w1 = await stableShot(page, "#reverse-canvas", "f-guidance-1");
    const dSame = imageDiff(unguided, w1);
    const dGuided = imageDiff(after, unguided);
    log(`  interval 1..249 vs w = 1: ${fmtDiff(dSame)}; vs guided: ${fmtDiff(dGuided)}`);
    if (dSame.mad > 0.5) fail(`an interval without any step differs from w = 1 (${fmtDiff(dSame)})`);
    if (!diffOk(dGuided)) fail(`the interval changed nothing against guidance at every step (${fmtDiff(dGuided)})`);
    if (await errorText(page)) fail(`#error visible: ${await errorText(page)}`);
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("j", "DPM-Solver++ from the sampler menu: a 4-step run of the shipped model, class 3, finishes", async ({ browser, base }) => {
  const page = await openPage(browser, base);
  try {
    await waitLoaded(page, "mnist");
    await setValue(page, "#sampler", "dpm-solver");
    await sleep(300);
    // Switching from DDPM's 1000 steps to the few-step solver sets its usual 20.
    const steps = Number(await page.locator("#steps").inputValue());
    log(`  #steps after choosing DPM-Solver++: ${steps}`);
    if (steps !== 20) fail(`#steps is ${steps}, expected 20 after switching to DPM-Solver++`);
    if (!(await page.locator("#eta").isDisabled())) fail("#eta should be disabled for DPM-Solver++");
    await setValue(page, "#steps", 4);
    await setValue(page, "#batch", 1);
    await setValue(page, "#class", 3);
    await sleep(300);
    const ms = await runToDone(page);
    const after = await stableShot(page, "#reverse-canvas", "j-dpm-solver-canvas");
    await shot(page, "j-dpm-solver");
    const st = imageStats(after);
    log(`  4 DPM-Solver++ steps in ${(ms / 1000).toFixed(1)} s; canvas: ${fmtStats(st)}`);
    if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`canvas is blank (${fmtStats(st)})`);
    if (await errorText(page)) fail(`#error visible: ${await errorText(page)}`);
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("h", "an error can be dismissed; dropping a model's files on #model-drop loads it", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=bad-model/`);
  try {
    await waitFor("#error for the broken model", () => errorText(page));
    await page.click("#dismiss-error");
    await waitFor("#error to hide after Dismiss", async () => !(await errorText(page)), 5000, 100);
    // Drop the three files of the test model, as a user dragging them from a file manager.
    await page.evaluate(async ({ base, files }) => {
      const dt = new DataTransfer();
      for (const f of files) {
        const r = await fetch(`${base}test-model/${f}`);
        dt.items.add(new File([await r.blob()], f));
      }
      const el = document.getElementById("model-drop");
      for (const type of ["dragenter", "dragover", "drop"]) {
        el.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
    }, { base, files: MODEL_FILES });
    const name = await waitLoaded(page, "config");
    await shot(page, "h-dropped");
    log(`  after the drop: #model-name ${JSON.stringify(name)}`);
    if (await errorText(page)) fail(`#error visible: ${await errorText(page)}`);
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("i", "a lost GPU device shows an error with Restart GPU, which brings the model back", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=test-model/`);
  try {
    await waitLoaded(page, "test-model");
    await page.evaluate(() => window.kakusanSimulateDeviceLoss());
    const msg = await waitFor("#error about the lost device", () => errorText(page));
    log(`  #error: ${JSON.stringify(msg.slice(0, 120))}`);
    if (!/lost/i.test(msg)) fail(`the error does not say the device was lost: ${msg}`);
    if (!(await visible(page, "#restart-device"))) fail("#restart-device is not shown");
    await shot(page, "i1-device-lost");
    await page.click("#restart-device");
    await waitFor("#error to clear after Restart GPU", async () => !(await errorText(page)));
    await waitLoaded(page, "test-model");
    await setValue(page, "#sampler", "ddim");
    await setValue(page, "#steps", 2);
    await setValue(page, "#batch", 1);
    await runToDone(page);
    await shot(page, "i2-restarted");
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("g", "?bench&model=test-model/&batch=1 writes JSON with median_ms > 0, gflops > 0", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?bench&model=test-model/&batch=1`);
  try {
    const json = await waitFor("#bench-result JSON", async () => {
      failOnPanic(page);
      const err = await errorText(page);
      if (err) fail(`#error is visible: ${err}`);
      const t = (await text(page, "#bench-result")) || "";
      const m = t.match(/\{[\s\S]*?\}/);
      if (!m) return false;
      try {
        return JSON.parse(m[0]);
      } catch {
        return false;
      }
    });
    await shot(page, "g-bench");
    log(`  ${JSON.stringify(json)}`);
    failOnPanic(page);
    if (!(json.median_ms > 0)) fail(`median_ms = ${json.median_ms}`);
    if (!(json.gflops > 0)) fail(`gflops = ${json.gflops}`);
    if (json.batch !== 1) fail(`batch = ${json.batch}, asked for 1`);
  } finally {
    await page.context_.close();
  }
});

// ---------- the diffusion lab (Lab tab, #lab)
// Check p (default) trains a small configuration until its fit figure is ≤ 3x its floor;
// check pl (opt-in, slow on SwiftShader) is the target at the page's sizes.
// E2E_LAB_URL, E2E_LAB_FIT (× floor), E2E_LAB_S (s of training) and E2E_LAB_STEPS override
// pl's sizes and limits.
async function labAttrs(page) {
  return page.evaluate(() => {
    const r = document.getElementById("lab-rate");
    const f = document.getElementById("lab-fit");
    const p = document.getElementById("lab-panel");
    const num = (el, a) => (el && el.getAttribute(a) ? Number(el.getAttribute(a)) : null);
    return {
      state: p ? p.getAttribute("data-state") : null,
      steps: num(r, "data-steps"),
      sps: num(r, "data-steps-per-s"),
      gflops: num(r, "data-gflops"),
      fps: num(r, "data-fps"),
      sampling: num(r, "data-sample-steps-per-s"),
      trainS: num(r, "data-train-s"),
      fit: num(f, "data-fit"),
      floor: num(f, "data-floor"),
      untrained: num(f, "data-untrained"),
      fitStep: num(f, "data-step"),
      ttf: num(f, "data-time-to-fit"),
    };
  });
}
async function labReady(page) {
  return waitFor("#lab-panel to be ready", async () => {
    failOnPanic(page);
    const err = await errorText(page);
    if (err) fail(`#error is visible: ${err}`);
    return (await labAttrs(page)).state === "ready";
  });
}
/** Wait for a fit figure newer than step `after` (a finished run of the particles). */
async function nextFit(page, after, timeoutMs = TIMEOUT_MS) {
  return waitFor(`a fit figure after step ${after}`, async () => {
    failOnPanic(page);
    const a = await labAttrs(page);
    return a.fit !== null && a.fitStep !== null && a.fitStep > after ? a : false;
  }, timeoutMs, 500);
}
/** The lab canvas as drawn (a WebGPU canvas screenshots fine with this file's flags). */
async function labShot(page, name) {
  // Frames are slow while SwiftShader runs the lab's kernels: allow two minutes.
  const buf = await page.locator("#lab-canvas").screenshot({ path: path.join(OUT, `${name}.png`), timeout: 120000 });
  return decodePng(buf);
}
async function labCanvasStats(page, name) {
  return imageStats(await labShot(page, name));
}

/**
 * Click a button by its `click()`: Playwright's click first waits for the element to be
 * stable over two animation frames, and on SwiftShader under load the lab draws a frame only
 * every few seconds (the first one after its pipelines compile, tens of seconds), which made
 * such clicks time out.
 */
async function press(page, sel) {
  // The page's main thread can be busy for tens of seconds while the lab starts.
  await page.locator(sel).evaluate((el) => el.click(), null, { timeout: 150000 });
}

/**
 * Hold the particles at the end of a finished run: wait until the live scrubber reaches its
 * last row, then drag it there (the animation stops while the scrubber holds a row).
 */
async function holdFinishedRun(page) {
  for (let tries = 0; tries < 20; tries++) {
    await waitFor("a finished run of the particles", async () => {
      failOnPanic(page);
      return page.evaluate(() => {
        const t = document.querySelector("#lab-t");
        return Number(t.max) > 0 && t.value === t.max;
      });
    });
    const max = await page.evaluate(() => document.querySelector("#lab-t").max);
    await setValue(page, "#lab-t", max);
    await sleep(500);
    const held = await page.evaluate(() => {
      const t = document.querySelector("#lab-t");
      return t.value === t.max;
    });
    if (held) return;
    await press(page, "#lab-live"); // the run restarted in between: follow it and try again
  }
  fail("could not hold a finished run");
}

/**
 * Open the lab with `url` (its URL parameters), take the untrained fit figure (the first run of
 * the particles, before any training), train, and stop at the first fit figure ≤ `fit`× its
 * floor; fail if none comes within `seconds` of training or `steps` steps, or if it is not
 * below the untrained one.
 */
async function labFitCheck(browser, base, id, { url, fit, seconds, steps }) {
  const page = await openPage(browser, `${base}?model=test-model/&${url}#lab`);
  const t0 = Date.now();
  const at = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  try {
    await labReady(page);
    const u = await nextFit(page, -1);
    log(`  untrained at ${at()}: fit ${u.fit} (floor ${u.floor}) = ${(u.fit / u.floor).toFixed(1)}x floor`);
    await shot(page, `${id}1-lab-untrained`);
    await press(page, "#lab-train");
    const t0 = Date.now();
    let a = await labAttrs(page);
    let best = null;
    let reached = false;
    for (;;) {
      failOnPanic(page);
      const err = await errorText(page);
      if (err) fail(`#error is visible: ${err}`);
      a = await labAttrs(page);
      if (a.fit !== null && a.floor && a.fitStep > 0) {
        const r = a.fit / a.floor;
        if (best === null || r < best.r) best = { r, step: a.fitStep };
        if (r <= fit) {
          reached = true;
          break;
        }
      }
      if (a.fitStep > 0 && ((a.trainS !== null && a.trainS > seconds) || a.fitStep > steps)) break;
      if (Date.now() - t0 > TIMEOUT_MS) break;
      await sleep(500);
    }
    await press(page, "#lab-train"); // pause: the screenshot waits for a frame
    log(`  training stopped at ${at()}`);
    const stats = await labCanvasStats(page, `${id}2-lab-canvas`);
    log(`  steps ${a.steps}, ${a.sps?.toFixed(3)} steps/s, ${a.gflops?.toFixed(4)} GFLOP/s, ` +
      `${a.fps?.toFixed(2)} frames/s, particles ${a.sampling?.toFixed(3)} sampler steps/s (${url}), ` +
      `${a.trainS?.toFixed(1)} s of training`);
    log(`  fit ${a.fit} (floor ${a.floor}, untrained ${a.untrained}) = ${(a.fit / a.floor).toFixed(2)}x floor at step ${a.fitStep}; ` +
      `best ${best ? best.r.toFixed(2) : "-"}x; time to 2x floor: ${a.ttf !== null ? a.ttf + " s" : "not reached"}`);
    log(`  canvas: ${fmtStats(stats)}`);
    if (stats.std < MIN_STD || stats.colours < MIN_COLOURS) fail(`#lab-canvas is blank (${fmtStats(stats)})`);
    if (!(a.steps > 0)) fail("no training steps were taken");
    if (!(a.fitStep > 0)) fail("no fit figure after training started");
    if (!(a.untrained > 0) || !(a.fit < a.untrained)) fail(`the fit figure ${a.fit} is not below the untrained model's ${a.untrained}`);
    if (!reached) {
      fail(`fit figure ${(a.fit / a.floor).toFixed(2)}x its floor at step ${a.fitStep} after ${a.trainS?.toFixed(1)} s of training ` +
        `(threshold ${fit}x within ${steps} steps / ${seconds} s; best ${best ? best.r.toFixed(2) : "-"}x)`);
    }
  } finally {
    await page.context_.close();
  }
}

// 200 particles, 10 DDPM steps, batch 32: natively the fit figure falls from ~12x its floor
// (untrained) to ≤ 2x within ~100 steps (docs/lab.md); 10 sampler steps are frames enough to
// finish a run every few seconds on SwiftShader and keep the figure steady (5 steps swing
// between 1.5x and 4.7x).
check("p", "lab: the default preset trains in the tab; its fit figure reaches 3x the floor within 600 steps", async ({ browser, base }) => {
  await labFitCheck(browser, base, "p", { url: "particles=200&sample_steps=10&lab_batch=32", fit: 3, seconds: 60, steps: 600 });
});

// The target at the page's defaults (10,000 particles, 50 DDPM steps, batch 512):
// ≤ 2x the floor within 90 s of training (312 s in all on the quiet machine).
check("pl", "lab at the page's sizes: the fit figure reaches 2x its floor within 90 s of training", async ({ browser, base }) => {
  await labFitCheck(browser, base, "pl", {
    url: process.env.E2E_LAB_URL || "particles=10000",
    fit: Number(process.env.E2E_LAB_FIT || 2),
    seconds: Number(process.env.E2E_LAB_S || 90),
    steps: Number(process.env.E2E_LAB_STEPS || 1e9),
  });
}, { slow: true });

check("q", "lab on a phone (390x844): no sideways scroll, canvas fits, controls reachable", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=test-model/&particles=200&sample_steps=5&lab_batch=32#lab`, { width: 390, height: 844 });
  try {
    await labReady(page);
    const m = await page.evaluate(() => {
      const c = document.getElementById("lab-canvas").getBoundingClientRect();
      const t = document.getElementById("lab-train").getBoundingClientRect();
      return { width: document.documentElement.scrollWidth, cw: c.width, ch: c.height, tw: t.width, th: t.height };
    });
    log(`  document width ${m.width}px, canvas ${m.cw.toFixed(0)}x${m.ch.toFixed(0)}, #lab-train ${m.tw.toFixed(0)}x${m.th.toFixed(0)}`);
    if (m.width > 390) fail(`the page scrolls sideways (${m.width}px wide)`);
    if (m.cw > 390 || m.cw < 200) fail(`#lab-canvas is ${m.cw}px wide`);
    // Keyboard: focus the train button and press Enter.
    await page.focus("#lab-train");
    await page.keyboard.press("Enter");
    await waitFor("training to start from the keyboard", async () => (await labAttrs(page)).state === "training", 20000);
    failOnPanic(page);
    // The page renders a frame only when SwiftShader finishes the GPU work queued for it: a
    // screenshot can wait long; it is for people, so a timeout is only noted.
    await page.screenshot({ path: path.join(OUT, "q1-lab-phone.png"), fullPage: true, timeout: 150000 })
      .catch((e) => log(`  note: no screenshot (${e.message.split("\n")[0]})`));
  } finally {
    await page.context_.close();
  }
});

async function stroke(page, box, pts) {
  await page.mouse.move(box.x + pts[0][0] * box.width, box.y + pts[0][1] * box.height);
  await page.mouse.down();
  for (const [fx, fy] of pts.slice(1)) {
    await page.mouse.move(box.x + fx * box.width, box.y + fy * box.height, { steps: 6 });
  }
  await page.mouse.up();
}

check("r", "lab: bad drawings get a clear error; a two-colour drawing trains; guidance changes the samples", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=test-model/&particles=200&sample_steps=5&lab_batch=32#lab`);
  const t0 = Date.now();
  const at = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
  try {
    await labReady(page);
    log(`  lab ready at ${at()}`);
    await press(page, "#lab-draw");
    await press(page, "#lab-draw-use");
    // The first seconds after "ready" can stall the page while SwiftShader compiles the lab's
    // kernels (a fresh CI run once waited > 10 s here): allow a minute.
    const err = await waitFor("#error for an empty drawing", async () => errorText(page), 60000);
    log(`  empty drawing: ${JSON.stringify(err)}`);
    if (!/empty/i.test(err)) fail(`#error does not say the drawing is empty: ${err}`);
    await press(page, "#dismiss-error");
    // Clicking a colour can scroll the page: take the canvas's box after it, in view.
    // (By the DOM: Playwright's own scrolling waits for frames, see press.)
    const canvasBox = async () => page.locator("#lab-canvas").evaluate((el) => {
      el.scrollIntoView({ block: "center" });
      const r = el.getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    });
    await press(page, "#lab-class-0");
    await stroke(page, await canvasBox(), [[0.25, 0.3], [0.3, 0.45], [0.25, 0.6], [0.3, 0.7]]);
    await press(page, "#lab-class-2");
    await stroke(page, await canvasBox(), [[0.7, 0.3], [0.75, 0.45], [0.7, 0.6], [0.75, 0.7]]);
    const drafted = await text(page, "#lab-data-info");
    log(`  after two strokes: ${JSON.stringify(drafted)}`);
    // For people; a frame can take long on SwiftShader, so a timeout is only noted.
    await shot(page, "r1-drawing").catch((e) => log(`  note: no screenshot (${e.message.split("\n")[0]})`));
    await press(page, "#lab-draw-use");
    await labReady(page);
    const info = await text(page, "#lab-data-info");
    log(`  drawn data at ${at()}: ${info}`);
    if (!/2 classes/.test(info)) fail(`expected a 2-class data set, #lab-data-info says ${info}`);
    if (!(await visible(page, "#lab-guidance"))) fail("#lab-guidance is hidden for class-conditional data");
    await press(page, "#lab-train");
    await waitFor("20 training steps", async () => {
      failOnPanic(page);
      const e = await errorText(page);
      if (e) fail(`#error is visible: ${e}`);
      return (await labAttrs(page)).steps >= 20;
    });
    await press(page, "#lab-train"); // pause: the weights stay put while guidance is compared
    await sleep(1500);
    const steps = (await labAttrs(page)).steps;
    log(`  trained and paused at ${at()}`);
    // Both runs start after the pause (each guidance change rebuilds the particles: same x_T
    // and noise), so both use the final weights throughout; a run already under way at the
    // pause would have taken its first steps with older weights.
    await press(page, "#lab-live");
    await setValue(page, "#lab-guidance", "5");
    const p5 = await heldParticles(page);
    log(`  w=5 run held at ${at()}`);
    const img5 = await labShot(page, "r3-guidance-5");
    await press(page, "#lab-live");
    await setValue(page, "#lab-guidance", "1");
    const p1 = await heldParticles(page);
    log(`  w=1 run held at ${at()}`);
    const img1 = await labShot(page, "r2-guidance-1");
    const after = (await labAttrs(page)).steps;
    if (after !== steps) fail(`training went on while paused (${steps} -> ${after} steps)`);
    const [g1, g5] = [classGeometry(p1), classGeometry(p5)];
    log(`  after ${steps} steps, ${p1.n} particles: w=1 ${g1.text}; w=5 ${g5.text}`);
    log(`  canvas w=1 -> w=5: ${fmtDiff(imageDiff(img1, img5))} (200 small particles cover ~1% of it)`);
    // The drawing's classes lie left (class 0) and right (class 1) of x = 0, 2.7 apart. After
    // ~20 steps the class embedding has only begun to separate the classes at w = 1; guidance
    // (ε_∅ + w(ε_y − ε_∅)) amplifies what it learned and pushes each class towards its own
    // stroke and away from the other. If guidance did nothing, the two runs would be
    // identical (same weights, same noise).
    if (!(g5.sep > g1.sep + 0.5)) fail(`guidance w=5 did not pull the classes apart: ${g1.text} at w=1, ${g5.text} at w=5`);
    if (!(g5.m[0][0] < 0 && g5.m[1][0] > 0)) fail(`at w=5 the classes' particles are not on their strokes' sides (class 0 left, class 1 right): ${g5.text}`);
  } finally {
    await page.context_.close();
  }
});

/**
 * The particles on screen read back from the GPU by `window.kakusanLabParticles()`:
 * { row, last, n, xyc } (xyc = x, y, class per particle).
 */
async function labParticles(page) {
  const json = await page.evaluate(async () =>
    typeof window.kakusanLabParticles === "function" ? window.kakusanLabParticles() : null);
  if (!json) fail("window.kakusanLabParticles() gave nothing");
  const p = JSON.parse(json);
  return { ...p, n: p.xyc.length / 3 };
}
/** Hold a finished run (holdFinishedRun) and read its end points: the last row, checked. */
async function heldParticles(page) {
  for (let tries = 0; tries < 5; tries++) {
    await holdFinishedRun(page);
    const p = await labParticles(page);
    if (p.row === p.last && p.last > 0) return p;
    // The scrubber still showed the previous run's last row (a rebuilt run starts at 0).
    await press(page, "#lab-live");
    await sleep(500);
  }
  fail("could not hold the end of a run of the particles");
}
/** Per-class means (classes 0 and 1) and their distance, from labParticles' rows. */
function classGeometry(p) {
  const sum = [[0, 0, 0], [0, 0, 0]];
  for (let i = 0; i < p.n; i++) {
    const [x, y, c] = [p.xyc[3 * i], p.xyc[3 * i + 1], p.xyc[3 * i + 2]];
    if ((c === 0 || c === 1) && Number.isFinite(x) && Number.isFinite(y)) {
      sum[c][0] += x;
      sum[c][1] += y;
      sum[c][2] += 1;
    }
  }
  const m = sum.map(([x, y, k]) => [x / Math.max(k, 1), y / Math.max(k, 1), k]);
  const sep = Math.hypot(m[1][0] - m[0][0], m[1][1] - m[0][1]);
  const f = (v) => v.toFixed(2);
  return { m, sep, text: `class means (${f(m[0][0])}, ${f(m[0][1])}) and (${f(m[1][0])}, ${f(m[1][1])}), ${f(sep)} apart` };
}

check("s", "?bench=lab writes JSON with steps_per_s > 0 and gflops > 0 at batch 512", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?bench=lab&model=test-model/`);
  try {
    const json = await waitFor("#bench-result JSON", async () => {
      failOnPanic(page);
      const t = await text(page, "#bench-result");
      return t ? JSON.parse(t) : false;
    });
    log(`  ${JSON.stringify(json)}`);
    if (json.error) fail(`benchmark error: ${json.error}`);
    if (!(json.steps_per_s > 0) || !(json.gflops > 0)) fail("steps_per_s / gflops not positive");
    if (!(json.draw_ms > 0)) fail(`draw_ms (the lab's picture) = ${json.draw_ms}`);
    if (json.batch !== 512) fail(`batch = ${json.batch}`);
  } finally {
    await page.context_.close();
  }
});

// ---------- the toolbox panel (inpainting, interpolation)
/** Wait for a toolbox tool (`#inpaint`, `#interp`) to reach data-state=done. */
async function toolDone(page, sel) {
  const t0 = Date.now();
  await waitFor(`${sel}[data-state=done]`, async () => {
    failOnPanic(page);
    const err = await errorText(page);
    if (err) fail(`#error is visible: ${err}`);
    const s = await page.locator(sel).getAttribute("data-state");
    if (s === "stopped") fail(`${sel} stopped: ${await text(page, sel + " .counter")}`);
    return s === "done";
  });
  return Date.now() - t0;
}

check("k", "inpainting: a mask drawn with the mouse, RePaint run; known pixels unchanged, the masked part changed", async ({ browser, base }) => {
  // A 2-step reverse run: the panel's autoplay is over at once and leaves the GPU to the toolbox.
  const page = await openPage(browser, `${base}?model=test-model/&sampler=ddim&steps=2&batch=1`);
  try {
    await waitLoaded(page, "test-model");
    await waitFor("the reverse panel's 2-step autoplay to end", async () => (await panelState(page)) !== "running");
    await page.locator("#inpaint").scrollIntoViewIfNeeded();
    await setValue(page, "#inpaint-image", "2");
    await setValue(page, "#inpaint-steps", 6);
    await setValue(page, "#inpaint-jump", 2);
    await setValue(page, "#inpaint-resample", 2);
    await page.click("#mask-clear");
    await sleep(200);
    const before = await stableShot(page, "#inpaint-mask", "k1-mask-clear");
    // A thick horizontal stroke through the middle and a short vertical one, with the mouse.
    const box = await page.locator("#inpaint-mask").boundingBox();
    if (!box || box.width < 50) fail(`#inpaint-mask is too small to paint on (${JSON.stringify(box)})`);
    const at = (fx, fy) => [box.x + fx * box.width, box.y + fy * box.height];
    await page.mouse.move(...at(0.15, 0.5));
    await page.mouse.down();
    await page.mouse.move(...at(0.85, 0.5), { steps: 12 });
    await page.mouse.move(...at(0.85, 0.8), { steps: 6 });
    await page.mouse.up();
    await sleep(200);
    const drawn = await stableShot(page, "#inpaint-mask", "k2-mask-drawn");
    const dm = imageDiff(before, drawn);
    log(`  mask canvas after drawing: ${fmtDiff(dm)}`);
    if (!diffOk(dm)) fail(`drawing on #inpaint-mask did not change it (${fmtDiff(dm)})`);
    await shot(page, "k3-before-run");
    const ms = await (async () => {
      await page.click("#inpaint-run");
      return toolDone(page, "#inpaint");
    })();
    await page.locator("#inpaint").scrollIntoViewIfNeeded();
    const out = await stableShot(page, "#inpaint-canvas", "k4-inpaint-canvas");
    await shot(page, "k5-done");
    const known = await text(page, "#inpaint-known");
    log(`  done in ${(ms / 1000).toFixed(1)} s; #inpaint-progress: ${JSON.stringify(await text(page, "#inpaint-progress"))}`);
    log(`  #inpaint-known: ${JSON.stringify(known)}; canvas ${fmtStats(imageStats(out))}`);
    const r = JSON.parse(await page.evaluate(() => {
      const v = window.kakusanInpaintResult ? window.kakusanInpaintResult() : null;
      return v === null ? "null" : String(v);
    }));
    if (!r) fail("window.kakusanInpaintResult() returned nothing after the run");
    const [c, h, w] = r.shape;
    const hw = h * w;
    const filled = r.mask.filter((m) => m === 0).length;
    if (filled < 0.05 * hw || filled > 0.8 * hw) fail(`the drawn mask fills ${filled} of ${hw} pixels`);
    let keptSame = 0, kept = 0, changed = 0, fill = 0;
    for (let i = 0; i < c * hw; i++) {
      if (r.mask[i % hw] === 1) {
        kept++;
        if (r.result[i] === r.image[i]) keptSame++;
      } else if (r.mask[i % hw] === 0) {
        fill++;
        if (Math.abs(r.result[i] - r.image[i]) > 0.05) changed++;
      }
    }
    log(`  ${c}x${h}x${w}: ${filled} pixels painted; kept ${keptSame}/${kept} identical; filled ${changed}/${fill} changed`);
    if (keptSame !== kept) fail(`${kept - keptSame} known pixels changed`);
    if (changed < 0.5 * fill) fail(`only ${changed} of ${fill} masked values differ from the input`);
    if (!/identical/.test(known || "") || /MISMATCH/.test(known)) fail(`#inpaint-known says ${JSON.stringify(known)}`);
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("l", "interpolation: seeds and digits, the λ slider picks frames that differ", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=test-model/&sampler=ddim&steps=2&batch=1`);
  try {
    await waitLoaded(page, "test-model");
    await waitFor("the reverse panel's 2-step autoplay to end", async () => (await panelState(page)) !== "running");
    await page.locator("#interp").scrollIntoViewIfNeeded();
    await setValue(page, "#interp-mode", "seeds");
    await setValue(page, "#interp-seed-a", 3);
    await setValue(page, "#interp-seed-b", 4);
    await setValue(page, "#interp-frames", 5);
    await setValue(page, "#interp-steps", 4);
    await page.click("#interp-run");
    const ms = await toolDone(page, "#interp");
    log(`  5 frames x 4 DDIM steps in ${(ms / 1000).toFixed(1)} s; ${JSON.stringify(await text(page, "#interp-progress"))}`);
    const slider = page.locator("#interp-lambda");
    if (await slider.isDisabled()) fail("#interp-lambda is disabled after the run");
    const max = Number(await slider.getAttribute("max"));
    if (max !== 4) fail(`#interp-lambda max is ${max}, expected 4 (5 frames)`);
    // Keyboard: Home, then arrows, then End; the text must follow (polled: a busy machine
    // can take a moment to re-render).
    const lambdaAfter = async (keys, want, name) => {
      await slider.focus();
      for (const k of keys) await page.keyboard.press(k);
      const t = await waitFor(`#interp-lambda-text to say ${want}`, async () => {
        const v = (await text(page, "#interp-lambda-text")) || "";
        return v.includes(want) ? v : false;
      }, 20000);
      return [await stableShot(page, "#interp-frame", name), t];
    };
    const [f0, t0] = await lambdaAfter(["Home"], "λ = 0.000", "l1-frame-0");
    const [fm, tm] = await lambdaAfter(["ArrowRight", "ArrowRight"], "λ = 0.500", "l2-frame-mid");
    const [f1, t1] = await lambdaAfter(["End"], "λ = 1.000", "l3-frame-1");
    await stableShot(page, "#interp-strip", "l4-strip");
    await shot(page, "l5-seeds");
    log(`  ${JSON.stringify(t0)} / ${JSON.stringify(tm)} / ${JSON.stringify(t1)}`);
    for (const [a, b, what] of [[f0, fm, "λ=0 vs λ=0.5"], [fm, f1, "λ=0.5 vs λ=1"], [f0, f1, "λ=0 vs λ=1"]]) {
      const d = imageDiff(a, b);
      log(`  ${what}: ${fmtDiff(d)}`);
      if (!diffOk(d)) fail(`${what}: the shown frames do not differ (${fmtDiff(d)})`);
    }
    const st = imageStats(f0);
    if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`#interp-frame is blank (${fmtStats(st)})`);
    // Two digits (Fig. 8), 3 frames from t = 300.
    await setValue(page, "#interp-mode", "digits");
    await setValue(page, "#interp-digit-a", "1");
    await setValue(page, "#interp-digit-b", "0");
    await setValue(page, "#interp-t", 300);
    await setValue(page, "#interp-frames", 3);
    await page.click("#interp-run");
    const ms2 = await toolDone(page, "#interp");
    const [g0] = await lambdaAfter(["Home"], "λ = 0.000", "l6-digits-0");
    const [g1] = await lambdaAfter(["End"], "λ = 1.000", "l7-digits-1");
    await shot(page, "l8-digits");
    const dg = imageDiff(g0, g1);
    log(`  digits 1 → 0 from t = 300: ${(ms2 / 1000).toFixed(1)} s; ${JSON.stringify(await text(page, "#interp-progress"))}; λ=0 vs λ=1: ${fmtDiff(dg)}`);
    if (!diffOk(dg)) fail(`digit interpolation: λ=0 and λ=1 look the same (${fmtDiff(dg)})`);
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("phone-toolbox", "phone-size page (390x844): the toolbox panel fits", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=test-model/&sampler=ddim&steps=2&batch=1`, { width: 390, height: 844 });
  try {
    await waitLoaded(page, "test-model");
    await page.locator("#toolbox-panel").evaluate((el) => el.scrollIntoView());
    await sleep(500);
    const m = await page.evaluate(() => {
      const el = document.getElementById("toolbox-panel");
      const r = el.getBoundingClientRect();
      return { right: r.right, scroll: el.scrollWidth, client: el.clientWidth, doc: document.documentElement.scrollWidth };
    });
    log(`  #toolbox-panel right edge ${m.right.toFixed(0)}px, scrollWidth ${m.scroll} / clientWidth ${m.client}; document ${m.doc}px`);
    if (m.right > 391 || m.scroll > m.client + 1) fail("the toolbox panel is wider than a 390px screen");
    // The picture is for people; a screenshot that times out on a busy machine is not a failure.
    await shot(page, "phone-toolbox").catch((e) => log(`  (no screenshot: ${e.message.split("\n")[0]})`));
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

/**
 * Pause the reverse-process animation the page starts by itself (the GPU is then free for the
 * panel, and the page stops reflowing), and scroll to the likelihood panel. Not
 * scrollIntoViewIfNeeded, and clicks with `force`: Playwright's wait for a "stable" element
 * can time out on a page busy on SwiftShader.
 */
async function toPanel(page) {
  if ((await panelState(page)) === "running") await page.click("#play");
  await page.evaluate(() => document.getElementById("likelihood-panel").scrollIntoView());
}

/** Wait for a likelihood-panel result (`#nll-total` / `#anomaly-score`) to reach data-state=done. */
async function waitToolDone(page, sel) {
  return waitFor(`${sel}[data-state=done]`, async () => {
    failOnPanic(page);
    const err = await errorText(page);
    if (err) fail(`#error is visible: ${err}`);
    const st = await page.locator(sel).getAttribute("data-state");
    if (st === "error" || st === "stopped") fail(`${sel} data-state=${st}: ${await text(page, sel)}`);
    return st === "done";
  });
}

check("m", "likelihood panel: per-t NLL plot of a digit fills in live, finite, with a total in bits/dim", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=test-model/`);
  try {
    await waitLoaded(page, "test-model");
    await toPanel(page);
    await setValue(page, "#tool-image", "3");
    await setValue(page, "#nll-mode", "stride");
    await setValue(page, "#nll-stride", 25);
    await setValue(page, "#nll-batch", 8);
    await sleep(200);
    // The test model is class-conditional: the class label defaults to the digit's.
    const cls = await page.locator("#tool-class").inputValue();
    if (cls !== "3") fail(`#tool-class is ${JSON.stringify(cls)} for digit 3, not "3"`);
    const t0 = Date.now();
    await page.click("#nll-run", { force: true });
    // Live: the plot gets points before the run is over (8 t's per call, 41 terms).
    let live = 0;
    await waitFor("the first terms in #nll-plot", async () => {
      failOnPanic(page);
      live = await page.locator("#nll-plot svg circle").count();
      return live > 0;
    });
    const stateWhenFirst = await page.locator("#nll-total").getAttribute("data-state");
    await waitToolDone(page, "#nll-total");
    const secs = (Date.now() - t0) / 1000;
    const svg = await page.locator("#nll-plot").innerHTML();
    const points = (svg.match(/<circle/g) || []).length;
    const total = Number(await page.locator("#nll-total").getAttribute("data-bpd"));
    const line = await text(page, "#nll-total");
    await page.locator("#likelihood-panel").screenshot({ path: path.join(OUT, "m-nll.png") });
    log(`  first points while ${stateWhenFirst} (${live} drawn); done in ${secs.toFixed(1)} s; ${points} points`);
    log(`  #nll-total: ${JSON.stringify(line)}`);
    if (/NaN|Infinity/.test(svg)) fail("the plot has NaN/Infinity coordinates");
    if (points < 40) fail(`only ${points} points in the plot (41 terms expected: L_0 + 40 blocks of 25)`);
    if (!(Number.isFinite(total) && total > 0)) fail(`data-bpd = ${total}`);
    if (!/total = [0-9.e+-]+ bits\/dim/.test(line)) fail("#nll-total does not state the total in bits/dim");
    if (!/estimate/.test(line)) fail("a strided run is not labelled as an estimate");
    // The same image under the null class: the network sees another label, so another bound.
    await setValue(page, "#tool-class", "none");
    await sleep(200);
    await page.click("#nll-run", { force: true });
    await waitFor("#nll-total to restart", async () =>
      (await page.locator("#nll-total").getAttribute("data-state")) !== "done", 5000, 50).catch(() => {});
    await waitToolDone(page, "#nll-total");
    const totalNull = Number(await page.locator("#nll-total").getAttribute("data-bpd"));
    log(`  class 3: ${total} bits/dim; null class: ${totalNull} bits/dim`);
    if (!Number.isFinite(totalNull) || totalNull === total) fail(`the null class gave ${totalNull} bits/dim, class 3 ${total}: the class label does not reach the bound`);
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(500);
    await page.locator("#likelihood-panel").screenshot({ path: path.join(OUT, "m-nll-phone.png") });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
    log(`  document width ${overflow}px at a 390px viewport`);
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

check("n", "anomaly score of a digit and its inverted version (shipped model, class label and null class, two seeds): inverted scores higher; class and seed reach the score", async ({ browser, base }) => {
  const page = await openPage(browser, base);
  try {
    await waitLoaded(page, "mnist");
    await toPanel(page);
    await setValue(page, "#tool-image", "3");
    await setValue(page, "#anomaly-t", 300);
    await setValue(page, "#anomaly-steps", 5);
    await sleep(200);
    const cls = await page.locator("#tool-class").inputValue();
    if (cls !== "3") fail(`#tool-class is ${JSON.stringify(cls)} for digit 3, not "3"`);
    /** Score the current image; returns [score, line]. */
    async function score(name) {
      const t0 = Date.now();
      await page.click("#anomaly-run", { force: true });
      await waitFor("#anomaly-score to start", async () =>
        (await page.locator("#anomaly-score").getAttribute("data-state")) !== "done", 5000, 50).catch(() => {});
      await waitToolDone(page, "#anomaly-score");
      const secs = (Date.now() - t0) / 1000;
      const s = Number(await page.locator("#anomaly-score").getAttribute("data-score"));
      const line = await text(page, "#anomaly-score");
      const ref = await text(page, "#anomaly-reference");
      log(`  ${name}: ${JSON.stringify(line)} (${secs.toFixed(1)} s)`);
      if (!(Number.isFinite(s) && s >= 0)) fail(`${name}: data-score = ${s}`);
      if (!/higher than \d+% of real digits/.test(line)) fail(`${name}: the score is not placed among real digits (reference missing?): ${ref}`);
      return [s, ref];
    }
    const scores = {};
    // Class 3 (the default), seed 0.
    const [digit, refClass] = await score("digit 3, class 3, seed 0");
    scores.digit = digit;
    if (!/own label/.test(refClass)) fail(`a class-3 score is not placed among class-conditioned real digits: ${refClass}`);
    // The 2-D canvas's own pixels (toDataURL): an element screenshot waits for the page to
    // be "stable", which timed out on a busy machine.
    const shot = async (kind) => {
      const url = await page.evaluate(() => document.getElementById("anomaly-canvas").toDataURL("image/png"));
      const buf = Buffer.from(url.replace(/^data:image\/png;base64,/, ""), "base64");
      fs.writeFileSync(path.join(OUT, `n-anomaly-${kind}.png`), buf);
      const st = imageStats(decodePng(buf));
      log(`  canvas ${fmtStats(st)}`);
      if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`${kind}: the reconstruction canvas is blank (${fmtStats(st)})`);
    };
    await shot("digit");
    // Another seed: another x_t, another score.
    await setValue(page, "#tool-seed", 1);
    await sleep(200);
    [scores.seed1] = await score("digit 3, class 3, seed 1");
    await setValue(page, "#tool-seed", 0);
    // The null class, placed among the null-class reference.
    await setValue(page, "#tool-class", "none");
    await sleep(200);
    const [nullScore, refNull] = await score("digit 3, null class, seed 0");
    scores.null = nullScore;
    if (!/null class/.test(refNull)) fail(`a null-class score is not placed among null-class real digits: ${refNull}`);
    // Back to class 3, seed 0: the first score again (the differences came from the controls).
    await setValue(page, "#tool-class", "3");
    await sleep(200);
    [scores.again] = await score("digit 3, class 3, seed 0 again");
    // The inverted digit (class 3).
    await page.click("#tool-invert", { force: true });
    await sleep(200);
    [scores.inverted] = await score("inverted 3, class 3, seed 0");
    await shot("inverted");
    await page.locator("#likelihood-panel").screenshot({ path: path.join(OUT, "n-anomaly-panel.png") }).catch((e) => log(`  (no panel screenshot: ${e.message.split("\n")[0]})`));
    log(`  #anomaly-reference: ${JSON.stringify((await text(page, "#anomaly-reference")).slice(0, 160))}`);
    if (scores.again !== scores.digit) fail(`the same settings scored ${scores.again}, first ${scores.digit}`);
    if (scores.null === scores.digit) fail(`the null class scored ${scores.null}, as class 3: the class label does not reach the score`);
    if (scores.seed1 === scores.digit) fail(`seed 1 scored ${scores.seed1}, as seed 0: the seed does not reach the score`);
    if (!(scores.inverted > scores.digit)) fail(`inverted digit scored ${scores.inverted}, not above the digit's ${scores.digit}`);
    failOnPanic(page);
  } finally {
    await page.context_.close();
  }
});

/**
 * Hold the particles at history row `row` of the current run with the `#lab-t` scrubber
 * (the animation stops while it holds a row): wait until the live run has reached the row,
 * then drag the scrubber there.
 */
async function holdRow(page, row) {
  for (let tries = 0; tries < 20; tries++) {
    await waitFor(`the particles to reach row ${row}`, async () => {
      failOnPanic(page);
      return page.evaluate((r) => Number(document.querySelector("#lab-t").value) >= r, row);
    });
    await setValue(page, "#lab-t", String(row));
    await sleep(500);
    const held = await page.evaluate((r) => document.querySelector("#lab-t").value === String(r), row);
    if (held) return;
    await page.click("#lab-live"); // the run restarted in between: follow it and try again
  }
  fail(`could not hold row ${row}`);
}

/** Screenshot the lab canvas until `ok(img)` holds (frames are slow on SwiftShader). */
async function labShotUntil(page, name, what, ok, timeoutMs = 90000) {
  let last = null;
  await waitFor(what, async () => {
    failOnPanic(page);
    const err = await errorText(page);
    if (err) fail(`#error is visible: ${err}`);
    last = await labShot(page, name);
    return ok(last);
  }, timeoutMs, 1000).catch((e) => {
    if (e instanceof CheckFailed || !last) throw e;
  });
  return last;
}

check("t", "lab field views: density (particles | exact q(x_t)) and score (learned | exact) render and differ", async ({ browser, base }) => {
  // Untrained (training never starts: the lab's training kernels are very slow on
  // SwiftShader), 500 data points so the exact density is cheap; held at row 0 (x_T, t = 100):
  // an untrained model's DDPM particles leave the view within two steps, while at x_T they
  // are N(0, I) draws, so both density panels must show the same blob.
  const page = await openPage(browser, `${base}?model=test-model/&particles=500&sample_steps=5&points=500#lab`);
  try {
    const t0 = Date.now();
    await labReady(page);
    await holdRow(page, 0);
    const reverse = await labShot(page, "t1-lab-reverse");
    const notBlank = (img) => {
      const st = imageStats(img);
      return st.std >= MIN_STD && st.colours >= MIN_COLOURS;
    };
    // Each panel on its own (left and right half of the canvas).
    const half = (img, right) => {
      const w = Math.floor(img.width / 2);
      const data = new Uint8Array(w * img.height * 4);
      for (let y = 0; y < img.height; y++) {
        const from = (y * img.width + (right ? img.width - w : 0)) * 4;
        data.set(img.data.subarray(from, from + w * 4), y * w * 4);
      }
      return { width: w, height: img.height, data };
    };
    const panelsOk = (img) => notBlank(half(img, false)) && notBlank(half(img, true));
    await setValue(page, "#lab-view", "density");
    if (!(await visible(page, "#lab-field-legend"))) fail("#lab-field-legend is hidden in the density view");
    const density = await labShotUntil(page, "t2-lab-density", "the density panels",
      (img) => panelsOk(img) && diffOk(imageDiff(reverse, img)));
    const legend = await text(page, "#lab-field-legend");
    await setValue(page, "#lab-view", "score");
    const score = await labShotUntil(page, "t3-lab-score", "the score panels",
      (img) => panelsOk(img) && diffOk(imageDiff(density, img)));
    const d = imageDiff(density, score);
    log(`  density: ${fmtStats(imageStats(density))}`);
    log(`  score:   ${fmtStats(imageStats(score))}`);
    log(`  density vs score: ${fmtDiff(d)}; legend: ${JSON.stringify(legend.slice(0, 120))}…`);
    log(`  ${((Date.now() - t0) / 1000).toFixed(1)} s from opening the lab`);
    log(`  legend scale: ${await text(page, "#lab-field-legend .lab-scale-max")}`);
    for (const [name, img] of [["density", density], ["score", score]]) {
      for (const right of [false, true]) {
        const st = imageStats(half(img, right));
        log(`  ${name} ${right ? "right" : "left"} panel: ${fmtStats(st)}`);
        if (!notBlank(half(img, right))) fail(`the ${name} view's ${right ? "right" : "left"} panel is blank (${fmtStats(st)})`);
      }
    }
    if (!diffOk(d)) fail(`the density and score views do not differ (${fmtDiff(d)})`);
    if (!/t = \d+ \(held/.test(legend)) fail(`the legend does not give the held t: ${legend}`);
  } finally {
    await page.context_.close();
  }
});

check("fv", "lab field views: per-class guided arrows (#lab-field-class) and picks drawn over the density and score panels", async ({ browser, base }) => {
  // Class-conditional moons (2 classes), small sizes so that SwiftShader keeps up; untrained.
  const page = await openPage(browser, `${base}?model=test-model/&preset=moons&classes=1&points=400&particles=300&sample_steps=5#lab`);
  try {
    const t0 = Date.now();
    const halfOf = (img, right) => {
      const w = Math.floor(img.width / 2);
      const data = new Uint8Array(w * img.height * 4);
      for (let y = 0; y < img.height; y++) {
        const from = (y * img.width + (right ? img.width - w : 0)) * 4;
        data.set(img.data.subarray(from, from + w * 4), y * w * 4);
      }
      return { width: w, height: img.height, data };
    };
    const notBlank = (img) => {
      const st = imageStats(img);
      return st.std >= MIN_STD && st.colours >= MIN_COLOURS;
    };
    const panelsOk = (img) => notBlank(halfOf(img, false)) && notBlank(halfOf(img, true));
    // Pure white (every channel ≥ 252): the picks' colour; no colour map reaches it (the
    // density map's top is (245, 250, 255), the arrows are cyan and orange).
    const white = (img) => {
      let n = 0;
      for (let i = 0; i < img.data.length; i += 4) {
        if (img.data[i] >= 252 && img.data[i + 1] >= 252 && img.data[i + 2] >= 252) n++;
      }
      return n;
    };
    // Screenshots until `ok` (frames are slow on SwiftShader); fails with `what` on timeout.
    const shotUntil = async (name, what, ok) => {
      let last = null;
      const t = Date.now();
      for (;;) {
        failOnPanic(page);
        const err = await errorText(page);
        if (err) fail(`#error is visible: ${err}`);
        last = await labShot(page, name);
        if (ok(last)) return last;
        if (Date.now() - t > 90000) fail(`timed out waiting for ${what} (screenshot ${name}.png)`);
        await sleep(1000);
      }
    };
    await labReady(page);
    // A finished run, so that every history row is recorded; then row 3 of 5 (t ≈ 25,
    // ᾱ ≈ 0.5; rows 4 and 5 both show t = 1), where the classes' exact scores differ clearly
    // and the untrained model's error map is not saturated everywhere (the score panels do
    // not depend on the particles).
    await holdFinishedRun(page);
    await setValue(page, "#lab-t", "3");
    await setValue(page, "#lab-view", "score");
    if (!(await visible(page, "#lab-field-class"))) fail("#lab-field-class is hidden in the score view of class-conditional data");
    const nullClass = await shotUntil("fv1-score-null-class", "the score panels", panelsOk);
    await setValue(page, "#lab-field-class", "1");
    const class1 = await shotUntil("fv2-score-class-1", "the class-1 arrows",
      (img) => panelsOk(img) && diffOk(imageDiff(nullClass, img)));
    const legend = await text(page, "#lab-field-legend .lab-legend-title");
    log(`  null class -> class 1: ${fmtDiff(imageDiff(nullClass, class1))}; legend: ${JSON.stringify(legend.slice(0, 90))}…`);
    if (!diffOk(imageDiff(nullClass, class1))) fail("the score panels did not change with the class");
    if (!/Class 1/.test(legend)) fail(`the legend does not name class 1: ${legend}`);
    // The density view of class 1: its particles and q(x_t | y = 1), against all points.
    await setValue(page, "#lab-view", "density");
    if (!(await visible(page, "#lab-field-class"))) fail("#lab-field-class is hidden in the density view");
    const dens1 = await shotUntil("fv2b-density-class-1", "the class-1 density panels",
      (img) => panelsOk(img) && diffOk(imageDiff(class1, img)));
    const dLegend = await text(page, "#lab-field-legend .lab-legend-title");
    if (!/q\(x_t \| y = 1\)/.test(dLegend)) fail(`the density legend does not name q(x_t | y = 1): ${dLegend}`);
    await setValue(page, "#lab-field-class", "");
    const densAll = await shotUntil("fv2c-density-all", "the all-points density panels",
      (img) => panelsOk(img) && diffOk(imageDiff(dens1, img)));
    log(`  density view, class 1 -> all points: ${fmtDiff(imageDiff(dens1, densAll))}; legend: ${JSON.stringify(dLegend.slice(0, 90))}…`);
    // Picks at x_T (row 0: the particles are N(0, I) draws, many near the origin): click the
    // centre of the left panel (panel_rects in src/web/engine/lab.rs, in CSS pixels).
    await setValue(page, "#lab-t", "0");
    await sleep(500);
    const box = await page.locator("#lab-canvas").boundingBox();
    const gap = Math.min(8, box.width / 8);
    const side = Math.max(1, Math.min((box.width - 3 * gap) / 2, box.height - 2 * gap));
    const x0 = Math.max(0, (box.width - 2 * side - gap) / 2);
    const y0 = Math.max(0, (box.height - side) / 2);
    await page.mouse.click(box.x + x0 + side / 2, box.y + y0 + side / 2);
    await waitFor("picked particles", async () => {
      failOnPanic(page);
      return /\d+ particles picked/.test(await text(page, ".lab-picks"));
    }, 30000);
    const picks = await text(page, ".lab-picks");
    for (const [view, name] of [["score", "fv3-score-picks"], ["density", "fv4-density-picks"]]) {
      await setValue(page, "#lab-view", view);
      const img = await shotUntil(name, `picks over both ${view} panels`,
        (im) => panelsOk(im) && white(halfOf(im, false)) > 0 && white(halfOf(im, true)) > 0);
      const [l, r] = [white(halfOf(img, false)), white(halfOf(img, true))];
      log(`  ${view} view with ${picks.split(".")[0]}: ${l} | ${r} white pixels (left | right panel)`);
      if (!(l > 0 && r > 0)) fail(`the picks are not drawn over both ${view} panels (${l} | ${r} white pixels)`);
    }
    // Without picks the panels have no pure white.
    await page.click("#lab-clear-picks");
    const cleared = await shotUntil("fv5-density-no-picks", "the picks to go",
      (im) => white(im) === 0);
    if (white(cleared) !== 0) fail(`${white(cleared)} white pixels left after clearing the picks`);
    log(`  ${((Date.now() - t0) / 1000).toFixed(1)} s from opening the lab`);
  } finally {
    await page.context_.close();
  }
});

// ---------- main
async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  prepareModels();
  const { base, serverLog } = await startServer();
  let browser = null;
  let passed = 0, failed = 0;
  const results = [];
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: !HEADED,
      args: CHROMIUM_ARGS,
      timeout: 60000,
    });
    log(`browser: ${CHROMIUM} ${browser.version()}`);
    log(`WebGPU: ${await probeWebGpu(browser, base)}`);
    for (const c of checks) {
      if (ONLY && !ONLY.includes(c.id)) continue;
      // Slow checks (the lab's training on SwiftShader, see docs/lab.md) run when named in
      // --only or with E2E_SLOW=1.
      if (c.slow && !ONLY && !process.env.E2E_SLOW) {
        log(`\n[${c.id}] ${c.name}: skipped (slow on SwiftShader; --only ${c.id} or E2E_SLOW=1 runs it)`);
        continue;
      }
      log(`\n[${c.id}] ${c.name}`);
      const t0 = Date.now();
      const from = shared.page ? shared.page.consoleLog.length : 0;
      try {
        await c.fn({ browser, base });
        // The shared page (checks a-d): only what this check caused.
        if (["a", "b", "c", "d"].includes(c.id) && shared.page) failOnPanic(shared.page, c.id === "a" ? 0 : from);
        passed++;
        results.push(`  ok    ${c.id}  ${c.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
        log(`  ok (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        failed++;
        results.push(`  FAIL  ${c.id}  ${c.name}: ${e.message.split("\n")[0]}`);
        log(`  FAIL: ${e.message}`);
        if (lastPage) {
          try {
            await shot(lastPage, `fail-${c.id}`);
          } catch {}
          const tail = lastPage.consoleLog.slice(-15).map((l) => l.split("\n")[0].slice(0, 400));
          if (tail.length) log("  last console lines:\n    " + tail.join("\n    "));
        }
      }
    }
  } catch (e) {
    failed++;
    results.push(`  FAIL  setup: ${e.message.split("\n")[0]}`);
    log(`setup failed: ${e.stack || e.message}`);
    if (serverLog.length) log("http.server log tail:\n" + serverLog.slice(-10).join(""));
  } finally {
    if (browser) await browser.close().catch(() => {});
    stopServer();
    removeModels();
  }
  log("\n" + results.join("\n"));
  log(`screenshots: ${path.relative(ROOT, OUT) || OUT}/`);
  log(`E2E: ${passed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    stopServer();
    removeModels();
    process.exit(130);
  });
}

main().catch((e) => {
  stopServer();
  console.error(e.stack || e.message);
  log("E2E: 0 passed, 1 failed");
  process.exit(1);
});
