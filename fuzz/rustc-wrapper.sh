#!/usr/bin/env bash
# RUSTC_WRAPPER for scripts/fuzz.sh: adds SanitizerCoverage (the flags cargo-fuzz passes)
# only to the crates whose code the fuzz targets exercise — kakusan, the target binaries
# and the parsers/decoders they call — and only when compiling for the target (never build
# scripts or proc macros). wgpu and naga are linked in but never run by a target;
# instrumenting them made the build take over an hour and fail (docs/reliability.md).
# Cargo does not see these flags in its fingerprints: after changing the list, remove
# fuzz/target.
rustc=$1
shift
crate=
target=0
prev=
for a in "$@"; do
  [ "$prev" = --crate-name ] && crate=$a
  [ "$a" = --target ] && target=1
  prev=$a
done
case " $FUZZ_INSTRUMENT " in
  *" $crate "*)
    if [ $target = 1 ]; then
      exec "$rustc" "$@" -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
        -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
        -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares
    fi
    ;;
esac
exec "$rustc" "$@"
