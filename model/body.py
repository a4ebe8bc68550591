"""The SMPL body model layer: a thin subclass of `smplx.SMPL` that loads FuseMesh's npz or an official SMPL .pkl.

    body = BodyModel.from_file(path)                 # .npz (our format) or the official SMPL .pkl
    out = body(betas=(B,10), body_pose=(B,69) axis-angle, global_orient=(B,3), transl=(B,3) or None)
    out.vertices (B,V,3), out.joints (B,24,3), out.lsp_joints (B,14,3)    # metres, body/camera frame

Frame: SMPL's (Y up, +Z forward, +X = subject's left), metres; theta = 0 is the T-pose. Everything is
float32. The vertex count comes from the file (the open body has ~2x SMPL's 6890 vertices).

File formats:
- our .npz: `v_template (V,3), shapedirs (V,3,>=10), posedirs (V,3,207), J_regressor (24,V),
  weights (V,24), kintree_table (2,24), f (F,3), joint_names (24,)`, named keypoint vertices as
  `vertex_ids_names` (str) + `vertex_ids` (int), optional `model_id` (str). Read without pickle.
- the official SMPL .pkl: a Python 2 pickle of a dict holding numpy arrays, `chumpy` objects and a
  `scipy.sparse.csc_matrix` J_regressor. chumpy cannot be imported here, so `_SmplUnpickler` turns
  chumpy objects into plain arrays and refuses every global outside a short allow-list: a hostile
  pickle raises `BodyModelError` before anything it names is called.
A file with no named vertices and exactly 6890 vertices (the SMPL mesh) gets the standard SMPL
keypoint vertex ids (`SMPL_KEYPOINT_VERTEX_IDS`). `head_top` is required: it is LSP joint 13.

Command line (`python -m model.body ...`):
    convert SMPL_NEUTRAL.pkl out.npz     write our npz format (float32), then reload it as a check
                                         (an existing out.npz is replaced only with --overwrite)
    info FILE                            vertex/face counts, model id, sha256, height at beta = 0
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import smplx
import torch
from smplx import lbs as smplx_lbs
from smplx.utils import Struct

from model.skeleton import LSP_JOINT_NAMES, SMPL_JOINT_NAMES, SMPL_PARENTS  # re-exported

__all__ = [
    "BodyModel", "BodyOutput", "BodyModelError", "SMPL_JOINT_NAMES", "LSP_JOINT_NAMES",
    "SMPL_PARENTS", "SMPL_KEYPOINT_VERTEX_IDS", "DEFAULT_BODY_PATH", "NUM_BETAS",
    "read_body_arrays", "write_body_npz",
]

DEFAULT_BODY_PATH = Path(__file__).resolve().parent.parent / "assets" / "body" / "open_body_neutral.npz"

NUM_BETAS = 10
NUM_JOINTS = 24
NUM_POSE_BASIS = 207  # 23 joints x 9 (R - I)

_LSP_SMPL_JOINTS = tuple(SMPL_JOINT_NAMES.index(n) for n in LSP_JOINT_NAMES[:13])
_LSP_HEAD_TOP = "head_top"

# Standard keypoint vertices of the 6890-vertex SMPL mesh.
SMPL_KEYPOINT_VERTEX_IDS: dict[str, int] = {
    "nose": 332, "left_eye": 2800, "right_eye": 6260, "left_ear": 583, "right_ear": 4071, "head_top": 411,
}
_SMPL_NUM_VERTICES = 6890

_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


class BodyModelError(ValueError):
    """A body model file is missing, unreadable, unsafe or malformed (message names file and problem)."""


class BodyOutput(NamedTuple):
    """Output of `BodyModel.forward`; metres, body frame (camera frame once `transl` is applied).

    vertices: (B, V, 3); joints: (B, 24, 3) in `SMPL_JOINT_NAMES` order;
    lsp_joints: (B, 14, 3) in `LSP_JOINT_NAMES` order.
    A NamedTuple so that torch.export / ONNX export flatten it without registration.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    lsp_joints: torch.Tensor


class _KeepJoints(torch.nn.Module):
    """Replaces smplx's VertexJointSelector (whose default vertex ids belong to another mesh): no extras."""

    def forward(self, vertices: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        return joints


class _StaticParents(tuple):
    """Kinematic-tree parents as Python ints (root -1), standing in for smplx's `parents` buffer.

    smplx's `batch_rigid_transform` does `transform_chain[parents[i]]` (a Python list indexed by a
    tensor element), which torch.export treats as data-dependent and refuses. Ints make the chain static,
    so the model exports to ONNX with a dynamic batch axis. Supports what smplx uses: `shape[0]`,
    `parents[i]` -> int and `parents[1:]` -> list (advanced indexing).
    """

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, index):  # type: ignore[override]
        item = tuple.__getitem__(self, index)
        return list(item) if isinstance(index, slice) else item


class BodyModel(smplx.SMPL):
    """SMPL-format body model (smplx LBS) with FuseMesh's loaders, 24 SMPL joints and 14 LSP joints.

    Holds no per-sample parameters (like `smplx.SMPLLayer`): every forward gets its own batch size B.
    Build with `BodyModel.from_file(path)`; the constructor takes already-validated arrays.
    Attributes: faces (F,3) int64 numpy; num_vertices; num_betas; model_id; sha256 (of the file);
    vertex_ids {name: vertex index}; joint_names (24 names); parents (24 ints, root -1); source (Path or None).
    Exports with torch.onnx.export(dynamo=True) with a dynamic batch axis (see `_StaticParents`).
    """

    def __init__(self, arrays: dict[str, np.ndarray], *, model_id: str, sha256: str = "",
                 source: Path | None = None, num_betas: int = NUM_BETAS, dtype: torch.dtype = torch.float32):
        arrays = _validate_arrays(arrays, num_betas=num_betas, where=str(source or "<arrays>"))
        data = Struct(
            v_template=arrays["v_template"], shapedirs=arrays["shapedirs"], posedirs=arrays["posedirs"],
            J_regressor=arrays["J_regressor"], weights=arrays["weights"],
            kintree_table=arrays["kintree_table"], f=arrays["f"],
        )
        # smplx prints a warning for any model with fewer than 300 shape components; keep it quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(
                model_path=str(source or ""), data_struct=data, num_betas=num_betas, dtype=dtype,
                create_betas=False, create_global_orient=False, create_body_pose=False, create_transl=False,
                vertex_ids={k: 0 for k in ("nose", "reye", "leye", "rear", "lear")},
                use_hands=False, use_feet_keypoints=False,
            )
        self.vertex_joint_selector = _KeepJoints()
        # A model without pose correctives (the open body) has all-zero posedirs: 207 x 3V floats (~34 MB
        # for 13k vertices) that would only multiply zeros, in every forward and inside every exported
        # ONNX graph. Drop the buffer; `forward` then skips the pose blend shapes (same result, exactly).
        self.has_pose_correctives = bool(np.any(np.asarray(arrays["posedirs"]) != 0))
        if not self.has_pose_correctives:
            del self._buffers["posedirs"]
            self.posedirs = None
        parents = _StaticParents(int(p) for p in self.parents.tolist())
        del self._buffers["parents"]
        self.parents = parents
        # parents[1:] as a device tensor: indexing with the Python list would copy a fresh CPU index tensor
        # to the GPU on every forward (a sync, and it breaks CUDA graph capture)
        self.register_buffer("parent_index", torch.tensor(parents[1:], dtype=torch.long), persistent=False)
        self.faces = arrays["f"]
        self.model_id = model_id
        self.sha256 = sha256
        self.source = source
        self.joint_names = tuple(str(n) for n in arrays["joint_names"])
        self.vertex_ids = {str(n): int(i) for n, i in zip(arrays["vertex_ids_names"], arrays["vertex_ids"])}
        self.register_buffer("lsp_joint_index", torch.tensor(_LSP_SMPL_JOINTS, dtype=torch.long), persistent=False)
        self.register_buffer("lsp_vertex_index", torch.tensor([self.vertex_ids[_LSP_HEAD_TOP]], dtype=torch.long),
                             persistent=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(cls, path: str | Path, *, num_betas: int = NUM_BETAS, dtype: torch.dtype = torch.float32) -> "BodyModel":
        """Load our .npz or an official SMPL .pkl; raises `BodyModelError` (one line) on any problem."""
        path = Path(path)
        arrays, sha = read_body_arrays(path, num_betas=num_betas)
        model_id = str(arrays.pop("model_id", "") or path.stem)
        return cls(arrays, model_id=model_id, sha256=sha, source=path, num_betas=num_betas, dtype=dtype)

    # ------------------------------------------------------------------ properties
    @property
    def num_vertices(self) -> int:
        """V, from the file."""
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def name(self) -> str:
        return "FuseMesh BodyModel"

    def extra_repr(self) -> str:
        return f"model_id={self.model_id!r}, vertices={self.num_vertices}, faces={self.num_faces}, betas={self.num_betas}"

    # ------------------------------------------------------------------ forward
    def forward(self, betas: torch.Tensor | None = None, body_pose: torch.Tensor | None = None,
                global_orient: torch.Tensor | None = None, transl: torch.Tensor | None = None,
                pose2rot: bool = True, **kwargs: Any) -> BodyOutput:
        """Posed mesh and joints.

        betas: (B, num_betas) or (1, num_betas) (broadcast) or None (zeros).
        pose2rot=True:  body_pose (B, 69) axis-angle (or (B, 23, 3)), global_orient (B, 3); radians.
        pose2rot=False: body_pose (B, 23, 3, 3), global_orient (B, 1, 3, 3) (or (B, 3, 3)) rotation matrices.
        transl: (B, 3) metres or None. Missing pose inputs are zero (T-pose, identity orientation).
        Returns BodyOutput(vertices (B,V,3), joints (B,24,3), lsp_joints (B,14,3)), metres.
        """
        if kwargs:
            raise TypeError(f"BodyModel.forward got unexpected arguments: {sorted(kwargs)}")
        dtype, device = self.v_template.dtype, self.v_template.device
        given = [t for t in (body_pose, global_orient, transl, betas) if t is not None]
        batch = given[0].shape[0] if given else 1
        n_body = NUM_JOINTS - 1
        if pose2rot:
            body_pose = _batched(body_pose, "body_pose", batch, (n_body * 3,), dtype, device)
            global_orient = _batched(global_orient, "global_orient", batch, (3,), dtype, device)
        else:
            body_pose = _batched(body_pose, "body_pose", batch, (n_body, 3, 3), dtype, device, eye=True)
            global_orient = _batched(global_orient, "global_orient", batch, (1, 3, 3), dtype, device, eye=True)
        if betas is None:
            betas = torch.zeros(batch, self.num_betas, dtype=dtype, device=device)
        else:
            if betas.dim() != 2 or betas.shape[1] != self.num_betas or betas.shape[0] not in (1, batch):
                raise ValueError(f"betas must be ({batch}, {self.num_betas}) or (1, {self.num_betas}), got {tuple(betas.shape)}")
            betas = betas.to(device=device, dtype=dtype).expand(batch, -1)
        if transl is not None:
            transl = _batched(transl, "transl", batch, (3,), dtype, device)
        full_pose = torch.cat([global_orient.reshape(batch, -1), body_pose.reshape(batch, -1)], dim=1)
        vertices, joints = self._skin(betas, full_pose, pose2rot)
        if transl is not None:
            vertices = vertices + transl.unsqueeze(1)
            joints = joints + transl.unsqueeze(1)
        lsp = torch.cat([joints.index_select(1, self.lsp_joint_index),
                         vertices.index_select(1, self.lsp_vertex_index)], dim=1)
        return BodyOutput(vertices=vertices, joints=joints, lsp_joints=lsp)

    def _skin(self, betas: torch.Tensor, full_pose: torch.Tensor, pose2rot: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """SMPL linear blend skinning (smplx's `lbs`, pose blend shapes only when the model has them).

        betas (B, num_betas); full_pose (B, 72) axis-angle or (B, 216) rotation matrices, root first.
        Returns vertices (B, V, 3) and joints (B, 24, 3), metres, before translation.
        """
        B = betas.shape[0]
        v_shaped = self.v_template + smplx_lbs.blend_shapes(betas, self.shapedirs)
        J = smplx_lbs.vertices2joints(self.J_regressor, v_shaped)
        if pose2rot:
            rot_mats = smplx_lbs.batch_rodrigues(full_pose.reshape(-1, 3)).view(B, -1, 3, 3)
        else:
            rot_mats = full_pose.reshape(B, -1, 3, 3)
        if self.posedirs is not None:
            ident = torch.eye(3, dtype=v_shaped.dtype, device=v_shaped.device)
            pose_feature = (rot_mats[:, 1:] - ident).reshape(B, -1)
            v_posed = v_shaped + torch.matmul(pose_feature, self.posedirs).view(B, -1, 3)
        else:
            v_posed = v_shaped.expand(B, -1, -1)
        joints, A = self._rigid_transform(rot_mats, J)
        n_joints = A.shape[1]
        T = torch.matmul(self.lbs_weights, A.reshape(B, n_joints, 16)).view(B, -1, 4, 4)
        vertices = torch.matmul(T[..., :3, :3], v_posed.unsqueeze(-1))[..., 0] + T[..., :3, 3]
        return vertices, joints

    def _rigid_transform(self, rot_mats: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """smplx's `batch_rigid_transform` with the parents as a device buffer for the relative joints and
        Python ints for the chain. rot_mats (B, 24, 3, 3); joints (B, 24, 3) rest-pose joints, metres.
        Returns posed joints (B, 24, 3) and the rest-relative transforms (B, 24, 4, 4)."""
        joints = joints.unsqueeze(-1)
        rel_joints = joints.clone()
        rel_joints[:, 1:] -= joints[:, self.parent_index]
        n = joints.shape[1]
        local = smplx_lbs.transform_mat(rot_mats.reshape(-1, 3, 3), rel_joints.reshape(-1, 3, 1)).reshape(-1, n, 4, 4)
        chain = [local[:, 0]]
        for i in range(1, n):
            chain.append(torch.matmul(chain[self.parents[i]], local[:, i]))
        transforms = torch.stack(chain, dim=1)
        posed = transforms[:, :, :3, 3]
        homogen = torch.nn.functional.pad(joints, [0, 0, 0, 1])
        rel = transforms - torch.nn.functional.pad(torch.matmul(transforms, homogen), [3, 0, 0, 0, 0, 0, 0, 0])
        return posed, rel

    @torch.no_grad()
    def rest_height(self, betas: torch.Tensor | None = None) -> float:
        """Height (metres, Y extent of the mesh) in the T-pose for `betas` (1, num_betas) or zeros."""
        out = self.forward(betas=betas)
        y = out.vertices[0, :, 1]
        return float(y.max() - y.min())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model's data in our npz layout (float32 geometry), e.g. for `write_body_npz`."""
        V = self.num_vertices
        parents = np.array(self.parents, dtype=np.int64)
        return {
            "v_template": self.v_template.detach().cpu().numpy().astype(np.float32),
            "shapedirs": self.shapedirs.detach().cpu().numpy().astype(np.float32),
            "posedirs": (self.posedirs.detach().cpu().numpy().T.reshape(V, 3, -1).astype(np.float32)
                         if self.posedirs is not None else np.zeros((V, 3, NUM_POSE_BASIS), np.float32)),
            "J_regressor": self.J_regressor.detach().cpu().numpy().astype(np.float32),
            "weights": self.lbs_weights.detach().cpu().numpy().astype(np.float32),
            "kintree_table": np.stack([parents, np.arange(len(parents))]).astype(np.int64),
            "f": np.asarray(self.faces, dtype=np.int64),
            "joint_names": np.array(self.joint_names),
            "vertex_ids_names": np.array(list(self.vertex_ids)),
            "vertex_ids": np.array(list(self.vertex_ids.values()), dtype=np.int64),
            "model_id": np.array(self.model_id),
        }


def _batched(x: torch.Tensor | None, name: str, batch: int, tail: tuple[int, ...], dtype: torch.dtype,
             device: torch.device, eye: bool = False) -> torch.Tensor:
    """`x` as a contiguous (batch, *tail) tensor (zeros / identities when None); clear error on a bad shape."""
    if x is None:
        if eye:
            return torch.eye(3, dtype=dtype, device=device).expand(batch, *tail).contiguous()
        return torch.zeros(batch, *tail, dtype=dtype, device=device)
    numel = 1
    for n in tail:
        numel *= n
    if x.dim() < 1 or x.shape[0] != batch or x[0].numel() != numel:
        raise ValueError(f"{name} must be ({batch}, {', '.join(map(str, tail))}), got {tuple(x.shape)}")
    return x.to(device=device, dtype=dtype).reshape(batch, *tail).contiguous()


# ====================================================================== reading files
def read_body_arrays(path: str | Path, num_betas: int = NUM_BETAS) -> tuple[dict[str, np.ndarray], str]:
    """Read and validate a body file (our .npz or an official SMPL .pkl) -> (arrays, sha256 hex of the file).

    Arrays come back in our npz layout (float64 geometry, int64 indices, J_regressor dense), with
    `joint_names`, `vertex_ids_names`, `vertex_ids` always present and `model_id` when the file has one.
    """
    path = Path(path)
    if not path.exists():
        raise BodyModelError(f"{path}: body model file not found")
    if not path.is_file():
        raise BodyModelError(f"{path}: not a file")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    if not raw:
        raise BodyModelError(f"{path}: file is empty")
    if raw[:2] == b"PK":
        arrays = _read_npz(path, raw)
    elif path.suffix.lower() == ".pkl" or raw[:1] == b"\x80":
        arrays = _read_official_pickle(path, raw)
    else:
        raise BodyModelError(f"{path}: not a body model file (expected an .npz archive or an SMPL .pkl pickle)")
    return _validate_arrays(arrays, num_betas=num_betas, where=str(path)), sha


def _read_npz(path: Path, raw: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise BodyModelError(f"{path}: npz holds Python objects (pickled arrays are not accepted in .npz)") from None
        raise BodyModelError(f"{path}: corrupt .npz archive ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise BodyModelError(f"{path}: corrupt or truncated .npz archive ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------- the official SMPL pickle
class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ChumpyStandIn:
    """Inert stand-in for any pickled chumpy class: keeps its class name and pickled state, runs nothing."""

    chumpy_class = "chumpy.ch.Ch"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_ChumpyStandIn":
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"_raw_state": state}


class _SparseStandIn:
    """Inert stand-in for a pickled scipy.sparse matrix; `to_dense()` rebuilds it from its data arrays."""

    sparse_format = "csc"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_SparseStandIn":
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def to_dense(self) -> np.ndarray:
        import scipy.sparse as sp

        s = self.state
        shape = s.get("_shape", s.get("shape"))
        fmt = self.sparse_format
        if fmt in ("csc", "csr"):
            make = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
            m = make((_plain(s["data"]), _plain(s["indices"]), _plain(s["indptr"])), shape=tuple(shape))
        else:  # coo
            m = sp.coo_matrix((_plain(s["data"]), (_plain(s["row"]), _plain(s["col"]))), shape=tuple(shape))
        return m.toarray()


_CHUMPY_STANDINS: dict[tuple[str, str], type] = {}
_SPARSE_STANDINS: dict[str, type] = {
    fmt: type(f"_Sparse_{fmt}", (_SparseStandIn,), {"sparse_format": fmt}) for fmt in ("csc", "csr", "coo")
}


def _chumpy_standin(module: str, name: str) -> type:
    key = (module, name)
    if key not in _CHUMPY_STANDINS:
        _CHUMPY_STANDINS[key] = type(f"_Chumpy_{name}", (_ChumpyStandIn,), {"chumpy_class": f"{module}.{name}"})
    return _CHUMPY_STANDINS[key]


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """Protocol-0/1 `copyreg._reconstructor`, limited to our inert stand-ins."""
    if isinstance(cls, type) and issubclass(cls, (_ChumpyStandIn, _SparseStandIn)) and base is object:
        return cls.__new__(cls)
    raise _RefusedGlobal(f"copyreg._reconstructor for {cls!r}")


def _latin1_bytes(text: Any, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3 writes bytes into protocol-2 pickles, limited to latin-1 text -> bytes."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise _RefusedGlobal(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = np.core.multiarray
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = np.core.numeric._frombuffer
    for mod in ("builtins", "__builtin__"):
        allowed[(mod, "set")] = set
        allowed[(mod, "frozenset")] = frozenset
        allowed[(mod, "object")] = object
    for mod in ("copyreg", "copy_reg"):
        allowed[(mod, "_reconstructor")] = _safe_reconstructor
    allowed[("_codecs", "encode")] = _latin1_bytes
    for fmt, standin in _SPARSE_STANDINS.items():
        for mod in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}", "scipy.sparse", "scipy.sparse._arrays"):
            allowed[(mod, f"{fmt}_matrix")] = standin
    return allowed


class _SmplUnpickler(pickle.Unpickler):
    """Unpickles the official SMPL .pkl without chumpy: only array-data globals are resolved.

    chumpy.* classes become `_ChumpyStandIn`s, scipy.sparse matrices `_SparseStandIn`s; numpy array and
    dtype reconstruction, set/frozenset/object, copyreg._reconstructor (stand-ins only) and
    _codecs.encode (latin-1 only: how Python 3 writes bytes at protocol 2) are allowed.
    Any other global (os.system, builtins.eval, ...) raises `_RefusedGlobal` before it can be called.
    """

    _ALLOWED: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_standin(module, name)
        if _SmplUnpickler._ALLOWED is None:
            _SmplUnpickler._ALLOWED = _allowed_globals()
        try:
            return _SmplUnpickler._ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _read_official_pickle(path: Path, raw: bytes) -> dict[str, np.ndarray]:
    try:
        data = _SmplUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _RefusedGlobal as e:
        raise BodyModelError(
            f"{path}: refused to unpickle global '{e}' (only numpy, scipy.sparse and chumpy array data are allowed)"
        ) from None
    except Exception as e:  # any malformed pickle: EOFError, UnpicklingError, ValueError, ...
        raise BodyModelError(f"{path}: not a readable SMPL pickle ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise BodyModelError(f"{path}: SMPL pickle must hold a dict, found {type(data).__name__}")
    out: dict[str, np.ndarray] = {}
    for key in (*_REQUIRED_KEYS, "joint_names", "vertex_ids_names", "vertex_ids", "model_id"):
        if key in data:
            try:
                out[key] = _plain(data[key])
            except BodyModelError as e:
                raise BodyModelError(f"{path}: key '{key}': {e}") from None
            except Exception as e:
                raise BodyModelError(f"{path}: key '{key}' could not be rebuilt ({type(e).__name__}: {e})") from None
    return out


def _plain(value: Any, depth: int = 0) -> np.ndarray:
    """A pickled value (ndarray, chumpy stand-in, sparse stand-in, list, scalar) as a numpy array."""
    if depth > 32:
        raise BodyModelError("chumpy expression nested too deeply")
    if isinstance(value, _SparseStandIn):
        return value.to_dense()
    if isinstance(value, _ChumpyStandIn):
        return _chumpy_value(value, depth + 1)
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value)


def _chumpy_value(obj: _ChumpyStandIn, depth: int) -> np.ndarray:
    """Evaluate the few chumpy node types an SMPL file can hold (a plain Ch and reorderings of one)."""
    s, kind = obj.state, obj.chumpy_class.rsplit(".", 1)[-1]
    if "x" in s and kind not in ("AtleastNd",):
        return _plain(s["x"], depth)
    if "a" in s:
        a = _plain(s["a"], depth)
        if kind == "Select":
            r = a.ravel()[_plain(s["idxs"], depth)]
            return r.reshape(s["preferred_shape"]) if "preferred_shape" in s else r
        if kind == "Reshape":
            return a.reshape(s["newshape"])
        if kind == "transpose":
            return np.transpose(a, s.get("axes"))
        if kind == "swapaxes":
            return np.swapaxes(a, s["axis1"], s["axis2"])
        if kind == "rollaxis":
            return np.rollaxis(a, s["axis"], s.get("start", 0))
        if kind == "Tile":
            return np.tile(a, s["reps"])
        if kind == "Repeat":
            return np.repeat(a, s["repeats"], s.get("axis"))
    if kind == "Concatenate" and "dterms" in s:
        return np.concatenate([_plain(s[t], depth) for t in s["dterms"]], axis=s.get("axis", 0))
    raise BodyModelError(f"unsupported chumpy object {obj.chumpy_class} (state keys {sorted(s)})")


# ---------------------------------------------------------------------- validation
def _validate_arrays(arrays: dict[str, np.ndarray], *, num_betas: int, where: str) -> dict[str, np.ndarray]:
    """Check keys, shapes, index ranges and finiteness; return normalised copies (one-line errors)."""

    def fail(msg: str) -> BodyModelError:
        return BodyModelError(f"{where}: {msg}")

    missing = [k for k in _REQUIRED_KEYS if k not in arrays]
    if missing:
        raise fail(f"missing key {missing[0]!r} (file has: {', '.join(sorted(arrays)) or 'nothing'})")
    out = dict(arrays)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        a = out[key]
        if isinstance(a, _SparseStandIn):
            a = a.to_dense()
        a = np.asarray(a)
        if a.dtype.kind not in "fiu":
            raise fail(f"{key!r} must be numeric, has dtype {a.dtype}")
        a = a.astype(np.float64, copy=False)
        if not np.isfinite(a).all():
            raise fail(f"{key!r} contains NaN or infinite values")
        out[key] = a
    v = out["v_template"]
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 1:
        raise fail(f"'v_template' must be (V, 3), got {v.shape}")
    V = v.shape[0]

    def need(key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise fail(f"{key!r} must be {expected} with V={V}, got {np.shape(out[key])}")

    sd = out["shapedirs"]
    need("shapedirs", sd.ndim == 3 and sd.shape[:2] == (V, 3) and sd.shape[2] >= num_betas, f"(V, 3, >={num_betas})")
    out["shapedirs"] = sd[:, :, :num_betas]
    pd = out["posedirs"]
    need("posedirs", pd.shape == (V, 3, NUM_POSE_BASIS), f"(V, 3, {NUM_POSE_BASIS})")
    need("J_regressor", out["J_regressor"].shape == (NUM_JOINTS, V), f"({NUM_JOINTS}, V)")
    w = out["weights"]
    need("weights", w.shape == (V, NUM_JOINTS), f"(V, {NUM_JOINTS})")
    row_sum = w.sum(axis=1)
    if np.abs(row_sum - 1.0).max() > 1e-3:
        bad = int(np.argmax(np.abs(row_sum - 1.0)))
        raise fail(f"'weights' rows must sum to 1 (vertex {bad} sums to {row_sum[bad]:.4f})")

    kt = np.asarray(out["kintree_table"])
    if kt.shape != (2, NUM_JOINTS) or kt.dtype.kind not in "iuf":
        raise fail(f"'kintree_table' must be (2, {NUM_JOINTS}) integers, got {kt.shape} {kt.dtype}")
    parents = kt[0].astype(np.int64)
    parents[0] = -1
    if not all(0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise fail(f"'kintree_table' parents must precede their children, got {parents.tolist()}")
    out["kintree_table"] = np.stack([parents, np.arange(NUM_JOINTS)]).astype(np.int64)

    f = np.asarray(out["f"])
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] < 1 or f.dtype.kind not in "iu":
        raise fail(f"'f' must be (F, 3) integer vertex indices, got {f.shape} {f.dtype}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= V:
        raise fail(f"'f' indexes vertices outside 0..{V - 1} (min {f.min()}, max {f.max()})")
    out["f"] = f

    names = out.get("joint_names")
    if names is None:
        out["joint_names"] = np.array(SMPL_JOINT_NAMES)
    else:
        names = np.asarray(names)
        if names.shape != (NUM_JOINTS,) or names.dtype.kind not in "US":
            raise fail(f"'joint_names' must be {NUM_JOINTS} strings, got {names.shape} {names.dtype}")
        out["joint_names"] = names.astype(str)

    has_names, has_ids = "vertex_ids_names" in out, "vertex_ids" in out
    if has_names != has_ids:
        raise fail("'vertex_ids_names' and 'vertex_ids' must be given together")
    if has_names:
        vn = np.asarray(out["vertex_ids_names"]).astype(str).reshape(-1)
        vi = np.asarray(out["vertex_ids"])
        if vi.dtype.kind not in "iu" or vi.shape != vn.shape:
            raise fail(f"'vertex_ids' must be {vn.shape[0]} integers matching 'vertex_ids_names', got {vi.shape} {vi.dtype}")
        vi = vi.astype(np.int64)
        if vi.size and (vi.min() < 0 or vi.max() >= V):
            raise fail(f"'vertex_ids' outside 0..{V - 1}")
    elif V == _SMPL_NUM_VERTICES:
        vn = np.array(list(SMPL_KEYPOINT_VERTEX_IDS))
        vi = np.array(list(SMPL_KEYPOINT_VERTEX_IDS.values()), dtype=np.int64)
    else:
        vn, vi = np.array([], dtype=str), np.array([], dtype=np.int64)
    if _LSP_HEAD_TOP not in set(vn.tolist()):
        raise fail(f"no {_LSP_HEAD_TOP!r} in 'vertex_ids_names' (needed for the LSP head_top joint)")
    out["vertex_ids_names"], out["vertex_ids"] = vn, vi

    if "model_id" in out:
        mid = np.asarray(out["model_id"])
        if mid.dtype.kind not in "US" or mid.size != 1:
            raise fail(f"'model_id' must be one string, got {mid.shape} {mid.dtype}")
        out["model_id"] = str(mid.reshape(-1)[0])
    return out


def write_body_npz(arrays: dict[str, Any], path: str | Path) -> Path:
    """Write body arrays (validated layout) to our compressed .npz format, float32 geometry."""
    path = Path(path)
    keep = dict(arrays)
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        keep[key] = np.asarray(keep[key], dtype=np.float32)
    for key in ("kintree_table", "f", "vertex_ids"):
        keep[key] = np.asarray(keep[key], dtype=np.int64)
    for key in ("joint_names", "vertex_ids_names", "model_id"):
        if key in keep:
            keep[key] = np.asarray(keep[key]).astype(str)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # an open file keeps numpy from appending ".npz" to the name
        np.savez_compressed(fh, **keep)
    return path


# ====================================================================== command line
def convert(src: str | Path, dst: str | Path, model_id: str | None = None) -> BodyModel:
    """Convert an official SMPL .pkl (or an npz) to our npz at `dst`; returns the reloaded model."""
    arrays, _ = read_body_arrays(src)
    arrays["model_id"] = model_id or str(arrays.get("model_id") or Path(src).stem)
    write_body_npz(arrays, dst)
    return BodyModel.from_file(dst)


def describe(body: BodyModel) -> str:
    """Multi-line summary printed by `info`."""
    kp = ", ".join(f"{k}={v}" for k, v in body.vertex_ids.items())
    return "\n".join([
        f"file: {body.source}",
        f"model_id: {body.model_id}",
        f"sha256: {body.sha256}",
        f"vertices: {body.num_vertices}",
        f"faces: {body.num_faces}",
        f"joints: {body.J_regressor.shape[0]}",
        f"betas: {body.num_betas}",
        f"height_at_beta0_m: {body.rest_height():.4f}",
        f"vertex_ids: {kp}",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.body", description="FuseMesh body model files")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_conv = sub.add_parser("convert", help="convert an official SMPL .pkl to FuseMesh's npz format")
    p_conv.add_argument("src", type=Path)
    p_conv.add_argument("dst", type=Path)
    p_conv.add_argument("--model-id", default=None, help="model id stored in the npz (default: source file stem)")
    p_conv.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    p_info = sub.add_parser("info", help="print vertex/face counts, model id, hash and height at beta=0")
    p_info.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "convert":
            if args.dst.is_dir():
                print(f"error: {args.dst}: is a folder, not a file name", file=sys.stderr)
                return 2
            if args.dst.exists() and not args.overwrite:
                print(f"error: {args.dst}: already exists (pass --overwrite to replace)", file=sys.stderr)
                return 2
            body = convert(args.src, args.dst, args.model_id)
            print(f"wrote {args.dst} ({body.num_vertices} vertices, {body.num_faces} faces, model_id {body.model_id})")
        else:
            print(describe(BodyModel.from_file(args.file)))
    except BodyModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
