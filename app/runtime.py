"""ONNX Runtime inference of an exported FuseMesh graph: raw crops in, SMPL mesh out. numpy only (no torch).

    sess = InferenceSession("assets/weights/fusemesh_lite.onnx", expected=ExpectedInputs(input_size=128))
    out = sess.run(rgb, depth, ref_depth, stream_mask)     # dict of numpy arrays, batch axis first
    out["vertices"]  # (1, V, 3) metres;  sess.contract.faces() (F, 3) int32 for drawing

The file is one self-describing graph written by `training.export`: inputs rgb (B, 3, S, S) uint8 RGB,
depth (B, 1, S, S) float32 metres (0 = invalid), ref_depth (B,) float32 metres, stream_mask (B, 2) bool
[rgb_on, depth_on] (normalisation happens inside the graph, see model/preprocess.py); outputs theta
(B, 72) axis-angle rad, beta (B, 10), cam (B, 3) weak perspective (s, tx, ty), vertices (B, V, 3),
joints (B, 24, 3) SMPL order and lsp_joints (B, 14, 3) LSP order, metres in the camera-aligned body
frame (model/network.py). Its ONNX `metadata_props` carry the contract (`ModelContract`): input size,
normalisation of each stream, joint names, body model id/hash and faces, variant, provenance.

Warm start (files exported since issue #7; `ModelContract.has_warm_start`): three more inputs,
init_pose6d (B, 144) 6D rotations (24 joints x the first two matrix columns, model/camera.py),
init_beta (B, 10) and init_cam (B, 3), are the IEF regressor's starting point, and one more output,
pose6d (B, 144), is its final raw state. Feeding the model's mean parameters (stored in the metadata
`warm_start.mean`, exactly the regressor's buffers) reproduces the cold-start output; feeding the
previous frame's raw pose6d / beta / cam continues from there. The start is 6D, not axis-angle theta,
because the regressor iterates on unnormalised 6D vectors: theta would lose that state. Older files
without these inputs keep working: the session feeds only what the graph has, and `run` refuses an
init only when one is passed to a model that cannot take it.

Checks at load (each failure is one line naming the file): the file exists and is an ONNX model
(`ModelFileError`), it carries FuseMesh metadata of a supported version, and its contract matches what
the app feeds it (`ContractMismatchError`: input size, normalisation, joint names, input/output names).

Execution providers, in order TensorRT -> CUDA -> CPU, each only where usable (the provider library is in
this onnxruntime build, an NVIDIA driver and device are present, the provider's shared libraries load;
onnxruntime-gpu 1.31 wants CUDA 13 and cuDNN 9, preloaded from the pip `nvidia-*` packages with
`onnxruntime.preload_dlls()` when those are installed). One INFO line per session says which provider
runs and why the others were skipped (`InferenceSession.provider`, `.skipped`). On CPU the intra-op
thread count leaves cores for the app's other threads and thread spinning is off.

A session warms up on creation, reuses fixed batch-1 input buffers for every frame, and on a GPU binds
inputs and outputs to fixed device buffers (IO binding).
"""
from __future__ import annotations

import base64
import contextlib
import ctypes
import io
import json
import logging
import math
import mmap
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from model.preprocess import DEPTH_CLIP_M, RGB_MEAN, RGB_STD  # numpy-only module (no torch import)
from model.skeleton import LSP_JOINT_NAMES, SMPL_JOINT_NAMES  # torch-free constants, shared with model.body

__all__ = [
    "FORMAT", "CONTRACT_VERSION", "INPUT_NAMES", "OUTPUT_NAMES", "SMPL_JOINT_NAMES", "LSP_JOINT_NAMES",
    "WARM_START_INPUTS", "WARM_START_OUTPUT", "WARM_START_SOURCES",
    "ModelFileError", "ContractMismatchError", "ModelContract", "ExpectedInputs", "InferenceSession",
    "ProviderPlan", "plan_providers", "cuda_unusable_reason", "default_cpu_threads", "default_normalization",
    "read_metadata",
    "encode_faces", "decode_faces",
]

log = logging.getLogger(__name__)

FORMAT = "fusemesh.onnx"
CONTRACT_VERSION = 1
INPUT_NAMES = ("rgb", "depth", "ref_depth", "stream_mask")
OUTPUT_NAMES = ("theta", "beta", "cam", "vertices", "joints", "lsp_joints")
WARM_START_INPUTS = ("init_pose6d", "init_beta", "init_cam")
"""Optional graph inputs after INPUT_NAMES: the IEF regressor's starting point (module docstring)."""
WARM_START_OUTPUT = "pose6d"
"""The extra output of a warm-start graph: the regressor's final raw 6D pose (B, 144)."""
WARM_START_SOURCES = {"init_pose6d": "pose6d", "init_beta": "beta", "init_cam": "cam"}
"""Warm-start input -> the output whose previous-frame value feeds it."""

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
_MM_LIKE_DEPTH_M = 30.0  # a float depth crop whose valid values exceed this is in millimetres, not metres


class ModelFileError(ValueError):
    """A model file is missing, not ONNX, corrupt, or not a FuseMesh export (one line naming the file)."""


class ContractMismatchError(ModelFileError):
    """The model's contract (input size, normalisation, joint names, IO names) differs from what the app feeds."""


# ====================================================================================== contract
def default_normalization() -> dict[str, dict[str, Any]]:
    """What the network does to its raw inputs (model/preprocess.py), as stored in the metadata."""
    return {
        "rgb": {"dtype": "uint8", "layout": "NCHW", "channels": "RGB", "scale": 1.0 / 255.0,
                "mean": list(RGB_MEAN), "std": list(RGB_STD)},
        "depth": {"dtype": "float32", "units": "m", "relative_to": "ref_depth", "clip_m": float(DEPTH_CLIP_M),
                  "invalid": "<= 0 or non-finite -> 0"},
    }


def encode_faces(faces: np.ndarray) -> str:
    """(F, 3) vertex indices -> compact metadata string (zlib-compressed little-endian int32, base64)."""
    f = np.ascontiguousarray(np.asarray(faces), dtype="<i4")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {f.shape}")
    return base64.b64encode(zlib.compress(f.tobytes(), 9)).decode("ascii")


def decode_faces(text: str, num_faces: int) -> np.ndarray:
    """Inverse of `encode_faces` -> (num_faces, 3) int32."""
    raw = zlib.decompress(base64.b64decode(text.encode("ascii")))
    f = np.frombuffer(raw, dtype="<i4")
    if f.size != 3 * num_faces:
        raise ValueError(f"faces hold {f.size} indices, expected {3 * num_faces}")
    return f.reshape(num_faces, 3).astype(np.int32)


# metadata key -> kind; "json" values are JSON text, "bool" is "true"/"false"
_FIELDS: dict[str, str] = {
    "format": "str", "contract_version": "int", "preset": "str", "variant": "str", "input_size": "int",
    "inputs": "json", "outputs": "json", "normalization": "json", "joint_names": "json",
    "lsp_joint_names": "json", "body_model_id": "str", "body_model_sha256": "str",
    "body_num_vertices": "int", "body_num_faces": "int", "body_faces": "str", "random_weights": "bool",
    "training_data": "json", "model_config": "json", "git_commit": "str", "exported_at": "str",
    "export_tool": "str", "warm_start": "json",
}
_OPTIONAL = {"body_faces": "", "training_data": {}, "model_config": {}, "git_commit": "unknown",
             "exported_at": "", "export_tool": "", "warm_start": {}}


@dataclass(frozen=True)
class ModelContract:
    """The contract an exported FuseMesh model declares in its ONNX metadata (see module docstring).

    `extra` holds the metadata keys this class does not model (accuracy, calibration, ...), as strings.
    `warm_start` is {} for a model without warm-start inputs, else {"inputs": {input: source output},
    "mean": {input: list of floats}} (module docstring).
    """

    preset: str
    variant: str  # "fp32", "fp16" or "int8"
    input_size: int  # S, square crop side in pixels
    normalization: dict[str, dict[str, Any]]
    joint_names: tuple[str, ...]
    lsp_joint_names: tuple[str, ...]
    body_model_id: str
    body_model_sha256: str
    body_num_vertices: int
    body_num_faces: int
    random_weights: bool
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    body_faces: str = ""
    training_data: dict[str, Any] = field(default_factory=dict)
    model_config: dict[str, Any] = field(default_factory=dict)
    git_commit: str = "unknown"
    exported_at: str = ""
    export_tool: str = ""
    warm_start: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    contract_version: int = CONTRACT_VERSION
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def has_warm_start(self) -> bool:
        """The graph takes WARM_START_INPUTS and returns WARM_START_OUTPUT."""
        return bool(self.warm_start)

    def warm_start_mean(self) -> dict[str, np.ndarray]:
        """{input name: (1, n) float32} the mean (cold-start) values of the warm-start inputs; {} without them."""
        if not self.warm_start:
            return {}
        mean = self.warm_start.get("mean", {})
        return {name: np.asarray(mean[name], dtype=np.float32).reshape(1, -1) for name in WARM_START_INPUTS}

    def faces(self) -> np.ndarray:
        """(F, 3) int32 triangle vertex indices of the body mesh (stored in the file)."""
        if not self.body_faces:
            raise ValueError("this model file carries no body faces")
        return decode_faces(self.body_faces, self.body_num_faces)

    def to_metadata(self) -> dict[str, str]:
        """All fields as ONNX metadata_props strings (the inverse of `from_metadata`)."""
        out: dict[str, str] = {}
        for key, kind in _FIELDS.items():
            value = getattr(self, key)
            if kind == "json":
                out[key] = json.dumps(list(value) if isinstance(value, tuple) else value, sort_keys=True)
            elif kind == "bool":
                out[key] = "true" if value else "false"
            else:
                out[key] = str(value)
        for key, value in self.extra.items():
            if key in out:
                raise ValueError(f"extra metadata key {key!r} collides with a contract field")
            out[key] = str(value)
        return out

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], where: str = "<metadata>") -> "ModelContract":
        """Parse metadata_props; raises ModelFileError naming `where` and the bad key."""
        if meta.get("format") != FORMAT:
            found = f"format {meta['format']!r}" if "format" in meta else "no FuseMesh metadata"
            raise ModelFileError(f"{where}: {found}; not a FuseMesh model exported by training.export")
        values: dict[str, Any] = {}
        for key, kind in _FIELDS.items():
            if key not in meta:
                if key in _OPTIONAL:
                    values[key] = _OPTIONAL[key]
                    continue
                raise ModelFileError(f"{where}: metadata key {key!r} is missing")
            text = meta[key]
            try:
                if kind == "int":
                    values[key] = int(text)
                elif kind == "bool":
                    if text not in ("true", "false"):
                        raise ValueError(f"expected true/false, got {text!r}")
                    values[key] = text == "true"
                elif kind == "json":
                    values[key] = json.loads(text)
                else:
                    values[key] = text
            except ValueError as e:
                raise ModelFileError(f"{where}: metadata key {key!r} is malformed ({e})") from None
        if values["contract_version"] != CONTRACT_VERSION:
            raise ModelFileError(f"{where}: contract version {values['contract_version']} is not supported "
                                 f"(this app reads version {CONTRACT_VERSION}); re-export the model")
        for key in ("joint_names", "lsp_joint_names"):
            if not isinstance(values[key], list) or not all(isinstance(n, str) for n in values[key]):
                raise ModelFileError(f"{where}: metadata key {key!r} must be a list of names")
            values[key] = tuple(values[key])
        for key in ("normalization", "inputs", "outputs", "training_data", "model_config", "warm_start"):
            if not isinstance(values[key], dict):
                raise ModelFileError(f"{where}: metadata key {key!r} must be a JSON object")
        if values["warm_start"]:
            _check_warm_start(values["warm_start"], where)
        extra = {k: v for k, v in meta.items() if k not in _FIELDS}
        return cls(**values, extra=extra)

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelContract":
        """Contract of an exported .onnx file (reads only the metadata, not the weights)."""
        return cls.from_metadata(read_metadata(path), where=str(path))


def _check_warm_start(ws: Mapping[str, Any], where: str) -> None:
    """The metadata `warm_start` object names the three inputs and holds a finite mean for each."""
    mean = ws.get("mean")
    if not isinstance(mean, dict) or set(mean) != set(WARM_START_INPUTS):
        raise ModelFileError(f"{where}: metadata key 'warm_start' must hold a mean for each of {WARM_START_INPUTS}")
    for name in WARM_START_INPUTS:
        values = mean[name]
        if not (isinstance(values, list) and values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            and math.isfinite(v) for v in values)):
            raise ModelFileError(f"{where}: metadata warm_start mean of {name!r} must be a list of finite numbers")


@dataclass(frozen=True)
class ExpectedInputs:
    """What the app feeds the model. `input_size` None = accept the model's (the app then crops to it)."""

    input_size: Optional[int] = None
    normalization: dict[str, dict[str, Any]] = field(default_factory=default_normalization)
    joint_names: tuple[str, ...] = SMPL_JOINT_NAMES
    lsp_joint_names: tuple[str, ...] = LSP_JOINT_NAMES

    def check(self, contract: ModelContract, where: str) -> None:
        """Raise ContractMismatchError (one line, naming the first difference) unless `contract` fits."""
        if self.input_size is not None and contract.input_size != self.input_size:
            raise ContractMismatchError(
                f"{where}: input size mismatch: the model takes {contract.input_size}x{contract.input_size} "
                f"crops, the app feeds {self.input_size}x{self.input_size}")
        for stream in ("rgb", "depth"):
            ours, theirs = self.normalization.get(stream), contract.normalization.get(stream)
            diff = _first_difference(ours, theirs)
            if diff is not None:
                raise ContractMismatchError(
                    f"{where}: {stream} normalisation mismatch at {diff}: model expects "
                    f"{_short(theirs)}, app feeds {_short(ours)}")
        for key in ("joint_names", "lsp_joint_names"):
            ours, theirs = getattr(self, key), getattr(contract, key)
            if tuple(ours) != tuple(theirs):
                i = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
                a = ours[i] if i < len(ours) else "<end>"
                b = theirs[i] if i < len(theirs) else "<end>"
                raise ContractMismatchError(f"{where}: {key} mismatch at index {i}: model has {b!r}, app expects "
                                            f"{a!r} ({len(theirs)} vs {len(ours)} names)")


def _first_difference(a: Any, b: Any, path: str = "") -> Optional[str]:
    """Path of the first difference between two JSON-like values (floats compared to 1e-6), else None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}{k}"
            d = _first_difference(a[k], b[k], f"{path}{k}.")
            if d is not None:
                return d
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return path.rstrip(".") or "<value>"
        for i, (x, y) in enumerate(zip(a, b)):
            d = _first_difference(x, y, f"{path}{i}.")
            if d is not None:
                return d
        return None
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if numbers:
        return None if math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) else path.rstrip(".")
    return None if a == b else (path.rstrip(".") or "<value>")


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ============================================================================ reading the metadata
def read_metadata(path: str | Path) -> dict[str, str]:
    """ONNX `metadata_props` of a model file, without loading its weights (scans the top-level protobuf).

    Raises ModelFileError naming the file for a missing/empty file, a non-ONNX file (zip/pickle/text) and a
    truncated or corrupt one.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path}: file is empty")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        head = data[:4]
        if head[:2] == b"PK":
            raise ModelFileError(f"{path}: a zip archive (a PyTorch checkpoint or .npz?), not an ONNX model")
        if head[:1] == b"\x80":
            raise ModelFileError(f"{path}: a Python pickle, not an ONNX model")
        return _scan_model_proto(data, size, str(path))


def _varint(data: Any, pos: int, end: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise ModelFileError(f"{where}: truncated or corrupt ONNX file (varint runs past the end)")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ModelFileError(f"{where}: not an ONNX model (malformed protobuf varint)")


def _scan_model_proto(data: Any, end: int, where: str) -> dict[str, str]:
    """Walk ModelProto's top-level fields: 1 ir_version, 7 graph, 14 metadata_props (key=1, value=2)."""
    pos, meta = 0, {}
    seen_ir = seen_graph = False
    while pos < end:
        key, pos = _varint(data, pos, end, where)
        fnum, wire = key >> 3, key & 7
        if fnum == 0:
            raise ModelFileError(f"{where}: not an ONNX model (invalid protobuf field 0)")
        if wire == 0:
            _, pos = _varint(data, pos, end, where)
            seen_ir |= fnum == 1
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(data, pos, end, where)
            if pos + length > end:
                raise ModelFileError(f"{where}: truncated or corrupt ONNX file (field {fnum} needs "
                                     f"{pos + length - end} bytes more than the file has)")
            if fnum == 7:
                seen_graph = length > 0
            elif fnum == 14:
                k, v = _string_pair(bytes(data[pos:pos + length]), where)
                meta[k] = v
            pos += length
        else:
            raise ModelFileError(f"{where}: not an ONNX model (protobuf wire type {wire})")
        if pos > end:
            raise ModelFileError(f"{where}: truncated or corrupt ONNX file")
    if not (seen_ir and seen_graph):
        raise ModelFileError(f"{where}: not an ONNX model (no {'graph' if seen_ir else 'ir_version'} field)")
    return meta


def _string_pair(buf: bytes, where: str) -> tuple[str, str]:
    pos, out = 0, {1: "", 2: ""}
    while pos < len(buf):
        key, pos = _varint(buf, pos, len(buf), where)
        length, pos = _varint(buf, pos, len(buf), where)
        if key & 7 != 2 or pos + length > len(buf):
            raise ModelFileError(f"{where}: corrupt metadata entry in the ONNX file")
        try:
            out[key >> 3] = buf[pos:pos + length].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(f"{where}: metadata entry is not UTF-8 text") from None
        pos += length
    return out[1], out[2]


# ============================================================================ execution providers
def default_cpu_threads(reserved: int = 1) -> int:
    """Intra-op threads for inference: the machine's cores minus `reserved` for capture/viewer, >= 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - reserved)


@dataclass
class ProviderPlan:
    """Providers to try, in order, with their options; `skipped` maps a provider name to why it is not tried."""

    providers: list[tuple[str, dict[str, Any]]]
    skipped: dict[str, str]


_CUDA_PROBLEMS: dict[int, Optional[str]] = {}  # device_id -> cuda_unusable_reason result, checked once per process


def _capi_dir() -> Path:
    import onnxruntime

    return Path(onnxruntime.__file__).resolve().parent / "capi"


def _load_error(lib: str) -> Optional[str]:
    """None if the shared library loads, else the loader's message (names the missing dependency)."""
    try:
        ctypes.CDLL(lib)
        return None
    except OSError as e:
        return str(e).strip()


def _preload_nvidia_libraries() -> str:
    """onnxruntime.preload_dlls() when the pip nvidia-* packages are installed; returns what it printed."""
    import importlib.util

    import onnxruntime

    if importlib.util.find_spec("nvidia") is None or not hasattr(onnxruntime, "preload_dlls"):
        return ""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            onnxruntime.preload_dlls(cuda=True, cudnn=True)
        except Exception as e:  # a broken install must not stop the CPU path
            print(f"preload_dlls failed: {e}")
    return buf.getvalue().strip()


def cuda_unusable_reason(device_id: int = 0) -> Optional[str]:
    """Why the CUDA provider cannot run here (None = usable). Checked once per process."""
    if device_id in _CUDA_PROBLEMS:
        return _CUDA_PROBLEMS[device_id]
    import onnxruntime

    problem: Optional[str] = None
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        problem = "not in this onnxruntime build (install onnxruntime-gpu)"
    elif not sys.platform.startswith("linux"):
        problem = None  # no library probing off Linux; session creation decides
    else:
        err = _load_error("libcuda.so.1")
        if err is not None:
            problem = "no NVIDIA driver (libcuda.so.1 not found)"
        else:
            cuda = ctypes.CDLL("libcuda.so.1")
            count = ctypes.c_int(0)
            rc = cuda.cuInit(0)
            if rc != 0:
                problem = f"CUDA driver initialisation failed (cuInit error {rc}; no GPU visible?)"
            elif cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
                problem = "no CUDA device visible"
            elif device_id >= count.value:
                problem = f"device_id {device_id} requested, {count.value} CUDA device(s) visible"
            else:
                note = _preload_nvidia_libraries()
                err = _load_error(str(_capi_dir() / "libonnxruntime_providers_cuda.so"))
                if err is not None:
                    problem = f"its libraries do not load (needs CUDA 13 + cuDNN 9): {err}"
                    if note:
                        problem += f"; preload_dlls said: {note.splitlines()[0]}"
    _CUDA_PROBLEMS[device_id] = problem
    return problem


def _tensorrt_problem(device_id: int) -> Optional[str]:
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        return "not in this onnxruntime build"
    cuda = cuda_unusable_reason(device_id)
    if cuda is not None:
        return f"needs CUDA, which is unusable: {cuda}"
    if sys.platform.startswith("linux"):
        err = _load_error(str(_capi_dir() / "libonnxruntime_providers_tensorrt.so"))
        if err is not None:
            return f"TensorRT libraries do not load: {err}"
    return None


def plan_providers(prefer: Sequence[str] = ("tensorrt", "cuda", "cpu"), *, device_id: int = 0,
                   trt_fp16: bool = False, trt_cache_dir: Optional[str | Path] = None,
                   trt_profile: Optional[dict[str, str]] = None, cuda_graph: bool = False) -> ProviderPlan:
    """Which of `prefer` (names: tensorrt, cuda, cpu) are usable here, with options, and why others are not.

    CPU is always appended last as the fallback. `trt_profile` holds trt_profile_{min,opt,max}_shapes.
    cuda_graph: ask the CUDA provider to capture the whole graph once and replay it (`enable_cuda_graph`;
    needs IO binding at fixed device addresses and every node on the CUDA provider).
    """
    unknown = [p for p in prefer if p not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown provider {unknown[0]!r}; choose from {sorted(PROVIDERS)}")
    plan = ProviderPlan([], {})
    for name in prefer:
        full = PROVIDERS[name]
        if name == "tensorrt":
            problem = _tensorrt_problem(device_id)
            opts: dict[str, Any] = {"device_id": device_id, "trt_fp16_enable": bool(trt_fp16)}
            if trt_cache_dir:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir),
                            trt_timing_cache_enable=True, trt_timing_cache_path=str(trt_cache_dir))
            opts.update(trt_profile or {})
        elif name == "cuda":
            problem = cuda_unusable_reason(device_id)
            opts = {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE"}
            if cuda_graph:
                opts["enable_cuda_graph"] = "1"
        else:
            problem, opts = None, {}
        if problem is None:
            plan.providers.append((full, opts))
        else:
            plan.skipped[full] = problem
    if not any(p == PROVIDERS["cpu"] for p, _ in plan.providers):
        plan.providers.append((PROVIDERS["cpu"], {}))
    for name in PROVIDERS:
        full = PROVIDERS[name]
        if name not in prefer and full not in plan.skipped and full != PROVIDERS["cpu"]:
            plan.skipped[full] = "not requested"
    return plan


# ================================================================================= the session
class InferenceSession:
    """One exported FuseMesh model in ONNX Runtime, fed one frame (or a batch) at a time.

    Thread: owned by the inference worker thread (not thread-safe: the input buffers are reused).

    path: the .onnx file; expected: what the app feeds (None = `ExpectedInputs()`, any input size);
    providers: preference order among tensorrt / cuda / cpu; cpu_threads: intra-op threads (None =
    `default_cpu_threads()`); warmup_runs: runs on neutral inputs at creation; io_binding: None = on for
    GPU providers; trt_cache_dir: TensorRT engine cache folder (first build takes minutes without one);
    allow_no_streams: accept frames with both streams off (an all-zero input: the network's answer
    without evidence, which evaluation tools such as training/robustness.py score); the app leaves it
    off, so a frame with nothing to infer from is an error there. cuda_graph: on the CUDA provider,
    capture the graph once and replay it every frame (no kernel launches from the CPU; IO binding is
    then always on); where ORT refuses it (a node outside the CUDA provider, say) or a graph run fails
    (capture or replay), the session runs CUDA without it from then on, that frame included, and
    `skipped["CUDA graph"]` says why (logged once).

    Attributes: contract (ModelContract), provider (the provider that runs the graph), skipped
    ({provider: reason}), input_size, warmup_ms (first warm-up run), io_binding (bool), cuda_graph
    (bool: replaying a captured graph), warm_start (the graph takes an initial pose/shape/camera; `run`'s
    init_* arguments), init_mean ({input name: (1, n) float32} the cold-start values fed when no init is
    given).
    """

    def __init__(self, path: str | Path, *, expected: Optional[ExpectedInputs] = None,
                 providers: Sequence[str] = ("tensorrt", "cuda", "cpu"), cpu_threads: Optional[int] = None,
                 device_id: int = 0, warmup_runs: int = 2, io_binding: Optional[bool] = None,
                 trt_cache_dir: Optional[str | Path] = None, ort_log_level: int = 3,
                 allow_no_streams: bool = False, cuda_graph: bool = False) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.path = Path(path)
        where = str(self.path)
        self.contract = ModelContract.from_file(self.path)
        (expected or ExpectedInputs()).check(self.contract, where)
        S = self.input_size = self.contract.input_size
        self.num_vertices = self.contract.body_num_vertices
        self.allow_no_streams = bool(allow_no_streams)
        self.warm_start = self.contract.has_warm_start
        self.init_mean = self.contract.warm_start_mean()
        self.cpu_threads = int(cpu_threads) if cpu_threads is not None else default_cpu_threads()
        if self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {cpu_threads}")

        def opts(batch_one: bool) -> Any:
            o = ort.SessionOptions()
            o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            o.intra_op_num_threads = self.cpu_threads
            o.inter_op_num_threads = 1
            o.log_severity_level = int(ort_log_level)
            o.add_session_config_entry("session.intra_op.allow_spinning", "0")
            o.add_session_config_entry("session.inter_op.allow_spinning", "0")
            if batch_one:  # a replayed graph is batch 1: static shapes let ORT fold the shape arithmetic
                o.add_free_dimension_override_by_name("batch", 1)  # that it would otherwise run on the CPU
            return o

        shapes = f"rgb:1x3x{S}x{S},depth:1x1x{S}x{S},ref_depth:1,stream_mask:1x2"
        shapes += "".join(f",{n}:1x{v.shape[1]}" for n, v in self.init_mean.items())
        def make_plan(graph: bool) -> ProviderPlan:
            return plan_providers(providers, device_id=device_id, trt_fp16=self.contract.variant == "fp16",
                                  trt_cache_dir=trt_cache_dir, cuda_graph=graph,
                                  trt_profile={f"trt_profile_{k}_shapes": shapes for k in ("min", "opt", "max")})

        plan = make_plan(cuda_graph)
        self.skipped: dict[str, str] = dict(plan.skipped)
        self.session = self._create(opts, plan, where)
        active = self.session.get_providers()
        self.provider = active[0]
        for name, _ in plan.providers:
            if name not in active and name not in self.skipped:
                self.skipped[name] = "ONNX Runtime did not register it (ort_log_level=2 shows its reason)"
        self._check_io(where)

        self.device_id = device_id
        self._io_binding_wanted = io_binding
        self._use_session()
        # fixed batch-1 host buffers, refilled in place every frame
        self._feeds = {
            "rgb": np.zeros((1, 3, S, S), np.uint8),
            "depth": np.zeros((1, 1, S, S), np.float32),
            "ref_depth": np.zeros((1,), np.float32),
            "stream_mask": np.ones((1, 2), np.bool_),
            **{n: v.copy() for n, v in self.init_mean.items()},
        }
        if self.io_binding:
            self._setup_binding()
        self._without_graph_session = lambda: self._create(opts, make_plan(False), where)
        self.warmup_ms = self._warm_up(warmup_runs)   # (a CUDA graph is captured in these runs)
        reasons = "; ".join(f"{k.replace('ExecutionProvider', '')}: {v}" for k, v in self.skipped.items())
        detail = f"{self.cpu_threads} CPU threads" if self.provider == PROVIDERS["cpu"] else f"device {device_id}"
        log.info("%s (%s %s, %dpx): running on %s (%s%s), warm-up %.0f ms; skipped %s", self.path.name,
                 self.contract.preset, self.contract.variant, S, self.provider, detail,
                 ", IO binding" + (", CUDA graph" if self.cuda_graph else "") if self.io_binding else "",
                 self.warmup_ms, reasons or "none")

    # ------------------------------------------------------------------ creation helpers
    def _create(self, opts: Callable[[bool], Any], plan: ProviderPlan, where: str) -> Any:
        """Create the ORT session; a GPU provider whose creation fails is dropped (reason kept) and retried,
        first without its CUDA graph. opts(batch_one): the SessionOptions (batch fixed at 1 for a graph)."""
        providers = list(plan.providers)
        while True:
            graph = providers[0][1].get("enable_cuda_graph") == "1"
            try:
                return self._ort.InferenceSession(str(self.path), sess_options=opts(graph),
                                                  providers=[p for p, _ in providers],
                                                  provider_options=[o for _, o in providers])
            except Exception as e:  # ORT raises its own pybind exception types
                msg = " ".join(str(e).split())[:300]
                name, opts_first = providers[0]
                if graph:  # keep the provider, drop the graph
                    self.skipped["CUDA graph"] = f"session creation failed: {msg}"
                    providers[0] = (name, {k: v for k, v in opts_first.items() if k != "enable_cuda_graph"})
                    continue
                if len(providers) > 1:
                    self.skipped[providers[0][0]] = f"session creation failed: {msg}"
                    providers = providers[1:]
                    continue
                raise ModelFileError(f"{where}: ONNX Runtime cannot load it ({msg})") from None

    def _use_session(self) -> None:
        """provider, device_type, cuda_graph and io_binding of the session just created."""
        self.provider = self.session.get_providers()[0]
        self.device_type = "cuda" if self.provider in (PROVIDERS["cuda"], PROVIDERS["tensorrt"]) else "cpu"
        self.cuda_graph = self.provider == PROVIDERS["cuda"] and self._provider_option("enable_cuda_graph") == "1"
        wanted = self._io_binding_wanted
        self.io_binding = (self.device_type == "cuda" if wanted is None else bool(wanted)) or self.cuda_graph

    def _provider_option(self, key: str) -> Optional[str]:
        """The running provider's option `key` as ORT reports it (None where it has no such option)."""
        return self.session.get_provider_options().get(self.provider, {}).get(key)

    def _check_io(self, where: str) -> None:
        names_in = tuple(i.name for i in self.session.get_inputs())
        names_out = tuple(o.name for o in self.session.get_outputs())
        feeds = INPUT_NAMES + (WARM_START_INPUTS if self.warm_start else ())
        if names_in != feeds:
            why = ""
            if names_in == INPUT_NAMES + WARM_START_INPUTS:
                why = " (the graph has warm-start inputs but its metadata lacks 'warm_start')"
            elif self.warm_start and names_in == INPUT_NAMES:
                why = " (the metadata declares warm start but the graph lacks its inputs)"
            raise ContractMismatchError(f"{where}: graph inputs {names_in}, the app feeds {feeds}{why}")
        S = int(self.contract.input_size)
        declared = {"rgb": ("tensor(uint8)", ("batch", 3, S, S)), "depth": ("tensor(float)", ("batch", 1, S, S)),
                    "ref_depth": ("tensor(float)", ("batch",)), "stream_mask": ("tensor(bool)", ("batch", 2))}
        for name, mean in (self.init_mean.items() if self.warm_start else ()):
            declared[name] = ("tensor(float)", ("batch", int(mean.shape[1])))
        for node in self.session.get_inputs():
            want_type, want_shape = declared[node.name]
            shape = tuple(node.shape)
            fits = len(shape) == len(want_shape) and all(
                not isinstance(have, int) or not isinstance(want, int) or have == want
                for have, want in zip(shape, want_shape))
            if node.type != want_type or not fits:
                raise ContractMismatchError(
                    f"{where}: graph input {node.name!r} is {node.type} {list(shape)}, the contract "
                    f"(input_size {S}) needs {want_type} {list(want_shape)}")
        wanted = OUTPUT_NAMES + ((WARM_START_OUTPUT,) if self.warm_start else ())
        missing = [n for n in wanted if n not in names_out]
        if missing:
            raise ContractMismatchError(f"{where}: graph lacks outputs {missing} (has {names_out})")
        for name, mean in self.init_mean.items():
            arg = next(i for i in self.session.get_inputs() if i.name == name)
            if len(arg.shape) != 2 or (isinstance(arg.shape[1], int) and arg.shape[1] != mean.shape[1]):
                raise ContractMismatchError(f"{where}: graph input {name} has shape {arg.shape}, its metadata mean "
                                            f"has {mean.shape[1]} values")
        self._outputs = names_out
        self._bound_outputs = wanted

    def _setup_binding(self) -> None:
        ort = self._ort
        dev, did = self.device_type, self.device_id
        self._binding = self.session.io_binding()
        self._dev_inputs = {n: ort.OrtValue.ortvalue_from_numpy(buf, dev, did) for n, buf in self._feeds.items()}
        for n, v in self._dev_inputs.items():
            self._binding.bind_ortvalue_input(n, v)
        shapes = self._output_shapes(1)
        self._dev_outputs = {n: ort.OrtValue.ortvalue_from_shape_and_type(shapes[n], np.float32, dev, did)
                             for n in self._bound_outputs}  # only these are computed; any other graph output is not
        for n, v in self._dev_outputs.items():
            self._binding.bind_ortvalue_output(n, v)

    def _output_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        shapes = {"theta": (batch, 72), "beta": (batch, 10), "cam": (batch, 3),
                  "vertices": (batch, self.num_vertices, 3), "joints": (batch, len(self.contract.joint_names), 3),
                  "lsp_joints": (batch, len(self.contract.lsp_joint_names), 3),
                  WARM_START_OUTPUT: (batch, self.init_mean["init_pose6d"].shape[1] if self.warm_start else 144)}
        for o in self.session.get_outputs():  # trust the graph where it states a size
            if o.name in shapes and o.shape and len(o.shape) == len(shapes[o.name]):
                shapes[o.name] = tuple(s if isinstance(s, int) and i > 0 else shapes[o.name][i]
                                       for i, s in enumerate(o.shape))
        return shapes

    def _warm_up(self, runs: int) -> float:
        """Run on neutral inputs (grey image, flat depth at 2.5 m); returns the first run's milliseconds."""
        first = 0.0
        for i in range(max(0, int(runs))):
            t0 = time.perf_counter()
            self.run(np.full((self.input_size, self.input_size, 3), 128, np.uint8),
                     np.full((self.input_size, self.input_size), 2.5, np.float32), 2.5, (True, True))
            if i == 0:
                first = 1000.0 * (time.perf_counter() - t0)
        return first

    # ------------------------------------------------------------------ per frame
    def run(self, rgb: np.ndarray, depth: np.ndarray, ref_depth: Any,
            stream_mask: Optional[Any] = None, *, init_pose6d: Optional[Any] = None,
            init_beta: Optional[Any] = None, init_cam: Optional[Any] = None) -> dict[str, np.ndarray]:
        """One frame (or a batch) -> {output name: array with a leading batch axis}.

        rgb: (S, S, 3) HWC or (3, S, S) or (B, 3, S, S), uint8 RGB.
        depth: (S, S) or (1, S, S) or (B, 1, S, S); float = metres, uint16 = millimetres (Kinect DEPTH16);
            0 = invalid. ref_depth: scalar or (B,) metres (ignored where the depth stream is off).
        stream_mask: (2,) or (B, 2) [rgb_on, depth_on]; None = both on.
        init_pose6d (144,) or (B, 144) 6D, init_beta (10,) / (B, 10), init_cam (3,) / (B, 3): warm start
            (e.g. the previous frame's outputs pose6d, beta, cam); each None = the model's mean, i.e. the
            cold-start answer. Only for models with `warm_start`; the outputs then include pose6d.
        Batch 1 reuses the session's fixed buffers (and IO binding on GPU); B > 1 allocates per call
        (not with `cuda_graph`, whose replay is bound to the batch-1 buffers: a ValueError).
        """
        S = self.input_size
        rgb_b = self._rgb_batch(np.asarray(rgb), S)
        B = rgb_b.shape[0]
        depth_b = self._depth_batch(np.asarray(depth), S, B)
        mask_b = self._mask_batch(stream_mask, B, self.allow_no_streams)
        ref_b = self._ref_batch(ref_depth, B, mask_b)
        init_b = self._init_batch({"init_pose6d": init_pose6d, "init_beta": init_beta, "init_cam": init_cam}, B)
        if B > 1 and self.cuda_graph:
            raise ValueError(f"a batch of {B} frames: this session replays a batch-1 CUDA graph (cuda_graph=True)")
        if B == 1:
            f = self._feeds
            np.copyto(f["rgb"], rgb_b)
            if depth_b.dtype == np.uint16:
                np.multiply(depth_b, np.float32(0.001), out=f["depth"], casting="unsafe")
            else:
                np.copyto(f["depth"], depth_b, casting="same_kind")
            f["ref_depth"][...] = ref_b
            f["stream_mask"][...] = mask_b
            for n, v in init_b.items():
                f[n][...] = v
            if self.io_binding:
                try:
                    return self._run_bound(f)
                except Exception as e:  # ORT raises its own pybind exception types
                    if not self.cuda_graph:
                        raise
                    self._drop_graph(e)   # capture or replay failed: plain CUDA from here on, this frame too
                if self.io_binding:
                    return self._run_bound(f)
            return dict(zip(self._outputs, self.session.run(None, f)))
        if depth_b.dtype == np.uint16:
            depth_b = depth_b.astype(np.float32) * np.float32(0.001)
        feeds = {"rgb": np.ascontiguousarray(rgb_b), "depth": np.ascontiguousarray(depth_b, dtype=np.float32),
                 "ref_depth": ref_b, "stream_mask": mask_b, **init_b}
        return dict(zip(self._outputs, self.session.run(None, feeds)))

    def _run_bound(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch-1 run through the IO binding (the fixed buffers `feeds` copied to the bound inputs)."""
        for n, v in self._dev_inputs.items():
            v.update_inplace(feeds[n])
        self.session.run_with_iobinding(self._binding)
        # a device OrtValue's numpy() copies to the host; a CPU one is a view of the bound buffer
        if self.device_type == "cpu":
            return {n: v.numpy().copy() for n, v in self._dev_outputs.items()}
        return {n: v.numpy() for n, v in self._dev_outputs.items()}

    def _drop_graph(self, error: BaseException) -> None:
        """A CUDA-graph run failed (capture in the warm-up, or a replay): recreate the session without the
        graph, say why once (log warning, `skipped["CUDA graph"]`), and continue with it."""
        why = "run failed: " + " ".join(str(error).split())[:300]
        self.skipped["CUDA graph"] = why
        log.warning("%s: CUDA graph turned off (%s); running without it", self.path.name, why)
        self.session = self._without_graph_session()
        self._use_session()
        if self.io_binding:
            self._setup_binding()

    @staticmethod
    def _rgb_batch(rgb: np.ndarray, S: int) -> np.ndarray:
        if rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 0..255 RGB, got dtype {rgb.dtype}")
        if rgb.shape == (S, S, 3):
            return rgb.transpose(2, 0, 1)[None]
        if rgb.shape == (3, S, S):
            return rgb[None]
        if rgb.ndim == 4 and rgb.shape[1:] == (3, S, S) and rgb.shape[0] >= 1:
            return rgb
        raise ValueError(f"rgb must be ({S}, {S}, 3), (3, {S}, {S}) or (B, 3, {S}, {S}) uint8, got {rgb.shape}")

    @staticmethod
    def _depth_batch(depth: np.ndarray, S: int, B: int) -> np.ndarray:
        if depth.dtype != np.uint16 and depth.dtype.kind != "f":
            raise ValueError(f"depth must be float metres or uint16 millimetres, got dtype {depth.dtype}")
        if depth.shape in ((S, S), (1, S, S)) and B == 1:
            d = depth.reshape(1, 1, S, S)
        elif depth.shape == (B, 1, S, S):
            d = depth
        else:
            raise ValueError(f"depth must be ({S}, {S}) or ({B}, 1, {S}, {S}) to match rgb, got {depth.shape}")
        if d.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                finite = d[np.isfinite(d)]
            if finite.size and float(finite.max()) > _MM_LIKE_DEPTH_M:
                raise ValueError(f"depth looks like millimetres (max {float(finite.max()):.0f}); pass float metres "
                                 "or uint16 millimetres")
        return d

    def _init_batch(self, given: Mapping[str, Any], B: int) -> dict[str, np.ndarray]:
        """{warm-start input: (B, n) float32} for a warm-start model (the mean where not given); {} otherwise."""
        if not self.warm_start:
            passed = [n for n, v in given.items() if v is not None]
            if passed:
                raise ValueError(f"{self.path.name} has no warm-start inputs (exported before warm start); "
                                 f"re-export it to pass {', '.join(passed)}")
            return {}
        out = {}
        for name, mean in self.init_mean.items():
            value = given.get(name)
            n = mean.shape[1]
            if value is None:
                out[name] = mean if B == 1 else np.repeat(mean, B, axis=0)
                continue
            a = np.asarray(value)
            if a.dtype.kind not in "fiu":
                raise ValueError(f"{name} must be float numbers, got dtype {a.dtype}")
            if a.shape == (n,):
                a = a[None]
            if a.shape == (1, n) and B > 1:
                a = np.repeat(a, B, axis=0)
            if a.shape != (B, n):
                raise ValueError(f"{name} must be ({n},) or ({B}, {n}), got shape {a.shape}")
            a = np.ascontiguousarray(a, dtype=np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"{name} holds NaN or inf")
            out[name] = a
        return out

    @staticmethod
    def _mask_batch(stream_mask: Any, B: int, allow_no_streams: bool = False) -> np.ndarray:
        if stream_mask is None:
            return np.ones((B, 2), np.bool_)
        m = np.asarray(stream_mask)
        if m.dtype != np.bool_:
            if m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all():
                raise ValueError(f"stream_mask must be bool or 0/1 [rgb_on, depth_on], got {m.dtype} {m.tolist()}")
            m = m.astype(np.bool_)
        if m.shape == (2,):
            m = np.broadcast_to(m, (B, 2))
        if m.shape != (B, 2):
            raise ValueError(f"stream_mask must be (2,) or ({B}, 2) [rgb_on, depth_on], got {m.shape}")
        if not allow_no_streams and not m.any(axis=1).all():
            raise ValueError("stream_mask turns both streams off for a frame: nothing to infer from (evaluation "
                             "tools may pass allow_no_streams=True to the session)")
        return np.ascontiguousarray(m)

    @staticmethod
    def _ref_batch(ref_depth: Any, B: int, mask: np.ndarray) -> np.ndarray:
        r = np.asarray(ref_depth, dtype=np.float32).reshape(-1)
        if r.size == 1 and B > 1:
            r = np.repeat(r, B)
        if r.shape != (B,):
            raise ValueError(f"ref_depth must be a scalar or ({B},) metres, got shape {np.shape(ref_depth)}")
        depth_on = mask[:, 1]
        bad = depth_on & ~(np.isfinite(r) & (r > 0) & (r <= _MM_LIKE_DEPTH_M))
        if bad.any():
            raise ValueError(f"ref_depth must be a positive depth in metres (<= {_MM_LIKE_DEPTH_M:.0f}) where the "
                             f"depth stream is on, got {r[bad][0]}")
        return np.where(depth_on, r, np.float32(0.0)).astype(np.float32)

    def describe(self) -> str:
        """One line: file, preset, variant, warm start, provider."""
        c = self.contract
        return (f"{self.path.name}: {c.preset} {c.variant}, {c.input_size}px, body {c.body_model_id} "
                f"({c.body_num_vertices} vertices), {'random weights' if c.random_weights else 'trained'}, "
                f"{'warm-start inputs' if self.warm_start else 'no warm-start inputs'}, on {self.provider}")

