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
function check(id, name, fn) {
  checks.push({ id, name, fn });
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

check("n", "anomaly score of a digit and of its inverted version (shipped model): inverted scores higher", async ({ browser, base }) => {
  const page = await openPage(browser, base);
  try {
    await waitLoaded(page, "mnist");
    await toPanel(page);
    await setValue(page, "#tool-image", "3");
    await setValue(page, "#anomaly-t", 300);
    await setValue(page, "#anomaly-steps", 5);
    const scores = {};
    for (const kind of ["digit", "inverted"]) {
      if (kind === "inverted") {
        await page.click("#tool-invert", { force: true });
        await sleep(200);
      }
      const t0 = Date.now();
      await page.click("#anomaly-run", { force: true });
      await waitFor("#anomaly-score to start", async () =>
        (await page.locator("#anomaly-score").getAttribute("data-state")) !== "done", 5000, 50).catch(() => {});
      await waitToolDone(page, "#anomaly-score");
      const secs = (Date.now() - t0) / 1000;
      const score = Number(await page.locator("#anomaly-score").getAttribute("data-score"));
      const line = await text(page, "#anomaly-score");
      // The 2-D canvas's own pixels (toDataURL): an element screenshot waits for the page to
      // be "stable", which timed out on a busy machine.
      const url = await page.evaluate(() => document.getElementById("anomaly-canvas").toDataURL("image/png"));
      const buf = Buffer.from(url.replace(/^data:image\/png;base64,/, ""), "base64");
      fs.writeFileSync(path.join(OUT, `n-anomaly-${kind}.png`), buf);
      const img = decodePng(buf);
      const st = imageStats(img);
      log(`  ${kind}: ${JSON.stringify(line)} (${secs.toFixed(1)} s); canvas ${fmtStats(st)}`);
      if (!(Number.isFinite(score) && score >= 0)) fail(`${kind}: data-score = ${score}`);
      if (st.std < MIN_STD || st.colours < MIN_COLOURS) fail(`${kind}: the reconstruction canvas is blank (${fmtStats(st)})`);
      if (!/higher than \d+% of real digits/.test(line)) fail(`${kind}: the score is not placed among real digits (reference missing?)`);
      scores[kind] = score;
    }
    await page.locator("#likelihood-panel").screenshot({ path: path.join(OUT, "n-anomaly-panel.png") }).catch((e) => log(`  (no panel screenshot: ${e.message.split("\n")[0]})`));
    log(`  #anomaly-reference: ${JSON.stringify((await text(page, "#anomaly-reference")).slice(0, 160))}`);
    if (!(scores.inverted > scores.digit)) fail(`inverted digit scored ${scores.inverted}, not above the digit's ${scores.digit}`);
    failOnPanic(page);
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
