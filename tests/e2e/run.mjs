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
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { decodePng, imageDiff, imageStats } from "./png.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// ---------- options
const args = process.argv.slice(2);
function opt(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}
const DIST = path.resolve(opt("--dist", path.join(ROOT, "dist")));
const OUT = path.resolve(opt("--out", path.join(ROOT, "target/e2e")));
const ONLY = opt("--only", null)?.split(",").map((s) => s.trim());
const HEADED = args.includes("--headed");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT_MS = 1000 * Number(process.env.E2E_TIMEOUT_S || 300);
const FIXTURE = path.join(ROOT, "tests/fixtures/class_cond");
const MODEL_FILES = ["config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"];

// Headless Chromium exposes WebGPU (on SwiftShader without a GPU) only with the first two
// flags. The next two make a WebGPU *canvas* work: without them the device is lost ~0.1 s
// after the first frame is presented ("Device was destroyed." / "A valid external Instance
// reference no longer exists.") and screenshots show the canvas blank; with them (ANGLE on
// Vulkan, Vulkan on SwiftShader) the device lives and the canvas screenshots as drawn.
// Checked with a one-page WebGPU clear on Chromium 156; each of the two alone is not enough.
// The rest keep it quiet and working as root in a container.
const CHROMIUM_ARGS = [
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=swiftshader",
  "--use-angle=vulkan",
  "--no-sandbox",
  "--disable-gpu-sandbox",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--no-first-run",
];

// Two screenshots "differ" when the mean absolute difference per channel exceeds MIN_MAD
// (0..255) and more than MIN_CHANGED of the pixels moved by more than 16 levels.
const MIN_MAD = 2;
const MIN_CHANGED = 0.02;
// A canvas is "blank" (all one colour, or nearly) below these.
const MIN_STD = 3;
const MIN_COLOURS = 8;

// ---------- small helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(...a);

/** A failure that ends a check at once (waitFor retries other errors until its timeout). */
class CheckFailed extends Error {}
function fail(msg) {
  throw new CheckFailed(msg);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Poll `fn` (async, returns a truthy value when done) until it succeeds or time runs out. */
async function waitFor(what, fn, timeoutMs = TIMEOUT_MS, everyMs = 250) {
  const t0 = Date.now();
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      if (e instanceof CheckFailed) throw e;
      last = e;
    }
    if (Date.now() - t0 > timeoutMs) {
      fail(`timed out after ${Math.round((Date.now() - t0) / 1000)} s waiting for ${what}` +
        (last instanceof Error ? ` (last error: ${last.message.split("\n")[0]})` : ""));
    }
    await sleep(everyMs);
  }
}

function diffOk(d) {
  return d.mad > MIN_MAD && d.changed > MIN_CHANGED;
}
function fmtDiff(d) {
  return d.sizeChanged ? "size changed" : `mean |diff| ${d.mad.toFixed(2)}, ${(100 * d.changed).toFixed(1)}% of pixels changed`;
}
function fmtStats(s) {
  return `luma mean ${s.mean.toFixed(1)}, std ${s.std.toFixed(1)}, ${s.colours > 4096 ? ">4096" : s.colours} colours`;
}

// ---------- the model folders the tests load
function prepareModels() {
  if (!fs.existsSync(path.join(DIST, "index.html"))) {
    fail(`${DIST}/index.html not found: run \`trunk build --release\` first`);
  }
  const good = path.join(DIST, "test-model");
  const bad = path.join(DIST, "bad-model");
  for (const dir of [good, bad]) fs.mkdirSync(dir, { recursive: true });
  for (const f of MODEL_FILES) {
    fs.copyFileSync(path.join(FIXTURE, f), path.join(good, f));
    fs.copyFileSync(path.join(FIXTURE, f), path.join(bad, f));
  }
  // A truncated weights file: the safetensors header is intact, half of the data is missing.
  const st = fs.readFileSync(path.join(FIXTURE, "diffusion_pytorch_model.safetensors"));
  fs.writeFileSync(path.join(bad, "diffusion_pytorch_model.safetensors"), st.subarray(0, st.length >> 1));
}
function removeModels() {
  // dist/ stays deployable: the test models are not part of the site.
  for (const d of ["test-model", "bad-model"]) {
    fs.rmSync(path.join(DIST, d), { recursive: true, force: true });
  }
}

// ---------- static server: python3 -m http.server, stopped by its PID
let server = null;
async function startServer() {
  const port = await freePort();
  server = spawn("python3", ["-m", "http.server", String(port), "--bind", "127.0.0.1"], {
    cwd: DIST,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const serverLog = [];
  server.stderr.on("data", (d) => {
    serverLog.push(d.toString());
    if (serverLog.length > 200) serverLog.shift();
  });
  server.on("exit", (code) => {
    if (server && code !== null) log(`(http.server exited with ${code})`);
  });
  const base = `http://127.0.0.1:${port}/`;
  await waitFor("the static server to answer", async () => (await fetch(base)).ok, 20000, 100);
  log(`serving ${DIST} at ${base} (python3 http.server, pid ${server.pid})`);
  return { base, serverLog };
}
function stopServer() {
  if (server && server.exitCode === null) {
    try {
      process.kill(server.pid, "SIGTERM");
    } catch {}
  }
  server = null;
}

// ---------- the page
/** Open a page, recording console errors, page errors and panics. */
async function openPage(browser, url, viewport = { width: 1280, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const consoleLog = [];
  page.on("console", (m) => {
    consoleLog.push(`[${m.type()}] ${m.text()}`);
  });
  page.on("pageerror", (e) => consoleLog.push(`[pageerror] ${e.message}`));
  page.consoleLog = consoleLog;
  lastPage = page;
  page.context_ = context;
  // Record every data-state the reverse panel passes through (a short run can go
  // idle -> running -> done between two polls).
  await page.addInitScript(() => {
    window.__states = [];
    const record = () => {
      const el = document.getElementById("reverse-panel");
      const s = el ? el.getAttribute("data-state") : null;
      if (s !== null && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
    };
    const start = () => {
      new MutationObserver(record).observe(document.documentElement, {
        subtree: true,
        childList: true,
        attributes: true,
        attributeFilter: ["data-state"],
      });
      setInterval(record, 50);
      record();
    };
    if (document.documentElement) start();
    else document.addEventListener("DOMContentLoaded", start);
  });
  await page.goto(url, { waitUntil: "load", timeout: 60000 });
  return page;
}

/** Panics and uncaught errors on `page` (from console line `from` on), first lines only. */
function panics(page, from = 0) {
  return page.consoleLog
    .slice(from)
    .filter((l) => /panicked at|RuntimeError: unreachable|\[pageerror\]/.test(l))
    .map((l) => l.split("\n").slice(0, 2).join(" ").slice(0, 300));
}
/** Fail at once when the page has panicked (then nothing it was waiting for will come). */
function failOnPanic(page, from = 0) {
  const p = panics(page, from);
  if (p.length) fail(`page panicked / threw: ${p.join(" | ")}`);
}

async function text(page, sel) {
  const loc = page.locator(sel);
  return (await loc.count()) ? (await loc.first().innerText()).trim() : null;
}
async function visible(page, sel) {
  const loc = page.locator(sel);
  return (await loc.count()) > 0 && (await loc.first().isVisible());
}
async function errorText(page) {
  return (await visible(page, "#error")) ? await text(page, "#error") : null;
}
async function panelState(page) {
  return page.locator("#reverse-panel").getAttribute("data-state");
}

async function shot(page, name) {
  const file = path.join(OUT, `${name}.png`);
  // A page that is animating a run on SwiftShader renders a frame only every few seconds on a
  // busy 2-core machine; 30 s (Playwright's default) timed out there once (check h).
  await page.screenshot({ path: file, timeout: 90000 });
  return file;
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

async function setValue(page, sel, value) {
  const loc = page.locator(sel);
  if ((await loc.count()) === 0) fail(`${sel} not found`);
  const tag = await loc.evaluate((el) => el.tagName.toLowerCase());
  if (tag === "select") {
    await loc.selectOption(String(value));
  } else {
    await loc.evaluate((el, v) => {
      el.value = v;
      el.dispatchEvent(new Event("input", { bubbles: true }));
      el.dispatchEvent(new Event("change", { bubbles: true }));
    }, String(value));
  }
}

/**
 * Wait until a model is loaded: `#model-name` shows something, no progress bar, `#status` no
 * longer says loading, `#play` enabled, no error. Notes when the name does not mention `needle`
 * (the contract allows the model's name or its source).
 */
async function waitLoaded(page, needle) {
  const name = await waitFor(`#model-name to show a loaded model`, async () => {
    failOnPanic(page);
    const err = await errorText(page);
    if (err) fail(`#error is visible: ${err}`);
    const name = (await text(page, "#model-name")) || "";
    if (!name) return false;
    if (await visible(page, "#model-progress")) return false;
    const status = (await text(page, "#status")) || "";
    if (/loading/i.test(status)) return false;
    if (await page.locator("#play").isDisabled()) return false;
    return name;
  });
  if (!name.includes(needle)) log(`  note: #model-name ${JSON.stringify(name)} does not mention ${needle}`);
  return name;
}

/** Start a run with the current settings and wait for the panel to reach "done". */
async function runToDone(page) {
  const mark = await page.evaluate(() => window.__states.length);
  let state = await panelState(page);
  const since = () => page.evaluate((m) => window.__states.slice(m), mark);
  if (state === "done" || state === "running") {
    // Back to the start of the chain with the new settings (the app may reset by itself
    // when a setting changes; then the state is already idle). #restart may also start
    // playing by itself: give it a moment before pressing #play, which toggles.
    await page.click("#restart");
    await waitFor("#restart to start a run", async () => (await since()).includes("running"), 2000, 50)
      .catch(() => {});
  }
  state = await panelState(page);
  if (!(await since()).includes("running") && state !== "running") {
    await page.click("#play");
  }
  const t0 = Date.now();
  let resumes = 0;
  await waitFor("#reverse-panel[data-state=done]", async () => {
    failOnPanic(page);
    const err = await errorText(page);
    if (err) fail(`#error is visible: ${err}`);
    const s = await since();
    const now = await panelState(page);
    if (s.includes("done") && now === "done") return true;
    // A press that landed as a pause (the run had just started by itself): resume, once or twice.
    if (now === "paused" && resumes < 2) {
      resumes++;
      log("  (run paused: pressing #play to resume)");
      await page.click("#play");
    }
    return false;
  });
  return Date.now() - t0;
}

/**
 * Which WebGPU adapter Chromium offers, asked from a page of its own: a second
 * requestAdapter() inside the page under test can take the app's device away.
 */
async function probeWebGpu(browser, base) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    await page.goto(`${base}e2e-webgpu-probe`, { waitUntil: "load" }); // a 404 page is enough
    return await page.evaluate(async () => {
      if (!navigator.gpu) return "navigator.gpu missing (no WebGPU: check the Chromium flags)";
      const a = await navigator.gpu.requestAdapter();
      if (!a) return "requestAdapter() returned null (no WebGPU adapter)";
      const i = a.info || {};
      return `adapter ${[i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(" / ") || "(no info)"}`;
    });
  } catch (e) {
    return `probe failed: ${e.message.split("\n")[0]}`;
  } finally {
    await context.close();
  }
}

// ---------- the checks
const checks = [];
function check(id, name, fn, opts = {}) {
  checks.push({ id, name, fn, slow: !!opts.slow });
}
const shared = {};
let lastPage = null; // the page opened last: its console is printed when a check fails

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

check("f", "default page loads the shipped MNIST model; a 4-step DDIM run of class 7 finishes", async ({ browser, base }) => {
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
// E2E_LAB_FIT: the fit threshold of check p as a multiple of the fit figure's floor (default 2,
// the target); E2E_LAB_S: how long p may train (default 110 s of page time).
const LAB_FIT = Number(process.env.E2E_LAB_FIT || 2);
const LAB_S = Number(process.env.E2E_LAB_S || 60);

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
    await page.click("#lab-live"); // the run restarted in between: follow it and try again
  }
  fail("could not hold a finished run");
}

// Sizes of check p (URL parameters of the lab): on SwiftShader the lab trains at ~3-5 steps/s
// (batch 512) but a particle step of 10,000 particles takes seconds (docs/lab.md, Speed), so
// the default check trains a small configuration; E2E_LAB_URL overrides it (e.g.
// "particles=10000" for the page's defaults).
const LAB_URL = process.env.E2E_LAB_URL || "particles=200&sample_steps=5&lab_batch=32";

check("p", "lab: the default preset trains; the fit figure is measured and falls below the untrained one; canvas not blank", async ({ browser, base }) => {
  const page = await openPage(browser, `${base}?model=test-model/&${LAB_URL}#lab`);
  try {
    await labReady(page);
    // The first run of the particles, before any training, gives the untrained figure.
    const u = await nextFit(page, -1);
    log(`  untrained: fit ${u.fit} (floor ${u.floor}) = ${(u.fit / u.floor).toFixed(1)}x floor`);
    await shot(page, "p1-lab-untrained");
    await page.click("#lab-train");
    const t0 = Date.now();
    let a = await labAttrs(page);
    let best = null;
    for (;;) {
      failOnPanic(page);
      const err = await errorText(page);
      if (err) fail(`#error is visible: ${err}`);
      a = await labAttrs(page);
      if (a.fit !== null && a.floor && a.fitStep > 0) {
        const r = a.fit / a.floor;
        if (best === null || r < best.r) best = { r, step: a.fitStep };
        if (r <= LAB_FIT) break;
      }
      if (a.trainS !== null && a.trainS > LAB_S && a.fitStep > 0) break;
      if (Date.now() - t0 > TIMEOUT_MS) break;
      await sleep(1000);
    }
    await shot(page, "p2-lab-trained");
    const stats = await labCanvasStats(page, "p3-lab-canvas");
    log(`  steps ${a.steps}, ${a.sps?.toFixed(3)} steps/s, ${a.gflops?.toFixed(4)} GFLOP/s, ` +
      `${a.fps?.toFixed(2)} frames/s (${LAB_URL}), ${a.trainS?.toFixed(1)} s of training`);
    log(`  fit ${a.fit} (floor ${a.floor}, untrained ${a.untrained}) = ${(a.fit / a.floor).toFixed(2)}x floor at step ${a.fitStep}; ` +
      `best ${best ? best.r.toFixed(2) : "-"}x; time to 2x floor: ${a.ttf !== null ? a.ttf + " s" : "not reached"}`);
    log(`  canvas: ${fmtStats(stats)}`);
    if (stats.std < MIN_STD || stats.colours < MIN_COLOURS) fail(`#lab-canvas is blank (${fmtStats(stats)})`);
    if (!(a.steps > 0)) fail("no training steps were taken");
    if (!(a.fitStep > 0)) fail("no fit figure after training started");
    if (!(a.untrained > 0) || !(a.fit < a.untrained)) fail(`the fit figure ${a.fit} is not below the untrained model's ${a.untrained}`);
    if (process.env.E2E_LAB_FIT && !(a.fit / a.floor <= LAB_FIT)) {
      fail(`fit figure ${(a.fit / a.floor).toFixed(2)}x its floor after ${a.trainS} s of training (threshold ${LAB_FIT}x)`);
    }
  } finally {
    await page.context_.close();
  }
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
  try {
    await labReady(page);
    await page.click("#lab-draw");
    await page.click("#lab-draw-use");
    const err = await waitFor("#error for an empty drawing", async () => errorText(page), 10000);
    log(`  empty drawing: ${JSON.stringify(err)}`);
    if (!/empty/i.test(err)) fail(`#error does not say the drawing is empty: ${err}`);
    await page.click("#dismiss-error");
    const box = await page.locator("#lab-canvas").boundingBox();
    await page.click("#lab-class-0");
    await stroke(page, box, [[0.25, 0.3], [0.3, 0.45], [0.25, 0.6], [0.3, 0.7]]);
    await page.click("#lab-class-2");
    await stroke(page, box, [[0.7, 0.3], [0.75, 0.45], [0.7, 0.6], [0.75, 0.7]]);
    await shot(page, "r1-drawing");
    await page.click("#lab-draw-use");
    await labReady(page);
    const info = await text(page, "#lab-data-info");
    log(`  drawn data: ${info}`);
    if (!/2 classes/.test(info)) fail(`expected a 2-class data set, #lab-data-info says ${info}`);
    if (!(await visible(page, "#lab-guidance"))) fail("#lab-guidance is hidden for class-conditional data");
    await page.click("#lab-train");
    await waitFor("20 training steps", async () => {
      failOnPanic(page);
      const e = await errorText(page);
      if (e) fail(`#error is visible: ${e}`);
      return (await labAttrs(page)).steps >= 20;
    });
    await page.click("#lab-train"); // pause: the weights stay put while guidance is compared
    await holdFinishedRun(page);
    const img1 = await labShot(page, "r2-guidance-1");
    await page.click("#lab-live");
    await setValue(page, "#lab-guidance", "5");
    await sleep(1000);
    await holdFinishedRun(page);
    const img5 = await labShot(page, "r3-guidance-5");
    const d = imageDiff(img1, img5);
    log(`  guidance 1 -> 5 (same weights, same noise): ${fmtDiff(d)}; canvas at w=1: ${fmtStats(imageStats(img1))}`);
    if (!diffOk(d)) fail(`the samples did not change with guidance (${fmtDiff(d)})`);
  } finally {
    await page.context_.close();
  }
}, { slow: true });

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
    if (json.batch !== 512) fail(`batch = ${json.batch}`);
  } finally {
    await page.context_.close();
  }
}, { slow: true });

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
