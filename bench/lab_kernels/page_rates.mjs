// node bench/lab_kernels/page_rates.mjs [--dist dist] [--url "particles=10000"] [--seconds 90] [--debug]
//
// The Lab tab's rates in headless Chromium (SwiftShader without a GPU), from a `trunk build
// --release` in dist/: opens `?model=test-model/&URL#lab`, waits for the lab to be ready,
// presses Train and prints #lab-rate's data attributes every 5 s (frames/s, sampler steps/s,
// training steps/s, GFLOP/s), then the medians over the second half of the run.
// Uses tests/e2e/lib.mjs (the e2e's server, models and Chromium flags).
import { chromium } from "playwright-core";
import {
  CHROMIUM, CHROMIUM_ARGS, log, openPage, opt, prepareModels, removeModels, sleep, startServer,
  stopServer, waitFor,
} from "../../tests/e2e/lib.mjs";

const URL_PARAMS = opt("--url", "particles=10000");
const SECONDS = Number(opt("--seconds", "90"));

async function rates(page) {
  return page.evaluate(() => {
    const r = document.getElementById("lab-rate");
    const p = document.getElementById("lab-panel");
    const num = (a) => (r && r.getAttribute(a) ? Number(r.getAttribute(a)) : null);
    return {
      state: p ? p.getAttribute("data-state") : null,
      steps: num("data-steps"),
      sps: num("data-steps-per-s"),
      gflops: num("data-gflops"),
      fps: num("data-fps"),
      sampling: num("data-sample-steps-per-s"),
      trainS: num("data-train-s"),
    };
  });
}

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[s.length >> 1] : NaN;
};

async function main() {
  prepareModels();
  const { base } = await startServer();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await openPage(browser, `${base}?model=test-model/&${URL_PARAMS}#lab`);
    // --debug: the loop's phase timings (`lab_debug` in the URL) as they come.
    if (process.argv.includes("--debug")) page.on("console", (m) => m.text().startsWith("lab:") && log(m.text()));
    await waitFor("the lab to be ready", async () => (await rates(page)).state === "ready");
    await page.click("#lab-train", { timeout: 300000 });
    const t0 = Date.now();
    const rows = [];
    while (Date.now() - t0 < SECONDS * 1000) {
      await sleep(5000);
      const a = await rates(page);
      rows.push(a);
      log(`${((Date.now() - t0) / 1000).toFixed(0)} s: ${a.fps?.toFixed(2)} frames/s, sampling ${a.sampling?.toFixed(3)} steps/s, ` +
        `training ${a.sps?.toFixed(2)} steps/s (${a.gflops?.toFixed(3)} GFLOP/s), step ${a.steps}`);
    }
    const late = rows.slice(rows.length >> 1);
    log(`${URL_PARAMS}, medians over the last ${late.length} samples: ` +
      `${median(late.map((a) => a.fps)).toFixed(2)} frames/s, sampling ${median(late.map((a) => a.sampling)).toFixed(3)} steps/s, ` +
      `training ${median(late.map((a) => a.sps)).toFixed(2)} steps/s = ${median(late.map((a) => a.gflops)).toFixed(3)} GFLOP/s`);
  } finally {
    await browser.close();
    stopServer();
    removeModels();
  }
}

main().catch((e) => {
  stopServer();
  removeModels();
  console.error(e.stack || e.message);
  process.exit(1);
});
