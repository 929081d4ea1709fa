#!/usr/bin/env bash
# Kill campaign: train a tiny model (tests/data/tiny_mnist8.json, 8x8, batch 4, a checkpoint
# every step) with the release binary, stop it at random moments with SIGKILL, SIGINT and
# SIGTERM, resume each time, and check that
#   - no run panics;
#   - after every stop the folder holds a complete checkpoint (the state file parses, its
#     size matches its header) whose step never goes backwards;
#   - SIGINT/SIGTERM save the step the run had reached and exit 0;
#   - the next run resumes from exactly that checkpoint ("resuming … at step S");
#   - the finished run's weights, training state and loss log equal an uninterrupted run's
#     byte for byte (the README promises exact resumes on the same device).
# Kills land at three kinds of moments: during start-up (before or while the model is
# planned), while a checkpoint file is being written (its temporary `.NAME.partial` exists),
# and at a random time between steps.
#
# Usage: scripts/kill_campaign.sh [SIGKILLS=20] [SIGINTS=5] [SIGTERMS=5]
# Env: KAKUSAN_BIN (default target/release/kakusan, built if missing), SEED (default 1),
#      STEPS (default 60), WORK (default a temporary folder, removed on success).
# Needs python3 (standard library only) to read the checkpoint headers.
set -u
cd "$(dirname "$0")/.."
KILLS=${1:-20}
INTS=${2:-5}
TERMS=${3:-5}
SEED=${SEED:-1}
STEPS=${STEPS:-60}
RANDOM=$SEED
BIN=${KAKUSAN_BIN:-target/release/kakusan}
if [ ! -x "$BIN" ]; then
  echo "building the release binary …"
  nice -n 5 cargo build --release --quiet || exit 1
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR"
WORK=${WORK:-$(mktemp -d /tmp/kakusan-kills.XXXXXX)}
mkdir -p "$WORK"
REF="$WORK/reference"
RUN="$WORK/killed"
CONFIG=tests/data/tiny_mnist8.json
COMMON=(--config "$CONFIG" --batch 4 --lr 3e-3 --warmup 10 --seed 0 --sample-every 0 --steps "$STEPS")

fail() {
  echo "FAIL: $*"
  echo "(run folder and logs kept in $WORK)"
  exit 1
}

# The checkpoint's step, after checking the state file is a complete safetensors file.
state_step() {
  python3 - "$1/training_state.safetensors" <<'EOF'
import json, struct, sys
p = sys.argv[1]
try:
    b = open(p, "rb").read()
except FileNotFoundError:
    print("none"); sys.exit(0)
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
if len(b) != 8 + n + end:
    print(f"torn: {len(b)} bytes, header says {8 + n + end}"); sys.exit(0)
print(json.loads(h["__metadata__"]["kakusan_run"])["step"])
EOF
}

logged_steps() { [ -f "$1/metrics.jsonl" ] && wc -l <"$1/metrics.jsonl" || echo 0; }

# (step, loss) pairs of a run's log, one per line.
losses() {
  python3 -c '
import json, sys
for l in open(sys.argv[1]):
    v = json.loads(l); print(v["step"], repr(v["loss"]))' "$1/metrics.jsonl"
}

echo "work folder: $WORK"
echo "reference: $STEPS uninterrupted steps …"
t0=$(date +%s)
nice -n 5 "$BIN" train "${COMMON[@]}" --checkpoint-every "$STEPS" --out "$REF" >"$WORK/reference.log" 2>&1 ||
  fail "the reference run failed: $(tail -3 "$WORK/reference.log")"
echo "  done in $(( $(date +%s) - t0 )) s"

# The signals, shuffled.
signals=()
for _ in $(seq "$KILLS"); do signals+=(KILL); done
for _ in $(seq "$INTS"); do signals+=(INT); done
for _ in $(seq "$TERMS"); do signals+=(TERM); done
for ((i = ${#signals[@]} - 1; i > 0; i--)); do
  j=$((RANDOM % (i + 1)))
  tmp=${signals[i]}; signals[i]=${signals[j]}; signals[j]=$tmp
done

declare -A ok total
ok[KILL]=0; ok[INT]=0; ok[TERM]=0; total[KILL]=0; total[INT]=0; total[TERM]=0
mid_write=0
prev=none
n=0
for sig in "${signals[@]}"; do
  n=$((n + 1))
  log="$WORK/run_$n.log"
  if [ "$prev" = none ]; then
    cmd=("$BIN" train "${COMMON[@]}" --checkpoint-every 1 --out "$RUN")
  else
    cmd=("$BIN" train --sample-every 0 --steps "$STEPS" --checkpoint-every 1 --resume "$RUN")
  fi
  before=$prev
  [ "$prev" = none ] && before=0
  nice -n 5 "${cmd[@]}" >"$log" 2>&1 &
  pid=$!
  mode=$((n % 3))
  case $mode in
    0) # start-up: 0 to 3 s after the start, whatever the run is doing
      sleep "$((RANDOM % 3)).$((RANDOM % 10))"
      what="start-up" ;;
    1) # during a checkpoint write: one step past the resume point, then the first
       # temporary file seen (state or weights, alternately)
      target=$((before + 1))
      while kill -0 $pid 2>/dev/null && [ "$(logged_steps "$RUN")" -le "$target" ]; do sleep 0.02; done
      if [ $((n % 2)) = 0 ]; then f="$RUN/.training_state.safetensors.partial"; else f="$RUN/.diffusion_pytorch_model.safetensors.partial"; fi
      for _ in $(seq 200000); do [ -e "$f" ] && break; kill -0 $pid 2>/dev/null || break; done
      what="checkpoint write ($(basename "$f"))" ;;
    2) # between steps: 1-3 steps past the resume point plus 0-0.3 s
      target=$((before + 1 + RANDOM % 3))
      while kill -0 $pid 2>/dev/null && [ "$(logged_steps "$RUN")" -lt "$target" ]; do sleep 0.02; done
      sleep "0.$((RANDOM % 3))"
      what="between steps" ;;
  esac
  kill -s "$sig" $pid 2>/dev/null
  { wait $pid; } 2>/dev/null
  rc=$?
  total[$sig]=$((total[$sig] + 1))
  grep -q panicked "$log" && fail "run $n panicked: $(grep -m1 panicked "$log")"
  left=$(ls -A "$RUN" 2>/dev/null | grep -c '\.partial$')
  [ "$sig" = KILL ] && [ "$mode" = 1 ] && [ "$left" -gt 0 ] && mid_write=$((mid_write + 1))
  step=$(state_step "$RUN")
  case $step in torn*) fail "run $n ($sig at $what): the state file is $step" ;; esac
  # The run must have resumed from the previous checkpoint (if it got that far).
  if [ "$prev" != none ] && grep -q "^resuming" "$log"; then
    grep -q "^resuming $RUN at step $prev of" "$log" ||
      fail "run $n resumed from '$(grep '^resuming' "$log")', the checkpoint was at step $prev"
  fi
  if [ "$prev" != none ] && [ "$step" != none ] && [ "$step" -lt "$prev" ]; then
    fail "run $n ($sig at $what): the checkpoint went back from step $prev to $step"
  fi
  if [ "$prev" != none ] && [ "$step" = none ]; then
    fail "run $n ($sig at $what): the checkpoint of step $prev disappeared"
  fi
  verdict=ok
  if [ "$sig" != KILL ]; then
    if [ $rc = 0 ]; then
      # A graceful stop saves the step it reached: the log and the checkpoint agree.
      grep -q "interrupted\|nothing to train" "$log" || fail "run $n ($sig) exited 0 without saying it was interrupted"
      [ "$step" = "$(logged_steps "$RUN")" ] ||
        fail "run $n ($sig at $what): saved step $step but the log has $(logged_steps "$RUN") steps"
    elif [ $rc = $((128 + $(kill -l "$sig"))) ]; then
      # The signal came before the handler was installed (the first milliseconds).
      verdict="ok (signal before the handler was installed: default action)"
    else
      fail "run $n ($sig at $what): exit code $rc: $(tail -3 "$log")"
    fi
  fi
  ok[$sig]=$((ok[$sig] + 1))
  printf '%2d  SIG%-4s at %-50s exit %3s  checkpoint step %-4s %s\n' "$n" "$sig" "$what" "$rc" "$step" "$verdict"
  prev=$step
done

echo "finishing the run to step $STEPS …"
if [ "$prev" = none ]; then
  nice -n 5 "$BIN" train "${COMMON[@]}" --checkpoint-every 1 --out "$RUN" >"$WORK/final.log" 2>&1
else
  nice -n 5 "$BIN" train --sample-every 0 --steps "$STEPS" --checkpoint-every 1 --resume "$RUN" >"$WORK/final.log" 2>&1
fi || fail "the final resume failed: $(tail -3 "$WORK/final.log")"
same=1
for f in diffusion_pytorch_model.safetensors training_state.safetensors config.json scheduler_config.json; do
  cmp -s "$REF/$f" "$RUN/$f" || { echo "differs from the uninterrupted run: $f"; same=0; }
done
losses "$REF" >"$WORK/ref_losses.txt"
losses "$RUN" >"$WORK/run_losses.txt"
cmp -s "$WORK/ref_losses.txt" "$WORK/run_losses.txt" || { echo "the loss log differs from the uninterrupted run's (diff $WORK/ref_losses.txt $WORK/run_losses.txt)"; same=0; }

echo
echo "summary: ${ok[KILL]}/${total[KILL]} SIGKILL resumes ok ($mid_write of them killed mid-write, leaving a .partial file), ${ok[INT]}/${total[INT]} SIGINT, ${ok[TERM]}/${total[TERM]} SIGTERM"
if [ $same = 1 ]; then
  echo "final weights, training state and loss log ($STEPS steps) equal the uninterrupted run's byte for byte"
  echo "$((${ok[KILL]} + ${ok[INT]} + ${ok[TERM]}))/${#signals[@]} resumes ok"
  [ -z "${KEEP:-}" ] && rm -rf "$WORK"
  exit 0
fi
fail "the resumed run does not reproduce the uninterrupted run"
