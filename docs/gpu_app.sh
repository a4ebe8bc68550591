#!/usr/bin/env bash
# The app end to end on a lent GPU (prepared in session 7, not run yet): the GPU tests of app/runtime.py
# (CUDA session, CUDA-graph replay, capture on one thread and replay on another as the app's inference
# worker does) and `app.replay_bench` on the demo recording with ONNX Runtime's CUDA provider, the CUDA
# graph on and off, side by side.
#
# Needs, on the warm machine: the onnxruntime-gpu chunks in /tmp/parts (the four calls of docs/gpu_ort.sh's
# header), then one more call that carries ".device/app" and copies it:
#     mkdir -p /tmp/parts/app && cp .device/app/* /tmp/parts/app/
# where .device/app (ignored; ~40 MB) holds, made here once:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_17_x86_64 -d .device/app numpy==1.26.4
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_35_x86_64 -d .device/app pyk4a-bundle==1.5.0
#     cp assets/demo/demo.mkv .device/app/
# (pyk4a-bundle is built against NumPy 1.x: numpy 1.26.4 goes ahead of the image's 2.x; torch, OpenCV and
# onnxruntime built against NumPy 2 run on 1.26.) The big tracked assets stay hidden for these calls as in
# gpu_ort.sh. The last call runs:  bash docs/gpu_app.sh   (writes $OUT/app_gpu.txt).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/app_gpu.txt
say() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1

SETUP_ONLY=1 bash docs/gpu_ort.sh || { say "onnxruntime-gpu setup failed (see ort_gpu.txt)"; exit 3; }
mkdir -p /tmp/appsite
python3 - <<'EOF2' || { say "unpacking the app wheels failed"; exit 3; }
import glob, zipfile
wheels = glob.glob("/tmp/parts/app/*.whl")
assert len(wheels) == 2, wheels
for w in wheels:
    zipfile.ZipFile(w).extractall("/tmp/appsite")
EOF2
export PYTHONPATH=/tmp/appsite:/tmp/ortsite
NVDIRS=$(python3 -c "
import glob, os, nvidia
print(':'.join(sorted({os.path.dirname(f) for d in nvidia.__path__ for f in glob.glob(d + '/**/lib*.so*', recursive=True)})))")
export LD_LIBRARY_PATH=$NVDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
python3 -c "import numpy, pyk4a, onnxruntime, torch, cv2; print('numpy', numpy.__version__, 'pyk4a ok, ort',
onnxruntime.__version__, onnxruntime.get_available_providers(), 'torch', torch.__version__)" >>"$LOG" 2>&1 \
    || { say "imports failed"; exit 3; }

say "pytest: GPU tests of app/runtime.py (3: CUDA vs CPU, graph replay, capture and replay on different threads)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_runtime.py -m gpu -o addopts="" >>"$LOG" 2>&1 \
    || say "GPU tests failed (rc $?)"

DEMO=/tmp/parts/app/demo.mkv
for graph in --cuda-graph --no-cuda-graph --cuda-graph; do
  say "app.replay_bench on the demo, CUDA provider, $graph (no overlay; bundled lite fp16 model)"
  timeout 150 python3 -m app.replay_bench --source "$DEMO" --providers cuda cpu $graph --no-overlay --warm on \
      >>"$LOG" 2>&1 || say "replay_bench $graph failed (rc $?)"
done
say "done"
