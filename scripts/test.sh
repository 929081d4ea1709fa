#!/usr/bin/env bash
# kakusan's whole test suite: formatting, lints (native and wasm32), native tests on the
# first Vulkan adapter (llvmpipe on a machine without a GPU), the release CLI build, and the
# browser smoke test in headless Chromium (WebGPU on SwiftShader).
#
# Needs what .ci/run installs: mesa-vulkan-drivers, chromium, chromium-driver, the
# wasm32-unknown-unknown target, clippy, rustfmt and wasm-bindgen-cli (for
# wasm-bindgen-test-runner). Exits non-zero on the first failure.
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
step "test (wasm32, Chromium)" cargo test --target wasm32-unknown-unknown --test web_smoke

echo
echo "all checks passed"
