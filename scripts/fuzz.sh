#!/usr/bin/env bash
# Build the libFuzzer targets in fuzz/ and run each for SECONDS (default 60), one after the
# other, nice'd. Stable Rust: libfuzzer-sys plus the flags cargo-fuzz passes
# (SanitizerCoverage, --cfg fuzzing), debug assertions and overflow checks on, no
# sanitizer (cargo-fuzz's ASan needs nightly's -Zsanitizer). Coverage instrumentation goes
# only to the crates the targets exercise (fuzz/rustc-wrapper.sh, list below): kakusan,
# the target binaries and the parsers they call; wgpu/naga are compiled plain.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]    (targets: see fuzz/targets.rs)
# Environment: FUZZ_JOBS (cargo -j, default 2), FUZZ_NICE (default 15), FUZZ_RUNS (stop
# each target after this many executions instead of / as well as SECONDS),
# FUZZ_BUILD_ONLY=1.
# New interesting inputs go to fuzz/work/<target>/ (ignored by git; the committed seeds
# are fuzz/corpus/<target>/), crashes to fuzz/artifacts/<target>/. A crash makes the
# script exit 1: minimise it (`fuzz/target/<host>/release/<target> -minimize_crash=1
# -runs=10000 CRASH`), fix it, and commit it to fuzz/regressions/<target>/ so
# tests/fuzz_corpus.rs replays it in CI.
set -u
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} = 0 ] && TARGETS=(model_folder safetensors_inputs image idx cifar lab_points)
NICE=${FUZZ_NICE:-15}
HOST=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing"
export RUSTC_WRAPPER="$PWD/rustc-wrapper.sh"
# Crate names (as rustc sees them) that get coverage instrumentation.
export FUZZ_INSTRUMENT="kakusan model_folder safetensors_inputs image idx cifar lab_points \
safetensors serde_json png jpeg_decoder flate2 miniz_oxide fdeflate zlib_rs half"
echo "building the fuzz targets (release, $HOST) …"
nice -n "$NICE" cargo build --release --bins --target "$HOST" -j "${FUZZ_JOBS:-2}" || exit 1
[ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0
BIN=target/$HOST/release
max_len() {
  case $1 in
    model_folder) echo 32768 ;;
    cifar) echo 8192 ;;
    *) echo 4096 ;;
  esac
}
status=0
printf '%-20s %12s %10s %8s %s\n' target execs exec/s cov crashes
for t in "${TARGETS[@]}"; do
  mkdir -p "work/$t" "artifacts/$t"
  log="work/$t.log"
  nice -n "$NICE" "$BIN/$t" "work/$t" "corpus/$t" -max_total_time="$SECONDS_EACH" \
    -max_len="$(max_len "$t")" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  crashes=$(ls "artifacts/$t" | wc -l)
  printf '%-20s %12s %10s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$crashes"
  if [ $rc != 0 ] || [ "$crashes" != 0 ]; then
    status=1
    grep -m3 -E 'panicked|ERROR|SUMMARY' "$log" | sed 's/^/    /'
  fi
done
exit $status
