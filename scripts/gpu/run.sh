#!/usr/bin/env bash
# Retrain and evaluate the default MNIST model on a lent GPU machine, in ONE device `run`
# call of at most 9 minutes (scripts/gpu/README.md has the exact call; docs/training.md,
# "Retraining the default model on a GPU", the recipe and why).
#
#   1. Vulkan loaders from .gl/*.deb (carried), the adapter, nvidia-smi;
#   2. `kakusan bench`: forward batch 1 and 64, training batch 64 and 128 for the `mnist`
#      preset and the paper's CIFAR-10 model (random weights); forward and training of the
#      recipe's preset at the sizes used below, which size steps 3 and 5;
#   3. train the recipe (held-out split, min-SNR-γ, the bigger preset) for as many steps as
#      fit in GPU_TRAIN_SECONDS, ending with a checkpoint; the model folder is packed at once;
#   4. PyTorch eager (bench/train_pytorch.py --device cuda) on the same configs, if torch
#      and diffusers import (diffusers may be carried as wheels in .whl/);
#   5. `kakusan eval` DDIM-50 and DDPM at guidance 1, 2, 3 (n up to GPU_EVAL_N, sized from
#      the bench so everything ends in time) against digits neither model trained on, and
#      `kakusan nll --heldout` on up to GPU_NLL_N held-out digits.
#
# Results, at most 8 files, written as soon as each exists (a killed run still returns them):
#   $OUT/log.txt        everything printed, with each stage's command, exit code and time
#   $OUT/bench.txt      the bench lines (adapter, ms, GFLOP/s, images/s) and PyTorch's
#   $OUT/model.tar.gz   the trained model folder (diffusers layout, metrics, loss.png, grids,
#                       data_split.json, train_command.txt; not the 4x larger training state)
#   $OUT/training_state.safetensors.part0, .part1   the training state, for --resume
#                       (joined with cat; only when ≤ 30 MiB: 26 MB for mnist-large)
#   $OUT/eval.tar.gz    the eval reports (JSON) and sample grids, nll.json and its plot
#   $OUT/summary.json   the numbers above in one place, and what was skipped
#
# Settings (environment): GPU_BUDGET_SECONDS (whole script, default 500), GPU_TRAIN_SECONDS
# (300), GPU_PRESET (mnist-large), GPU_BATCH (128), GPU_LR (1e-3), GPU_SNR_GAMMA (5; "none" =
# off), GPU_HOLDOUT (eval), GPU_LABEL_DROPOUT (0.1), GPU_CLIP_SAMPLE (false: written into the
# trained model's scheduler_config.json), GPU_EVAL_N (500), GPU_EVAL_BATCH (250), GPU_NLL_N
# (200), KAKUSAN_BIN (.gpu/kakusan). GPU_SMOKE=1: tiny everything (the `mnist` preset, T = 20,
# n = 10), for checking this script on llvmpipe.
set -u -o pipefail

: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

SMOKE=${GPU_SMOKE:-0}
BIN=${KAKUSAN_BIN:-.gpu/kakusan}
if [ "$SMOKE" = 1 ]; then
    BUDGET=${GPU_BUDGET_SECONDS:-1500}
    TRAIN_SECONDS=${GPU_TRAIN_SECONDS:-30}
    PRESET=${GPU_PRESET:-mnist}
    BATCH=${GPU_BATCH:-8}
    TIMESTEPS=20
    DDIM_STEPS=5
    N_MAX=${GPU_EVAL_N:-10}
    EVAL_BATCH=${GPU_EVAL_BATCH:-10}
    NLL_N=${GPU_NLL_N:-4}
    FWD_SIZES="1 4"
    TRAIN_SIZES="4 8"
    ITERS=2
else
    BUDGET=${GPU_BUDGET_SECONDS:-500}
    TRAIN_SECONDS=${GPU_TRAIN_SECONDS:-300}
    PRESET=${GPU_PRESET:-mnist-large}
    BATCH=${GPU_BATCH:-128}
    TIMESTEPS=1000
    DDIM_STEPS=50
    N_MAX=${GPU_EVAL_N:-500}
    EVAL_BATCH=${GPU_EVAL_BATCH:-250}
    NLL_N=${GPU_NLL_N:-200}
    FWD_SIZES="1 64"
    TRAIN_SIZES="64 128"
    ITERS=10
fi
LR=${GPU_LR:-1e-3}
SNR_GAMMA=${GPU_SNR_GAMMA:-5}
HOLDOUT=${GPU_HOLDOUT:-eval}
LABEL_DROPOUT=${GPU_LABEL_DROPOUT:-0.1}
CLIP=${GPU_CLIP_SAMPLE:-false}
# Seconds kept back at the end for packing the results.
RESERVE=15

WORK=$(mktemp -d /tmp/kakusan-gpu.XXXXXX)
RUN=$WORK/run
EVALS=$WORK/eval
mkdir -p "$EVALS"
SUMMARY=$WORK/summary.txt # "key<TAB>value" lines, turned into summary.json at the end
: >"$SUMMARY"
T0=$(date +%s)

note() { printf '%s\t%s\n' "$1" "$2" >>"$SUMMARY"; }
left() { echo $((BUDGET - ($(date +%s) - T0))); }

# stage NAME MAX_SECONDS CMD...: run CMD under a timeout of min(MAX, time left − RESERVE);
# SIGTERM first (kakusan train saves on it), SIGKILL 10 s later.
stage() {
    local name=$1 max=$2
    shift 2
    local avail=$(($(left) - RESERVE))
    local t=$((max < avail ? max : avail))
    if [ "$t" -lt 5 ]; then
        echo "== $name: skipped, no time left"
        note "$name" "skipped: no time left"
        return 124
    fi
    echo "== $name (timeout ${t}s, $(($(date +%s) - T0))s into the run): $*"
    local s=$(date +%s)
    timeout -k 10 -s TERM "$t" "$@"
    local rc=$?
    local took=$(($(date +%s) - s))
    echo "== $name: exit $rc after ${took}s"
    note "$name" "exit $rc after ${took}s"
    return $rc
}

# --- 1. Vulkan and the adapter --------------------------------------------------------
if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$ICD" ]; then
    export VK_DRIVER_FILES=$ICD
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
ldconfig -p | grep -q libvulkan || echo "warning: no libvulkan in ldconfig -p: carry .gl (scripts/gpu/README.md)"
if [ ! -x "$BIN" ]; then
    echo "error: $BIN is missing: build it here and carry it (scripts/gpu/README.md)"
    note error "$BIN missing"
fi
"$BIN" --version
note preset "$PRESET"
note smoke "$SMOKE"

# --- 2. Benchmarks ---------------------------------------------------------------------
# bench ARGS...: one `kakusan bench` (ITERS timed passes unless ARGS has --iters), its output
# also appended to bench.txt under "### kakusan bench ARGS".
bench() {
    local iters=(--iters "$ITERS")
    case " $* " in *" --iters "*) iters=() ;; esac
    # Already measured (the recipe's preset may be one of the above): keep the first.
    grep -qxF -- "### kakusan bench $*" "$OUT/bench.txt" 2>/dev/null && return 0
    {
        echo "### kakusan bench $*"
        stage "bench $*" 60 "$BIN" bench "$@" "${iters[@]}"
        echo
    } 2>&1 | tee -a "$OUT/bench.txt"
}
for n in $FWD_SIZES; do bench --model mnist -n "$n"; done
for n in $TRAIN_SIZES; do bench --model mnist --train -n "$n"; done
# The paper's CIFAR-10 model (35.7 M parameters): minutes per pass on llvmpipe, so not in
# the smoke run.
CIFAR=assets/configs/ddpm-cifar10-32
if [ "$SMOKE" != 1 ]; then
    for n in $FWD_SIZES; do bench --model "$CIFAR" --random-weights -n "$n"; done
    for n in $TRAIN_SIZES; do bench --model "$CIFAR" --random-weights --train -n "$n" --iters 5; done
fi
# The recipe's preset at the sizes that size training and evaluation.
bench --model "$PRESET" --train -n "$BATCH"
bench --model "$PRESET" -n $((2 * EVAL_BATCH))

# Median ms of the last bench of this kind in bench.txt ("train step: median X ms", "forward:
# median X ms") under the header "### kakusan bench $1".
bench_ms() {
    awk -v h="### kakusan bench $1" -v key="$2" '
        index($0, h) == 1 && length($0) == length(h) { on = 1; next }
        /^### / { on = 0 }
        on && index($0, key) == 1 { for (i = 1; i <= NF; i++) if ($i == "median") ms = $(i + 1) }
        END { print ms }' "$OUT/bench.txt"
}
TRAIN_MS=$(bench_ms "--model $PRESET --train -n $BATCH" "train step:")
FWD_MS=$(bench_ms "--model $PRESET -n $((2 * EVAL_BATCH))" "forward:")
note train_step_ms "${TRAIN_MS:-unknown}"
note forward_ms_at_eval_batch "${FWD_MS:-unknown}"
echo "recipe preset $PRESET: train step ${TRAIN_MS:-?} ms at batch $BATCH, forward ${FWD_MS:-?} ms at batch $((2 * EVAL_BATCH))"

# --- 3. Train ----------------------------------------------------------------------------
# Steps that fit in TRAIN_SECONDS at the benched rate (90 %: data loading, logging and the
# checkpoints cost a little); --max-seconds stops it in time anyway, with a checkpoint.
STEPS=$(awk -v ms="${TRAIN_MS:-0}" -v s="$TRAIN_SECONDS" 'BEGIN {
    n = (ms > 0) ? int(0.9 * s * 1000 / ms) : 0; if (n < 20) n = 20; print n }')
avail=$(($(left) - RESERVE - 150))
[ "$SMOKE" = 1 ] && avail=$(($(left) - RESERVE - 60))
TRAIN_CAP=$((TRAIN_SECONDS < avail ? TRAIN_SECONDS : avail))
[ "$TRAIN_CAP" -lt 10 ] && TRAIN_CAP=10
note train_steps_planned "$STEPS"
SNR_FLAG=()
[ "$SNR_GAMMA" != none ] && SNR_FLAG=(--snr-gamma "$SNR_GAMMA")
stage train $((TRAIN_CAP + 60)) "$BIN" train --preset "$PRESET" --holdout "$HOLDOUT" \
    "${SNR_FLAG[@]}" --batch "$BATCH" --steps "$STEPS" --lr "$LR" --timesteps "$TIMESTEPS" \
    --label-dropout "$LABEL_DROPOUT" --max-seconds "$TRAIN_CAP" --checkpoint-every 1000 \
    --sample-every "$STEPS" --out "$RUN"
if [ -f "$RUN/config.json" ]; then
    # The sampler setting the evaluation uses is the one the model folder ships with.
    sed -i "s/\"clip_sample\": *[a-z]*/\"clip_sample\": $CLIP/" "$RUN/scheduler_config.json"
    note train_steps_done "$(wc -l <"$RUN/metrics.jsonl")"
    note train_last "$(tail -n 1 "$RUN/metrics.jsonl")"
    tar -czf "$OUT/model.tar.gz" -C "$WORK" --exclude training_state.safetensors run
    note model_tar_bytes "$(stat -c %s "$OUT/model.tar.gz")"
    # The training state (raw weights, Adam moments, EMA: 4x the weights) so the run can be
    # resumed elsewhere: in ≤ 15 MiB parts (the per-file limit is 16 MiB), at most two of
    # them (the file-count limit); `cat training_state.safetensors.part* > …` joins them.
    STATE=$RUN/training_state.safetensors
    if [ -f "$STATE" ] && [ "$(stat -c %s "$STATE")" -le $((30 * 1024 * 1024)) ]; then
        split -b 15M -d -a 1 "$STATE" "$OUT/training_state.safetensors.part"
        note training_state "returned in $(ls "$OUT"/training_state.safetensors.part* | wc -l) parts"
    elif [ -f "$STATE" ]; then
        note training_state "not returned: $(stat -c %s "$STATE") bytes is over 30 MiB"
    fi
else
    echo "error: training wrote no model; nothing to evaluate"
    note error "training wrote no model"
fi

# --- 4. PyTorch eager on the same card ---------------------------------------------------
if [ "$SMOKE" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
if [ "$SMOKE" != 1 ] && python3 -c "import torch, diffusers; assert torch.cuda.is_available()" 2>/dev/null; then
    {
        echo "### PyTorch eager (bench/train_pytorch.py --device cuda)"
        stage "pytorch mnist" 40 python3 bench/train_pytorch.py --config assets/models/mnist/config.json \
            --batch 64 --steps 20 --device cuda
        [ -f "$RUN/config.json" ] && stage "pytorch $PRESET" 40 python3 bench/train_pytorch.py \
            --config "$RUN/config.json" --batch "$BATCH" --steps 20 --device cuda
        echo
    } 2>&1 | tee -a "$OUT/bench.txt"
else
    msg="absent: python3 cannot import torch and diffusers with CUDA"
    [ "$SMOKE" = 1 ] && msg="not run (GPU_SMOKE)"
    echo "PyTorch eager: $msg" | tee -a "$OUT/bench.txt"
    note pytorch "$msg"
fi

# --- 5. Evaluate -------------------------------------------------------------------------
pack_evals() { tar -czf "$OUT/eval.tar.gz" -C "$WORK" eval; }
if [ -f "$RUN/config.json" ]; then
    # Image-forwards per second at the eval batch; each process also pays ~STARTUP s.
    STARTUP=8
    [ "$SMOKE" = 1 ] && STARTUP=20
    RATE=$(awk -v ms="${FWD_MS:-0}" -v b=$((2 * EVAL_BATCH)) 'BEGIN { print (ms > 0) ? b * 1000 / ms : 0 }')
    note forwards_per_second "$RATE"
    # n (multiple of 10, ≤ N_MAX) whose cost per n (image-forwards) fits in FRACTION of the
    # time left; 0 when not even 10 fit.
    size_n() {
        awk -v r="$RATE" -v per="$1" -v frac="$2" -v runs="$3" -v left="$(($(left) - RESERVE))" \
            -v st="$STARTUP" -v max="$N_MAX" 'BEGIN {
            t = frac * left - runs * st; n = (r > 0 && t > 0) ? int(t * r / per / 10) * 10 : 0
            if (n > max) n = max; if (n < 10) n = 0; print n }'
    }
    # DDIM-50 at w = 1, 2, 3 costs 50·(1 + 2 + 2) forwards per n (guided runs double the batch).
    N_DDIM=$(size_n $((5 * DDIM_STEPS)) 0.2 3)
    note eval_n_ddim "$N_DDIM"
    for w in 1 2 3; do
        [ "$N_DDIM" -ge 10 ] || break
        stage "eval ddim$DDIM_STEPS w$w n$N_DDIM" 200 "$BIN" eval --model "$RUN" --heldout --sampler ddim \
            --steps "$DDIM_STEPS" --guidance "$w" -n "$N_DDIM" --batch "$EVAL_BATCH" \
            --out "$EVALS/ddim${DDIM_STEPS}_g$w.json" --grid "$EVALS/ddim${DDIM_STEPS}_g$w.png"
    done
    pack_evals
    N_NLL=$(awk -v r="$RATE" -v T="$TIMESTEPS" -v left="$(($(left) - RESERVE))" -v max="$NLL_N" 'BEGIN {
        n = (r > 0) ? int(0.15 * left * r / T / 10) * 10 : 0; if (n > max) n = max; print n }')
    [ "$SMOKE" = 1 ] && N_NLL=$NLL_N
    note nll_n "$N_NLL"
    if [ "$N_NLL" -ge 2 ]; then
        stage "nll heldout n$N_NLL" 120 "$BIN" nll --model "$RUN" --heldout --limit "$N_NLL" \
            --out "$EVALS/nll_heldout.json" --plot "$EVALS/nll_heldout.png"
        pack_evals
    fi
    # DDPM (all T steps) at w = 1, 2, 3: T·5 forwards per n; what is left, in three runs.
    N_DDPM=$(size_n $((5 * TIMESTEPS)) 0.9 3)
    note eval_n_ddpm "$N_DDPM"
    for w in 1 2 3; do
        [ "$N_DDPM" -ge 10 ] || break
        stage "eval ddpm w$w n$N_DDPM" 400 "$BIN" eval --model "$RUN" --heldout --sampler ddpm \
            --guidance "$w" -n "$N_DDPM" --batch "$EVAL_BATCH" \
            --out "$EVALS/ddpm_g$w.json" --grid "$EVALS/ddpm_g$w.png"
        pack_evals
    done
fi

# --- Summary -----------------------------------------------------------------------------
note total_seconds "$(($(date +%s) - T0))"
python3 - "$SUMMARY" "$EVALS" "$OUT/summary.json" <<'PY' || echo "warning: no summary.json (python3 failed)"
import glob, json, os, sys
summary, evals, out = sys.argv[1:]
s = {}
for line in open(summary):
    k, _, v = line.rstrip("\n").partition("\t")
    s[k] = v
reports = {}
for f in sorted(glob.glob(os.path.join(evals, "*.json"))):
    r = json.load(open(f))
    keep = ("sampler", "steps", "guidance", "clip_sample", "n", "accuracy", "fid", "fid_floor",
            "fid_ratio", "median_pixel", "sampling_seconds", "reference", "adapter",
            "mean_bits_per_dim", "standard_error", "num_images", "input")
    reports[os.path.basename(f)[:-5]] = {k: r[k] for k in keep if k in r}
bar = {}
for name, r in reports.items():
    if "accuracy" in r:
        bar[name] = (r["accuracy"] >= 0.95 and r["median_pixel"] <= -0.95 and r["fid_ratio"] <= 3.0)
s["reports"] = reports
s["meets_bar"] = bar
json.dump(s, open(out, "w"), indent=1)
print(json.dumps(s, indent=1))
PY
rm -rf "$WORK"
echo "== done in $(($(date +%s) - T0))s; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
# Let tee write the last lines into log.txt before the call collects $OUT.
sleep 1
