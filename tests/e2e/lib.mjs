// Shared helpers of the browser end-to-end scripts (tests/e2e/run.mjs, the checks;
// tests/e2e/soak.mjs, the page soak): options, the static server, the Chromium flags that
// give headless Chromium WebGPU, opening a page that records its console and panics, and
// driving the app through the DOM ids of its contract (docs/web.md).
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// ---------- options
export const args = process.argv.slice(2);
export function opt(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}
export const DIST = path.resolve(opt("--dist", path.join(ROOT, "dist")));
export const OUT = path.resolve(opt("--out", path.join(ROOT, "target/e2e")));
export const HEADED = args.includes("--headed");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const TIMEOUT_MS = 1000 * Number(process.env.E2E_TIMEOUT_S || 300);
export const FIXTURE = path.join(ROOT, "tests/fixtures/class_cond");
export const MODEL_FILES = ["config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"];

// Headless Chromium exposes WebGPU (on SwiftShader without a GPU) only with the first two
// flags. The next two make a WebGPU *canvas* work: without them the device is lost ~0.1 s
// after the first frame is presented ("Device was destroyed." / "A valid external Instance
// reference no longer exists.") and screenshots show the canvas blank; with them (ANGLE on
// Vulkan, Vulkan on SwiftShader) the device lives and the canvas screenshots as drawn.
// Checked with a one-page WebGPU clear on Chromium 156; each of the two alone is not enough.
// The rest keep it quiet and working as root in a container.
export const CHROMIUM_ARGS = [
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

// ---------- small helpers
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const log = (...a) => console.log(...a);

/** A failure that ends a check at once (waitFor retries other errors until its timeout). */
export class CheckFailed extends Error {}
export function fail(msg) {
  throw new CheckFailed(msg);
}

export async function freePort() {
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
export async function waitFor(what, fn, timeoutMs = TIMEOUT_MS, everyMs = 250) {
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

// ---------- the model folders the tests load
export function prepareModels() {
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
export function removeModels() {
  // dist/ stays deployable: the test models are not part of the site.
  for (const d of ["test-model", "bad-model"]) {
    fs.rmSync(path.join(DIST, d), { recursive: true, force: true });
  }
}

// ---------- static server: python3 -m http.server, stopped by its PID
let server = null;
export async function startServer() {
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
export function stopServer() {
  if (server && server.exitCode === null) {
    try {
      process.kill(server.pid, "SIGTERM");
    } catch {}
  }
  server = null;
}

// ---------- the page
/** The page opened last (its console is printed when a check fails). */
export let lastPage = null;
/** Open a page, recording console errors, page errors and panics. */
export async function openPage(browser, url, viewport = { width: 1280, height: 720 }, initScript = null) {
  const context = await browser.newContext({ viewport });
  // A script of the caller's, run in the page before the page's own (e.g. the soak's counters).
  if (initScript) await context.addInitScript(initScript);
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
export function panics(page, from = 0) {
  return page.consoleLog
    .slice(from)
    .filter((l) => /panicked at|RuntimeError: unreachable|\[pageerror\]/.test(l))
    .map((l) => l.split("\n").slice(0, 2).join(" ").slice(0, 300));
}
/** Fail at once when the page has panicked (then nothing it was waiting for will come). */
export function failOnPanic(page, from = 0) {
  const p = panics(page, from);
  if (p.length) fail(`page panicked / threw: ${p.join(" | ")}`);
}

export async function text(page, sel) {
  const loc = page.locator(sel);
  return (await loc.count()) ? (await loc.first().innerText()).trim() : null;
}
export async function visible(page, sel) {
  const loc = page.locator(sel);
  return (await loc.count()) > 0 && (await loc.first().isVisible());
}
export async function errorText(page) {
  return (await visible(page, "#error")) ? await text(page, "#error") : null;
}
export async function panelState(page) {
  return page.locator("#reverse-panel").getAttribute("data-state");
}

export async function shot(page, name) {
  const file = path.join(OUT, `${name}.png`);
  // A page that is animating a run on SwiftShader renders a frame only every few seconds on a
  // busy 2-core machine; 30 s (Playwright's default) timed out there once (check h).
  await page.screenshot({ path: file, timeout: 90000 });
  return file;
}

export async function setValue(page, sel, value) {
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
export async function waitLoaded(page, needle) {
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
export async function runToDone(page) {
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
export async function probeWebGpu(browser, base) {
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
