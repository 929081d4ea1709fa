#!/usr/bin/env bash
# Disk full: train the tiny model (tests/data/tiny_mnist8.json) into a small tmpfs, fill the
# tmpfs, and check that a run that cannot write stops with a clear `error: …` (exit 1,
# no panic), that the previous checkpoint is byte-for-byte unchanged, that no temporary
# files are left, and that the run resumes from that checkpoint once space is freed.
# Three cases: the disk is full at start-up, full when the next checkpoint is written
# (a few hundred KB free: the small files fit, the training state does not), and full
# before a fresh run's first checkpoint.
#
# Needs root (it mounts a tmpfs) and python3 is not needed. Usage: scripts/disk_full.sh
# Env: KAKUSAN_BIN (default target/release/kakusan, built if missing).
set -u
cd "$(dirname "$0")/.."
BIN=${KAKUSAN_BIN:-target/release/kakusan}
if [ ! -x "$BIN" ]; then
  echo "building the release binary …"
  nice -n 5 cargo build --release --quiet || exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "disk_full.sh needs root (it mounts a tmpfs)"
  exit 2
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
chmod 700 "$XDG_RUNTIME_DIR"
MNT=$(mktemp -d /tmp/kakusan-full.XXXXXX)
mount -t tmpfs -o size=4m tmpfs "$MNT" || { echo "cannot mount a tmpfs on $MNT"; exit 2; }
LOGS=$(mktemp -d /tmp/kakusan-full-logs.XXXXXX)
cleanup() { umount "$MNT" 2>/dev/null; rmdir "$MNT" 2>/dev/null; }
trap cleanup EXIT
CONFIG=tests/data/tiny_mnist8.json
FILES="config.json scheduler_config.json diffusion_pytorch_model.safetensors training_state.safetensors"
passed=0
failed=0

check() { # name condition-result message
  if [ "$2" = 0 ]; then
    echo "  ok: $3"
  else
    echo "  FAIL: $3"
    failed=$((failed + 1))
    return 1
  fi
}

fresh() { # dir steps
  nice -n 5 "$BIN" train --config "$CONFIG" --batch 4 --steps "$2" --checkpoint-every 2 \
    --sample-every 0 --out "$1"
}
resume() { # dir steps
  nice -n 5 "$BIN" train --sample-every 0 --checkpoint-every 2 --steps "$2" --resume "$1"
}
sums() { (cd "$1" && sha256sum $FILES 2>/dev/null); }

# Fill the tmpfs, leaving about $1 KiB free.
fill() {
  rm -f "$MNT/filler"
  local avail
  avail=$(df --output=avail -k "$MNT" | tail -1)
  local n=$((avail - $1))
  [ $n -gt 0 ] && dd if=/dev/zero of="$MNT/filler" bs=1k count=$n status=none 2>/dev/null
  echo "  (tmpfs: $(df --output=avail -k "$MNT" | tail -1) KiB free)"
}

# One failing run: expect exit 1, `error:` with "No space left", no panic, checkpoint
# unchanged, no .partial files; then free the space and resume.
expect_full() { # label dir log before-sums resume-step
  local label=$1 dir=$2 log=$3 before=$4 step=$5 rc=$6
  local bad=0
  echo "$label"
  check "$label" "$([ "$rc" = 1 ] && echo 0 || echo 1)" "exit code $rc (want 1)" || bad=1
  check "$label" "$(grep -q panicked "$log" && echo 1 || echo 0)" "no panic" || bad=1
  check "$label" "$(grep -q '^error: .*No space left on device' "$log" && echo 0 || echo 1)" \
    "message: $(grep -m1 '^error:' "$log" | cut -c1-220)" || bad=1
  if [ -n "$before" ]; then
    check "$label" "$([ "$(sums "$dir")" = "$before" ] && echo 0 || echo 1)" \
      "the previous checkpoint is byte-for-byte unchanged" || bad=1
  else
    check "$label" "$([ -e "$dir/training_state.safetensors" ] && echo 1 || echo 0)" \
      "no training state was written" || bad=1
  fi
  local left
  left=$(ls -A "$dir" 2>/dev/null | grep '\.partial$' | tr '\n' ' ')
  check "$label" "$([ -z "$left" ] && echo 0 || echo 1)" "no temporary files left ${left}" || bad=1
  rm -f "$MNT/filler"
  if [ -n "$step" ]; then
    resume "$dir" "$((step + 2))" >"$log.resume" 2>&1
    check "$label" "$(grep -q "^resuming $dir at step $step of" "$log.resume" && echo 0 || echo 1)" \
      "after freeing space the run resumes from step $step and finishes" || bad=1
  fi
  [ $bad = 0 ] && passed=$((passed + 1))
}

echo "case 1: the disk is full when a resumed run starts"
D="$MNT/run1"
fresh "$D" 2 >"$LOGS/1a.log" 2>&1 || { echo "the first run failed: $(tail -2 "$LOGS/1a.log")"; exit 1; }
before=$(sums "$D")
fill 0
resume "$D" 4 >"$LOGS/1b.log" 2>&1
expect_full "case 1" "$D" "$LOGS/1b.log" "$before" 2 $?
rm -rf "$D"

echo "case 2: the disk fills up before the next checkpoint (small files fit, the state does not)"
D="$MNT/run2"
fresh "$D" 2 >"$LOGS/2a.log" 2>&1 || { echo "the first run failed: $(tail -2 "$LOGS/2a.log")"; exit 1; }
before=$(sums "$D")
fill 400
resume "$D" 4 >"$LOGS/2b.log" 2>&1
rc=$?
grep -q "cannot save the checkpoint of step 4" "$LOGS/2b.log"
check "case 2" $? "it failed at the checkpoint of step 4, after training steps 3-4"
expect_full "case 2" "$D" "$LOGS/2b.log" "$before" 2 $rc
rm -rf "$D"

echo "case 3: a fresh run cannot write its first checkpoint"
D="$MNT/run3"
mkdir -p "$D"
fill 200
fresh "$D" 2 >"$LOGS/3.log" 2>&1
expect_full "case 3" "$D" "$LOGS/3.log" "" "" $?
rm -rf "$D"

echo
echo "summary: $passed/3 disk-full cases ok ($failed failed checks; logs in $LOGS)"
[ $failed = 0 ]
