#!/usr/bin/env bash
# The GPU half of issue #7 on a lent device machine: ONNX Runtime's CUDA provider (and TensorRT where its
# libraries exist) vs PyTorch eager, and CUDA-graph replay. Not run yet (written 2026-11-26, no GPU lent).
#
# Why chunks: onnxruntime-gpu 1.31.1's wheel is 255 MB (its CUDA provider library alone 284 MB unpacked),
# the device tool carries 64 MiB per call, and ignored files already on a warm machine stay there between
# calls. So, here (repo root), once:
#     echo /.device/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 -d /tmp/ortgpu onnxruntime-gpu==1.31.1
#     python3 -m pip download --no-deps --only-binary=:all: -d .device/smplx smplx==0.1.28
#     for i in 1 2 3 4 5 6; do mkdir -p .device/ort$i; done
#     split -b 45M -d -a 1 /tmp/ortgpu/onnxruntime_gpu-*.whl /tmp/ortgpu/part.
#     for k in 0 1 2 3 4 5; do mv /tmp/ortgpu/part.$k .device/ort$((k + 1))/; done
#     sha256sum /tmp/ortgpu/onnxruntime_gpu-*.whl > .device/ort1/SHA256
# and hide the big tracked assets for these calls (git rm --cached + exclude; restore after) so each call
# stays under 64 MiB. Then one device call per chunk, back to back (a machine idles back after 30 s):
#     run(command="ls .device", carry=[".device/ort1", ".device/smplx"]), then carry [".device/ort2"], ...
# and the last call carries nothing new and runs:  bash docs/gpu_ort.sh
# It writes $OUT/ort_gpu.txt; numbers go to docs/gpu.md and the README's GPU table.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/ort_gpu.txt
say() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1

cat .device/ort*/part.* > /tmp/ort.whl 2>/dev/null
want=$(cut -d' ' -f1 .device/ort1/SHA256 2>/dev/null); got=$(sha256sum /tmp/ort.whl | cut -d' ' -f1)
if [ -z "$want" ] || [ "$want" != "$got" ]; then
  say "onnxruntime-gpu wheel incomplete (parts: $(ls .device/ort*/part.* 2>/dev/null | tr '\n' ' ')): stop"; exit 3
fi
mkdir -p /tmp/ortsite   # a wheel is a zip: unpacking it is the whole install for these two packages
for w in /tmp/ort.whl .device/smplx/*.whl; do
  python3 -m zipfile -e "$w" /tmp/ortsite || { say "unpacking $w failed"; exit 3; }
done
export PYTHONPATH=/tmp/ortsite   # ahead of the image's CPU-only onnxruntime 1.30
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1
python3 - >>"$LOG" 2>&1 <<'EOF'
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.__file__)
ort.preload_dlls()   # CUDA 13 / cuDNN 9 from the image's nvidia-* pip packages
print("available providers:", ort.get_available_providers())
EOF

say "app.bench: torch eager vs ORT fp32/fp16, providers cuda then cpu (lite, paper; random weights)"
timeout 300 python3 -m app.bench --presets lite paper --variants fp32 fp16 --providers tensorrt cuda cpu \
    --torch-device cuda --runs 200 --warmup 30 >>"$LOG" 2>&1 || say "app.bench failed or timed out (rc $?)"

say "model.bench: CUDA graphs (checks the two capture fixes: normalize_rgb constants, parent_index buffer)"
timeout 150 python3 -m model.bench --device cuda --presets lite paper --dtype fp32 fp16 --batch 1 \
    --runs 200 --warmup 30 --cuda-graphs >>"$LOG" 2>&1 || say "model.bench --cuda-graphs failed (rc $?)"
say "done"
