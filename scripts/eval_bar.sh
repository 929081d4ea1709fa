#!/usr/bin/env bash
# Issue 10's quality bar for a class-conditional digit model, every row in one command:
# DDIM-50 and DDPM (all T steps) at guidance 1, 2 and 3 (3 also with the guidance interval
# 80,580 of docs/sampling.md), n = 500, seed 0, against the held-out digits that neither the
# model nor the classifier saw (`kakusan eval --heldout`). A row passes with class accuracy
# ≥ 95 %, median pixel ≤ −0.95 and FID ≤ 3× the real-vs-real floor.
#
#   scripts/eval_bar.sh MODEL_DIR OUT_DIR [ROW ...]
#
# ROW: ddim_g1 ddim_g2 ddim_g3 ddim_g3i ddpm_g1 ddpm_g2 ddpm_g3 ddpm_g3i (default: all, the
# DDIM rows first). Each row writes OUT_DIR/ROW.json and keeps its finished batches of samples
# in OUT_DIR/ROW.samples/ (`eval --save-samples`), so a stopped run picks up where it stopped
# when started again; rows whose JSON exists are not run again. At the end it prints one line
# per row found in OUT_DIR. On a 2-core CPU (llvmpipe) a DDIM row of the 0.28 M default model
# takes minutes, a DDPM row hours (docs/evaluation.md).
#
# Environment: KAKUSAN (the binary; default target/release/kakusan), N (500), BATCH (100),
# SEED (0), DDIM_STEPS (50), DDPM_STEPS (default: all T), INTERVAL (80,580).
set -euo pipefail

if [ $# -lt 2 ]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
MODEL=$1
OUT=$2
shift 2
ROWS=("$@")
[ ${#ROWS[@]} -eq 0 ] && ROWS=(ddim_g1 ddim_g2 ddim_g3 ddim_g3i ddpm_g1 ddpm_g2 ddpm_g3 ddpm_g3i)
BIN=${KAKUSAN:-target/release/kakusan}
N=${N:-500}
BATCH=${BATCH:-100}
SEED=${SEED:-0}
INTERVAL=${INTERVAL:-80,580}
if [ ! -x "$BIN" ]; then
    echo "error: $BIN is not an executable (build it with cargo build --release, or set KAKUSAN)" >&2
    exit 1
fi
if [ ! -f "$MODEL/config.json" ]; then
    echo "error: $MODEL has no config.json (a model folder in diffusers' layout is needed)" >&2
    exit 1
fi
# row_args ROW: the sampler and guidance flags of ROW into `args`; 1 for an unknown row.
row_args() {
    case $1 in
    ddim_*) args=(--sampler ddim --steps "${DDIM_STEPS:-50}") ;;
    ddpm_*) args=(--sampler ddpm ${DDPM_STEPS:+--steps "$DDPM_STEPS"}) ;;
    *) return 1 ;;
    esac
    case $1 in
    *_g1) args+=(--guidance 1) ;;
    *_g2) args+=(--guidance 2) ;;
    *_g3) args+=(--guidance 3) ;;
    *_g3i) args+=(--guidance 3 --guidance-interval "$INTERVAL") ;;
    *) return 1 ;;
    esac
}
# Every row is checked before the first runs (a typo should not wait hours to show).
for row in "${ROWS[@]}"; do
    if ! row_args "$row"; then
        echo "error: unknown row $row (ddim_g1 ddim_g2 ddim_g3 ddim_g3i ddpm_g1 ddpm_g2 ddpm_g3 ddpm_g3i)" >&2
        exit 1
    fi
done
mkdir -p "$OUT"

for row in "${ROWS[@]}"; do
    row_args "$row"
    if [ -f "$OUT/$row.json" ]; then
        echo "== $row: done before ($OUT/$row.json)"
        continue
    fi
    echo "== $row: $BIN eval --model $MODEL --heldout ${args[*]} -n $N --batch $BATCH --seed $SEED"
    "$BIN" eval --model "$MODEL" --heldout "${args[@]}" -n "$N" --batch "$BATCH" --seed "$SEED" \
        --save-samples "$OUT/$row.samples" --out "$OUT/$row.json.part"
    mv "$OUT/$row.json.part" "$OUT/$row.json"
done

# One line per finished row: a flat JSON field's value by name.
field() { sed -n "s/.*\"$2\": *\([^,}]*\).*/\1/p" "$1" | head -n 1; }
echo
printf '%-9s %9s %9s %9s  %s\n' row accuracy "FID/floor" median verdict
for f in "$OUT"/*.json; do
    [ -f "$f" ] || continue
    acc=$(field "$f" accuracy)
    ratio=$(field "$f" fid_ratio)
    med=$(field "$f" median_pixel)
    verdict=$(awk -v a="$acc" -v r="$ratio" -v m="$med" 'BEGIN {
        print (a >= 0.95 && r <= 3 && m <= -0.95) ? "pass" : "FAIL" }')
    printf '%-9s %8.1f%% %8.2fx %9.3f  %s\n' "$(basename "$f" .json)" \
        "$(awk -v a="$acc" 'BEGIN { print 100 * a }')" "$ratio" "$med" "$verdict"
done
