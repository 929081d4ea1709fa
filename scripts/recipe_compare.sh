#!/usr/bin/env bash
# Issue 10's recipe comparison: the `mnist` preset trained with each recipe at one equal budget
# (same steps, batch, seed, learning rate and held-out split), then each measured by the
# project's evaluator with DDIM-50 at guidance 1 and 2 (`kakusan eval --heldout`, seed 0,
# `--clip-sample false` as the shipped model samples).
#
#   scripts/recipe_compare.sh OUT_DIR [RECIPE ...]
#
# RECIPE (default: all, in this order):
#   minsnr    ε-prediction, min-SNR-5, linear β (the shipped recipe; the reference row)
#   plain     ε-prediction, the plain L_simple (--snr-gamma 0)
#   vpred     v-prediction, min-SNR-5 (weight min(SNR, 5)/(SNR + 1))
#   cosine    ε-prediction, min-SNR-5, the cosine β schedule (squaredcos_cap_v2)
#   drop05    the shipped recipe with label dropout 0.05 instead of 0.1
#
# Each recipe trains into OUT_DIR/RECIPE (resumed if it was stopped: `kakusan train --resume`)
# and writes OUT_DIR/RECIPE.g1.json and .g2.json; finished parts are not run again. At the end
# it prints one line per recipe. On a 2-core CPU (llvmpipe) a recipe takes ~20 min at the
# default 800 steps (docs/training.md, "Recipes at equal budget").
#
# Environment: KAKUSAN (the binary; default target/release/kakusan), STEPS (800), BATCH (64),
# SEED (0), N (300, samples per evaluation), EVAL_BATCH (100).
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
OUT=$1
shift
RECIPES=("$@")
[ ${#RECIPES[@]} -eq 0 ] && RECIPES=(minsnr plain vpred cosine drop05)
BIN=${KAKUSAN:-target/release/kakusan}
STEPS=${STEPS:-800}
BATCH=${BATCH:-64}
SEED=${SEED:-0}
N=${N:-300}
EVAL_BATCH=${EVAL_BATCH:-100}
if [ ! -x "$BIN" ]; then
    echo "error: $BIN is not an executable (build it with cargo build --release, or set KAKUSAN)" >&2
    exit 1
fi
# recipe_args RECIPE: its `kakusan train` flags into `args`; 1 for an unknown recipe.
recipe_args() {
    case $1 in
    minsnr) args=(--snr-gamma 5) ;;
    plain) args=(--snr-gamma 0) ;;
    vpred) args=(--snr-gamma 5 --prediction v-prediction) ;;
    cosine) args=(--snr-gamma 5 --schedule cosine) ;;
    drop05) args=(--snr-gamma 5 --label-dropout 0.05) ;;
    *) return 1 ;;
    esac
}
for r in "${RECIPES[@]}"; do
    if ! recipe_args "$r"; then
        echo "error: unknown recipe $r (minsnr plain vpred cosine drop05)" >&2
        exit 1
    fi
done
mkdir -p "$OUT"

for r in "${RECIPES[@]}"; do
    recipe_args "$r"
    run=$OUT/$r
    if [ -f "$run/training_state.safetensors" ]; then
        echo "== $r: resuming $run"
        "$BIN" train --resume "$run"
    else
        echo "== $r: $BIN train --preset mnist --holdout eval ${args[*]} --steps $STEPS --batch $BATCH --seed $SEED --out $run"
        "$BIN" train --preset mnist --holdout eval "${args[@]}" --steps "$STEPS" --batch "$BATCH" \
            --seed "$SEED" --sample-every 0 --out "$run"
    fi
    for g in 1 2; do
        json=$OUT/$r.g$g.json
        [ -f "$json" ] && continue
        echo "== $r: eval DDIM-50, guidance $g, n $N"
        "$BIN" eval --model "$run" --heldout --sampler ddim --steps 50 --guidance "$g" \
            --clip-sample false -n "$N" --batch "$EVAL_BATCH" --seed 0 --out "$json.part"
        mv "$json.part" "$json"
    done
done

field() { sed -n "s/.*\"$2\": *\([^,}]*\).*/\1/p" "$1" | head -n 1; }
echo
printf '%-8s %-9s %-9s %-12s %-9s %-9s %-12s\n' recipe 'acc g1' 'fid× g1' 'median g1' 'acc g2' 'fid× g2' 'median g2'
for r in "${RECIPES[@]}"; do
    line=$(printf '%-8s' "$r")
    for g in 1 2; do
        json=$OUT/$r.g$g.json
        if [ -f "$json" ]; then
            line+=$(printf ' %-9s %-9s %-12s' "$(field "$json" accuracy)" \
                "$(field "$json" fid_ratio)" "$(field "$json" median_pixel)")
        else
            line+=$(printf ' %-9s %-9s %-12s' - - -)
        fi
    done
    echo "$line"
done
