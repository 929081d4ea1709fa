// node bench/lab_kernels/run.mjs [--dir shaders] [--reps 3] [--only a,b] [--frows 16] [--gunits 64] [--trows 16] [--particles N]: serves the repository
// root on 127.0.0.1 and runs page.html in headless Chromium on SwiftShader (flags as
// tests/e2e/run.mjs), printing each lab kernel's time per dispatch.
// `--page draw [--points N] [--size PX]` runs draw.html instead: the lab's picture (points
// renderer variants, offscreen and into a canvas per animation frame).
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const args = process.argv.slice(2);
const opt = (n, d) => { const i = args.indexOf(n); return i >= 0 ? args[i + 1] : d; };
const server = http.createServer((req, res) => {
  const p = path.join(ROOT, decodeURIComponent(new URL(req.url, "http://x").pathname));
  if (!p.startsWith(ROOT) || !fs.existsSync(p)) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "content-type": p.endsWith(".html") ? "text/html" : "text/plain" });
  res.end(fs.readFileSync(p));
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
  args: ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
    "--use-angle=vulkan", "--no-sandbox", "--disable-gpu-sandbox", "--disable-dev-shm-usage",
    ...(process.env.EXTRA_ARGS ? process.env.EXTRA_ARGS.split(" ") : [])],
});
const page = await browser.newPage();
page.on("console", (m) => console.log(m.text()));
const qs = new URLSearchParams({ dir: opt("--dir", "shaders"), reps: opt("--reps", "3"), ...(opt("--only") ? { only: opt("--only") } : {}),
  ...(opt("--frows") ? { frows: opt("--frows") } : {}), ...(opt("--gunits") ? { gunits: opt("--gunits") } : {}), ...(opt("--trows") ? { trows: opt("--trows") } : {}), ...(opt("--particles") ? { particles: opt("--particles") } : {}),
  ...(opt("--points") ? { points: opt("--points") } : {}), ...(opt("--size") ? { size: opt("--size") } : {}) });
await page.goto(`${base}/bench/lab_kernels/${opt("--page", "page")}.html?${qs}`);
await page.waitForFunction(() => /done|error/.test(document.getElementById("out").textContent), null, { timeout: 1000 * Number(opt("--timeout", "600")) });
await browser.close();
server.close();
