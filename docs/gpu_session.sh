#!/usr/bin/env bash
# One GPU session for FuseMesh on a lent device machine (see docs/gpu.md for what it measured).
# Run from the repo root with a carried folder .device/ holding: open3d_cpu019_cp312.tar.xz (the open3d
# package of the open3d-cpu 0.19.0 cp312 wheel without resources/ and the torch ops), open3d_init.py (its
# __init__.py with `import open3d.visualization` / `open3d.ml` made optional: no plotly/sklearn there),
# smplx-0.1.28-py3-none-any.whl, and lib/ (libGL, libX11, ... from a Debian machine, used only where the
# image lacks them). On a normal GPU box, `pip install -r requirements.txt` replaces all of that.
# Stages: set-up (carried open3d-cpu + smplx) -> [synthetic data generation on CPUs 2..N  ||  GPU benchmarks
# on CPUs 0-1] -> time-boxed fine-tuning of the lite preset from the bundled weights on the GPU -> slim
# checkpoint. Every stage logs to $OUT/log.txt; a failing stage does not stop the later ones.
# Knobs (env): GEN_S seconds of data generation, TRAIN_END_S when training must end (seconds from start),
# PART_N samples per generated part, DEV cuda|cpu, BATCH, WORKERS.
set -u
T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
GEN_S=${GEN_S:-170}; TRAIN_END_S=${TRAIN_END_S:-490}; PART_N=${PART_N:-3072}; DEV=${DEV:-cuda}
BATCH=${BATCH:-128}; NCPU=$(nproc); WORKERS=${WORKERS:-$((NCPU > 3 ? NCPU - 2 : 1))}
LOG=$OUT/log.txt
el() { echo $(( $(date +%s) - T0 )); }
say() { echo "[t=$(el)s] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

say "setup: $(uname -m), $NCPU CPUs, python $(python3 -V 2>&1)"
mkdir -p /tmp/site /tmp/extralib
if [ -z "${SKIP_SETUP:-}" ]; then
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/smplx-*.whl >>"$LOG" 2>&1
python3 - <<'EOF' >>"$LOG" 2>&1
import tarfile, shutil
tarfile.open(".device/open3d_cpu019_cp312.tar.xz").extractall("/tmp/site", filter="fully_trusted")
shutil.copy(".device/open3d_init.py", "/tmp/site/open3d/__init__.py")
EOF
for f in .device/lib/*; do n=$(basename "$f"); ldconfig -p | grep -q " $n " || cp "$f" /tmp/extralib/; done
export LD_LIBRARY_PATH=/tmp/extralib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
say "carried libs used: $(ls /tmp/extralib | tr '\n' ' ')"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >>"$LOG" 2>&1
python3 -c "import numpy, torch, open3d, smplx, cv2, scipy, yaml; print('numpy', numpy.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'open3d', open3d.__version__, 'cv2', cv2.__version__)" 2>&1 | tee -a "$LOG"

# ---- data generation in the background (CPUs 2..N-1), parts of PART_N samples until GEN_S
PIN_GEN=""; PIN_BENCH=""
if command -v taskset >/dev/null && [ "$NCPU" -gt 3 ]; then PIN_GEN="taskset -c 2-$((NCPU - 1))"; PIN_BENCH="taskset -c 0-1"; fi
mkdir -p data/dev
(
  i=0; last=0
  while :; do
    now=$(el); [ $((now + last)) -gt "$GEN_S" ] && break
    s=$(el)
    $PIN_GEN python3 -m training.synth make --n "$PART_N" --size 128 --seed $((1000 + i)) --out data/dev/p$i \
        --workers "$WORKERS" --no-progress >>"$OUT/synth.log" 2>&1 || { echo "part $i failed" >>"$OUT/synth.log"; break; }
    last=$(( $(el) - s )); echo "[t=$(el)s] part $i: $PART_N samples in ${last}s" >>"$OUT/synth.log"
    i=$((i + 1))
  done
) &
GEN_PID=$!

# ---- GPU benchmarks meanwhile (CPUs 0-1)
if [ "$DEV" = cuda ]; then
  say "model.bench (inference)"
  $PIN_BENCH python3 -m model.bench --device cuda --presets lite paper --dtype fp32 fp16 --batch 1 8 --runs 100 \
      --warmup 20 >>"$LOG" 2>&1 || say "model.bench failed"
  say "training.bench (training steps)"
  $PIN_BENCH python3 -m training.bench --devices cuda --presets lite paper --batch 64 --steps 20 --warmup 5 >>"$LOG" 2>&1 || say "training.bench failed"
fi
wait $GEN_PID
cat "$OUT/synth.log" | grep -v "^\s*$" | tail -n 20 >>"$LOG"
PARTS=$(ls -d data/dev/p*/ 2>/dev/null | while read d; do [ -f "$d/manifest.json" ] && echo "${d%/}"; done)
NP=$(echo "$PARTS" | grep -c p)
say "generated parts: $NP"

# ---- fine-tune: every third part is the RGB-only source (the lite preset's 2:1 RGB-D:RGB mix)
if [ "$NP" -gt 0 ]; then
  SRC=""; k=0
  for d in $PARTS; do
    kind=rgbd; [ $((k % 3)) -eq 2 ] && kind=rgb
    SRC="$SRC{path: $d, kind: $kind, labels: smpl},"; k=$((k + 1))
  done
  [ "$NP" -lt 3 ] && SRC="$SRC{path: $(echo "$PARTS" | head -1), kind: rgb, labels: smpl},"
  LIMIT=$(( TRAIN_END_S - $(el) - 45 )); [ "$LIMIT" -lt 30 ] && LIMIT=30
  say "train: ${LIMIT}s on $DEV, batch $BATCH, sources [$SRC]"
  python3 -m training.train --config training/configs/lite.yaml --init-from assets/weights/fusemesh_lite.pt \
      --no-progress --set "data.sources=[${SRC%,}]" --set data.batch_size=$BATCH --set data.workers=$WORKERS \
      --set run.threads=4 --set run.steps=200000 --set run.time_limit_s=$LIMIT --set run.device=$DEV \
      --set run.log_every=50 --set run.ckpt_every=1000 --set optim.warmup_steps=100 --set run.out_dir=runs/gpu \
      >>"$LOG" 2>&1 || say "train failed"
  cp runs/gpu/scalars.csv runs/gpu/summary.json "$OUT/" 2>/dev/null
  python3 -m training.checkpoint slim runs/gpu/last.pt "$OUT/fusemesh_lite_gpu.pt" >>"$LOG" 2>&1 || say "slim failed"
fi
say "done"
