#!/usr/bin/env bash
# The GPU half of issue #7 on a lent device machine: ONNX Runtime's CUDA provider (plain and as a replayed
# CUDA graph) vs PyTorch eager, the GPU tests of app/runtime.py, and torch CUDA-graph replay.
# Run on an H100 in session 7 (2026-11-26): results in docs/gpu.md. SETUP_ONLY=1 stops after unpacking.
#
# Why chunks: onnxruntime-gpu 1.31.1's wheel is 255 MB (its CUDA provider library alone 284 MB unpacked),
# the device tool carries 64 MiB per call (working tree included) and a carried path does not outlast its
# call (files outside the checkout, in /tmp, do while the machine stays warm). So, here (repo root), once:
# unpack the wheel, drop
# libonnxruntime_providers_tensorrt.so (the image has no TensorRT libraries to load it), repack with
# `tar cf - . | xz -9e` (202 MB: 4 calls instead of 6), and split it in four:
#     echo /.device/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 -d /tmp/ortgpu onnxruntime-gpu==1.31.1
#     mkdir /tmp/ortgpu/x && cd /tmp/ortgpu/x && unzip -q ../onnxruntime_gpu-*.whl \
#         && rm onnxruntime/capi/libonnxruntime_providers_tensorrt.so && tar cf - . | xz -9e -T2 > ../ort.tar.xz
#     cd - && for i in 1 2 3 4; do mkdir -p .device/o$i; done
#     split -n 4 -d -a 1 /tmp/ortgpu/ort.tar.xz /tmp/ortgpu/xpart.
#     for k in 0 1 2 3; do mv /tmp/ortgpu/xpart.$k .device/o$((k + 1))/; done
#     sha256sum /tmp/ortgpu/ort.tar.xz | cut -d' ' -f1 > .device/o1/SHA256
#     python3 -m pip download --no-deps --only-binary=:all: -d .device/o1 smplx==0.1.28
# and hide the big tracked assets for these calls (weights, demo clip: git rm --cached + exclude; restore
# after) so each call stays under 64 MiB. Then one device call per chunk, back to back (a machine idles
# back after 30 s). A path carried in one call is gone in the next, so each call copies its chunk to
# /tmp/parts, which lasts while the machine stays warm: carry [".device/o1"] with the command
# `mkdir -p /tmp/parts && cp .device/o1/* /tmp/parts/`, the same for o2 and o3, and the last carries
# [".device/o4"] and runs:  bash docs/gpu_ort.sh
# It writes $OUT/ort_gpu.txt; numbers go to docs/gpu.md and the README's GPU table.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/ort_gpu.txt
say() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1

PARTS=/tmp/parts; mkdir -p $PARTS; cp .device/o*/* $PARTS/ 2>/dev/null
cat $PARTS/xpart.* > /tmp/ort.tar.xz 2>/dev/null
want=$(cat $PARTS/SHA256 2>/dev/null); got=$(sha256sum /tmp/ort.tar.xz | cut -d' ' -f1)
if [ -z "$want" ] || [ "$want" != "$got" ]; then
  say "onnxruntime-gpu archive incomplete (parts: $(ls $PARTS/xpart.* 2>/dev/null | tr '\n' ' ')): stop"; exit 3
fi
mkdir -p /tmp/ortsite
python3 - <<'EOF2' || { say "unpacking failed"; exit 3; }
import glob, tarfile, zipfile
tarfile.open("/tmp/ort.tar.xz").extractall("/tmp/ortsite", filter="fully_trusted")
for w in glob.glob("/tmp/parts/*.whl"):   # a pure-Python wheel is a zip: unpacking it is the install
    zipfile.ZipFile(w).extractall("/tmp/ortsite")
EOF2
export PYTHONPATH=/tmp/ortsite   # ahead of the image's CPU-only onnxruntime 1.30
# CUDA 13 / cuDNN 9 come from the image's nvidia-* pip packages: ORT's preload_dlls looks for them beside
# its own package (/tmp/ortsite/nvidia), and the loader finds them through LD_LIBRARY_PATH.
NVDIRS=$(python3 -c "
import glob, os, nvidia
print(':'.join(sorted({os.path.dirname(f) for d in nvidia.__path__ for f in glob.glob(d + '/**/lib*.so*', recursive=True)})))")
ln -sfn "$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')" /tmp/ortsite/nvidia
export LD_LIBRARY_PATH=$NVDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1
python3 - >>"$LOG" 2>&1 <<'EOF2'
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.__file__)
ort.preload_dlls()
print("available providers:", ort.get_available_providers())
from app.runtime import cuda_unusable_reason
print("cuda_unusable_reason:", cuda_unusable_reason(0))
EOF2

[ -n "${SETUP_ONLY:-}" ] && exit 0   # unpacked in /tmp/ortsite: later commands on this warm machine reuse it

say "pytest: the GPU tests of app/runtime.py (CUDA session, CUDA-graph replay vs CPU)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_runtime.py -m gpu -o addopts="" >>"$LOG" 2>&1 \
    || say "GPU tests failed (rc $?)"

say "app.bench: torch eager vs ORT fp32/fp16 on CUDA, plain and as CUDA graph (lite, paper; random weights)"
timeout 300 python3 -m app.bench --presets lite paper --variants fp32 fp16 --providers cuda cpu --cuda-graph \
    --torch-device cuda --runs 300 --warmup 30 --keep /tmp/keep >>"$LOG" 2>&1 || say "app.bench failed or timed out (rc $?)"

say "node placement of the paper export (a node outside CUDA rules out the CUDA graph; session 7 found Atan)"
python3 - 2>&1 <<'EOF2' | grep -E "placed on|All nodes" -A 3 | head -20 >>"$LOG"
import glob, onnxruntime as ort
ort.preload_dlls()
o = ort.SessionOptions(); o.log_severity_level = 0; o.log_verbosity_level = 1
o.add_free_dimension_override_by_name("batch", 1)
ort.InferenceSession(sorted(glob.glob("/tmp/keep/*paper*fp32*.onnx"))[0], o, providers=["CUDAExecutionProvider"])
EOF2

say "model.bench: torch CUDA graphs (checks the two capture fixes: normalize_rgb constants, parent_index buffer)"
timeout 150 python3 -m model.bench --device cuda --presets lite paper --dtype fp32 fp16 --batch 1 \
    --runs 200 --warmup 30 --cuda-graphs >>"$LOG" 2>&1 || say "model.bench --cuda-graphs failed (rc $?)"
say "done"
