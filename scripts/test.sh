#!/usr/bin/env bash
# kakusan's whole test suite: formatting, lints (native and wasm32), native tests on the
# first Vulkan adapter (llvmpipe on a machine without a GPU), the release CLI build, the
# browser smoke test in headless Chromium (WebGPU on SwiftShader), and the browser app:
# `trunk build --release` and its end-to-end tests (tests/e2e, Playwright + Chromium).
#
# Needs what .ci/run installs: mesa-vulkan-drivers, chromium, chromium-driver, the
# wasm32-unknown-unknown target, clippy, rustfmt, wasm-bindgen-cli (for
# wasm-bindgen-test-runner and trunk), trunk, and `npm ci` (binaryen's wasm-opt,
# playwright-core). Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Vulkan loaders complain when XDG_RUNTIME_DIR is unset or not 0700; give them a private one.
if [[ -z "${XDG_RUNTIME_DIR:-}" || ! -d "${XDG_RUNTIME_DIR}" || ! -O "${XDG_RUNTIME_DIR}" ]]; then
    XDG_RUNTIME_DIR="$(mktemp -d "${TMPDIR:-/tmp}/kakusan-xdg.XXXXXX")"
fi
chmod 0700 "$XDG_RUNTIME_DIR"
export XDG_RUNTIME_DIR
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"

SUMMARY=()
CURRENT=""
START_ALL=$(date +%s)

now() { date +%s; }

on_exit() {
    local rc=$?
    if [[ $rc -ne 0 && -n "$CURRENT" ]]; then
        echo
        echo "FAILED: $CURRENT (exit $rc)"
    fi
    if [[ ${#SUMMARY[@]} -gt 0 ]]; then
        echo
        echo "== summary =="
        printf '  %s\n' "${SUMMARY[@]}"
    fi
    echo "total: $(( $(now) - START_ALL )) s"
}
trap on_exit EXIT

# step NAME COMMAND...: print a header, run, record the time. set -e stops at a failure.
step() {
    local name=$1
    shift
    CURRENT=$name
    echo
    echo "== $name =="
    echo "+ $*"
    local t0
    t0=$(now)
    "$@"
    local dt=$(( $(now) - t0 ))
    SUMMARY+=("$(printf '%-28s ok   %4d s' "$name" "$dt")")
    echo "-- $name: ok in ${dt} s"
    CURRENT=""
}

skip() {
    echo
    echo "== $1 =="
    echo "skipped: $2"
    SUMMARY+=("$(printf '%-28s skip (%s)' "$1" "$2")")
}

step "fmt" cargo fmt --all -- --check
step "clippy (native)" cargo clippy --all-targets -- -D warnings
# The library must build for the browser; its #[cfg(test)] code is native-only (pollster),
# so lint the lib and the browser test, not the lib's unit tests.
step "clippy (wasm32)" cargo clippy --lib --test web_smoke --target wasm32-unknown-unknown -- -D warnings
step "test (native)" cargo test

# The CLI binary (src/main.rs). Skip while the crate has no binary target.
METADATA=$(cargo metadata --no-deps --format-version 1)
if grep -q '"kind":\["bin"\]' <<<"$METADATA"; then
    step "build --release (CLI)" cargo build --release
else
    skip "build --release (CLI)" "no binary target yet"
fi

# Browser: wasm-bindgen-test-runner (the runner in .cargo/config.toml) starts chromedriver
# and Chromium with the flags in webdriver.json. Only the web_smoke test targets wasm: the
# lib's unit tests are native-only.
# The runner's default of 20 s is too short for the 20-step DDIM runs on SwiftShader.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}"
step "test (wasm32, Chromium)" cargo test --target wasm32-unknown-unknown --test web_smoke

# The browser app (index.html + src/web/): a release build with trunk, then the end-to-end
# tests against that dist/. trunk must find wasm-opt 132 (npm's binaryen, Trunk.toml
# `[tools] wasm_opt`) first on PATH: Debian's older wasm-opt produces a wasm that dies at start.
if [[ -f index.html ]]; then
    if [[ ! -x node_modules/.bin/wasm-opt || ! -d node_modules/playwright-core ]]; then
        echo "node_modules/ is missing binaryen or playwright-core: run \`npm ci\` (or bash .ci/run)" >&2
        exit 1
    fi
    export PATH="$PWD/node_modules/.bin:$PATH"
    step "trunk build --release" trunk build --release

    # The size a visitor downloads: the wasm, raw and gzip-compressed (as static hosts serve it).
    shopt -s nullglob
    WASMS=(dist/*.wasm)
    shopt -u nullglob
    if [[ ${#WASMS[@]} -eq 0 ]]; then
        CURRENT="trunk build --release"
        echo "no dist/*.wasm after trunk build" >&2
        exit 1
    fi
    for w in "${WASMS[@]}"; do
        RAW=$(stat -c %s "$w")
        GZ=$(gzip -9 -c "$w" | wc -c)
        echo "wasm size: $w $RAW bytes, gzip -9 $GZ bytes"
        SUMMARY+=("$(printf '%-28s %s bytes (gzip %s)' "wasm size" "$RAW" "$GZ")")
    done

    # Serves dist/ on 127.0.0.1, drives /usr/bin/chromium; screenshots under target/e2e/.
    step "e2e (Chromium)" node tests/e2e/run.mjs
else
    skip "trunk build --release" "no index.html yet"
    skip "e2e (Chromium)" "no index.html yet"
fi

echo
echo "all checks passed"
