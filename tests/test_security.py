"""Security audit: what FuseMesh may deserialise, execute and overwrite.

1. A static audit (Python's ast, not grep: aliases and `from x import y` are resolved) of the shipped
   code (app/, model/, training/, calibration/, assets/; tests are exempt: they build payloads and run
   CLIs): `torch.load` always with weights_only=True; YAML only through yaml.safe_load; no shell
   (shell=True, os.system/popen/exec*/spawn*, subprocess with a command string, getoutput); no eval/exec;
   pickle loading only in model/body.py (the restricted SMPL unpickler); no np.load(allow_pickle=True).
   The auditor itself is tested on a snippet with known violations.
2. Live payloads (a pickle / YAML tag / object array that creates a marker file when loaded unsafely;
   each test first proves its payload is armed) handed to every loader a user's file reaches:
   checkpoints, USCG states, YAML configs, OpenCV/ROS calibration YAML, body-model npz, ONNX path.
3. Command-line paths are used as given, never through a shell; outputs refuse to replace existing files
   without --overwrite (each file on its own; results.npz alone is covered in test_app_outputs/e2e), in the
   app, the soak, `python -m model.body convert` and `python -m calibration.checkerboard` (here) and
   `python -m training.export` (test_export.py).
"""
from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("app", "model", "training", "calibration", "assets")
PICKLE_ALLOWED = {"model/body.py": {"pickle.Unpickler"}}  # the restricted SMPL unpickler's base class

_YAML_UNSAFE = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all", "Loader",
                "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader"}
_SHELL = {"os.system", "os.popen", "os.execl", "os.execle", "os.execlp", "os.execlpe", "os.execv", "os.execve",
          "os.execvp", "os.execvpe", "os.spawnl", "os.spawnle", "os.spawnlp", "os.spawnlpe", "os.spawnv",
          "os.spawnve", "os.spawnvp", "os.spawnvpe", "os.posix_spawn", "os.posix_spawnp",
          "subprocess.getoutput", "subprocess.getstatusoutput", "pty.spawn"}
_SUBPROCESS = {"subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
               "subprocess.check_output"}
_DESERIALISE = {"pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
                "_pickle.Unpickler", "cPickle.load", "cPickle.loads", "dill.load", "dill.loads", "joblib.load",
                "marshal.load", "marshal.loads", "shelve.open", "pandas.read_pickle", "jsonpickle.decode",
                "torch.jit.load"}


# ---------------------------------------------------------------------------------------- the auditor
class _Auditor(ast.NodeVisitor):
    """Collects (line, rule, text) violations of one module (see the module docstring)."""

    def __init__(self, rel: str):
        self.rel = rel
        self.aliases: dict[str, str] = {}      # local name -> dotted origin ("pk" -> "pickle")
        self.found: list[tuple[int, str, str]] = []

    def dotted(self, node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else ""
        return ""

    def flag(self, node: ast.AST, rule: str, what: str) -> None:
        self.found.append((node.lineno, rule, what))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            if a.name in ("cPickle", "dill", "shelve", "marshal", "jsonpickle"):
                self.flag(node, "deserialise", f"import {a.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for a in node.names:
            full = f"{node.module}.{a.name}"
            self.aliases[a.asname or a.name] = full
            self.check_name(node, full)

    def check_name(self, node: ast.AST, full: str) -> None:
        module, _, attr = full.rpartition(".")
        if module == "yaml" and attr in _YAML_UNSAFE:
            self.flag(node, "yaml", full)
        if full in _SHELL:
            self.flag(node, "shell", full)
        if full in _DESERIALISE and full not in PICKLE_ALLOWED.get(self.rel, set()):
            self.flag(node, "deserialise", full)

    def visit_Name(self, node: ast.Name) -> None:  # a name imported with `from x import y [as z]`
        full = self.aliases.get(node.id, node.id)
        if full != node.id and "." in full:
            self.check_name(node, full)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        full = self.dotted(node)
        if full and not isinstance(getattr(node, "ctx", None), ast.Store):
            self.check_name(node, full)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = self.dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec") and func in ("eval", "exec"):
            self.flag(node, "eval", node.func.id)
        if func == "torch.load":
            w = kw.get("weights_only")
            if not (isinstance(w, ast.Constant) and w.value is True):
                self.flag(node, "torch.load", "torch.load without weights_only=True")
        if func in ("numpy.load", "np.load"):
            a = kw.get("allow_pickle")
            if a is not None and not (isinstance(a, ast.Constant) and a.value is False):
                self.flag(node, "deserialise", "np.load(allow_pickle=...)")
        shell = kw.get("shell")
        if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
            self.flag(node, "shell", f"{func or 'call'}(shell=...)")
        if func in _SUBPROCESS and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
            self.flag(node, "shell", f"{func} with a command string")
        self.generic_visit(node)


def audit(text: str, rel: str) -> list[tuple[int, str, str]]:
    auditor = _Auditor(rel)
    auditor.visit(ast.parse(text, filename=rel))
    return sorted(auditor.found)


def shipped_files() -> list[Path]:
    return sorted(p for d in SHIPPED for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_auditor_finds_known_violations():
    snippet = '''
import os, yaml, subprocess, torch
import pickle as pk
import numpy as np
from yaml import full_load
from os import system as run_it
torch.load("a.pt")                                   # 7
torch.load("a.pt", weights_only=False)               # 8
torch.load("a.pt", map_location="cpu", weights_only=True)
yaml.load(text, Loader=yaml.Loader)                  # 10 (load and Loader)
yaml.safe_load(text)
subprocess.run("ls -l", shell=True)                  # 12 (string and shell)
subprocess.run(["ls", path])
os.system("x")                                       # 14
pk.loads(data)                                       # 15
np.load("x.npz", allow_pickle=True)                  # 16
np.load("x.npz")
eval("1+1")                                          # 18
model.eval()
run_it("x")                                          # 20
subprocess.Popen(f"git {x}")                         # 21
'''
    found = audit(snippet, "app/example.py")
    assert [(line, rule) for line, rule, _ in found] == [
        (5, "yaml"), (6, "shell"), (7, "torch.load"), (8, "torch.load"), (10, "yaml"), (10, "yaml"), (12, "shell"),
        (12, "shell"), (14, "shell"), (15, "deserialise"), (16, "deserialise"), (18, "eval"), (20, "shell"),
        (21, "shell")]
    assert audit("import pickle\nclass U(pickle.Unpickler):\n    pass\n", "model/body.py") == []
    assert audit("import pickle\nclass U(pickle.Unpickler):\n    pass\n", "app/x.py") == [
        (2, "deserialise", "pickle.Unpickler")]


def test_shipped_code_loads_nothing_unsafely_and_runs_no_shell():
    files = shipped_files()
    assert len(files) > 50 and any(p.name == "body.py" for p in files)
    problems = [f"{p.relative_to(REPO)}:{line}: {rule}: {what}"
                for p in files for line, rule, what in audit(p.read_text(), str(p.relative_to(REPO)))]
    assert problems == []


def test_the_only_unpickler_is_the_restricted_smpl_one():
    body = (REPO / "model" / "body.py").read_text()
    tree = ast.parse(body)
    unpicklers = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                  and any(ast.unparse(b) == "pickle.Unpickler" for b in n.bases)]
    assert [c.name for c in unpicklers] == ["_SmplUnpickler"]
    methods = {f.name for f in unpicklers[0].body if isinstance(f, ast.FunctionDef)}
    assert "find_class" in methods  # every global goes through the allow list


def test_the_app_runtime_path_never_imports_torch():
    code = ("import sys, app.cli, app.worker, app.runtime, app.sources, app.capture_thread, app.outputs, "
            "app.headless, app.soak; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------- live payloads
class _Touch:
    """Unpickles into open(marker, "w"): creates the marker file. Harmless, and proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def armed(data: bytes, marker: Path) -> bool:
    """Unsafe pickle.loads of `data` creates `marker` (the payload works); the marker is removed again."""
    handle = pickle.loads(data)
    handle.close()
    made = marker.exists()
    marker.unlink(missing_ok=True)
    return made


def test_checkpoint_and_uscg_state_with_a_code_payload_are_refused_and_run_nothing(tmp_path):
    import torch

    from training.checkpoint import CheckpointError, read_checkpoint
    from training.uscg import load_uscg

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": "fusemesh.checkpoint", "version": 1, "state_dict": {}, "x": _Touch(marker)}, path)
    assert armed(pickle.dumps(_Touch(marker)), marker)
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a loadable FuseMesh checkpoint \(UnpicklingError") as e:
        read_checkpoint(path)
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_uscg(path)
    assert not marker.exists()


YAML_PAYLOAD = "!!python/object/apply:builtins.open [{marker}, w]\n"


def test_yaml_configs_with_a_python_tag_are_refused_and_run_nothing(tmp_path):
    import yaml

    from calibration.errors import CalibrationError
    from calibration.opencv_io import read_calibration_file
    from model.config import load_config
    from training.config import load_train_config

    marker = tmp_path / "pwned"
    text = YAML_PAYLOAD.format(marker=str(marker))
    yaml.unsafe_load(text).close()  # the payload is armed
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "config.yaml"
    path.write_text(text)
    for load in (load_config, load_train_config):
        with pytest.raises((yaml.YAMLError, ValueError), match="python/object/apply"):
            load(path)
    with pytest.raises(CalibrationError, match=r"config\.yaml: not valid YAML/JSON"):
        read_calibration_file(path)
    nested = tmp_path / "nested.yaml"  # the tag one level down, where a loader might only read a subtree
    nested.write_text(f"model:\n  input_size: {YAML_PAYLOAD.format(marker=str(marker))}")
    with pytest.raises((yaml.YAMLError, ValueError)):
        load_train_config(nested)
    assert not marker.exists()


def test_body_npz_with_a_pickled_object_is_refused_and_runs_nothing(tmp_path):
    from model.body import BodyModel, BodyModelError

    marker = tmp_path / "pwned"
    path = tmp_path / "body.npz"
    np.savez(path, v_template=np.array([_Touch(marker)], dtype=object))
    with np.load(path, allow_pickle=True) as z:  # armed
        z["v_template"][0].close()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(BodyModelError, match=r"body\.npz: npz holds Python objects"):
        BodyModel.from_file(path)
    assert not marker.exists()


def test_a_pickle_named_model_onnx_is_refused_before_onnx_runtime(tmp_path):
    from app.runtime import InferenceSession, ModelFileError

    marker = tmp_path / "pwned"
    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps(_Touch(marker), protocol=4))
    with pytest.raises(ModelFileError, match=r"model\.onnx: a Python pickle, not an ONNX model"):
        InferenceSession(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- paths and overwrite
ODD = ["$(touch PWNED1)", "`touch PWNED2`", "a;touch PWNED3;b", "it's \"quoted\" & *", "-dash"]


def test_command_line_paths_are_used_as_given_never_by_a_shell(tmp_path):
    import cv2

    source = tmp_path / f"src {ODD[0]} {ODD[1]}"
    (source / "color").mkdir(parents=True)
    cv2.imwrite(str(source / "color" / "000000.png"), np.full((720, 1280, 3), 90, np.uint8))
    (source / "calibration.json").write_bytes((REPO / "assets" / "calibration" / "azure_kinect_default.json")
                                              .read_bytes())
    model = tmp_path / f"{ODD[2]} {ODD[3]}.onnx"   # missing: the run stops at the model, exit 3
    out = tmp_path / f"{ODD[4]} out {ODD[0]}"
    proc = subprocess.run([sys.executable, "-m", "app", f"--source={source}", f"--model={model}", "--headless",
                           f"--out={out}", "--no-progress", "--providers", "cpu"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert f"fusemesh: {source}: no depth stream; running RGB-only" in proc.stderr  # the folder, opened as named
    assert f"fusemesh: error: {model}: model file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("PWNED")]  # a shell would run in cwd
    assert leftovers == []


def test_outputs_go_exactly_where_named(tmp_path):
    from app.outputs import OutputWriter
    from app.results import FrameResult, InputMode

    out = tmp_path / f"{ODD[4]} {ODD[0]} {ODD[2]}"
    with OutputWriter(out, bvh=False) as w:
        w.write(FrameResult(0, 0, InputMode.NONE, "auto", None))
    assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl", "results.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


@pytest.mark.parametrize("existing", ["frames.jsonl", "motion.bvh", "meshes/mesh_000007.ply", "meshes/mesh_000000.obj"])
def test_each_existing_output_file_alone_blocks_a_new_run(tmp_path, existing):
    from app.outputs import OutputError, OutputWriter

    target = tmp_path / "o" / existing
    target.parent.mkdir(parents=True)
    target.write_text("the user's earlier run")
    with pytest.raises(OutputError, match=r"already exists \(pass --overwrite to replace\)"):
        OutputWriter(tmp_path / "o", meshes="ply")
    assert target.read_text() == "the user's earlier run"
    assert sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*") if p.is_file()) \
        == [existing]  # nothing else written either


@pytest.mark.parametrize("existing", ["overlay.mp4", "thumbnails/frame_000000.png"])
def test_the_cli_refuses_to_replace_an_overlay_without_overwrite(tmp_path, capsys, existing):
    from app.cli import main

    target = tmp_path / "o" / existing
    target.parent.mkdir(parents=True)
    target.write_bytes(b"earlier")
    code = main(["--source", str(tmp_path / "missing.mkv"), "--headless", "--out", str(tmp_path / "o"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists (pass --overwrite to replace)" in err and err.count("\n") == 1
    assert target.read_bytes() == b"earlier"


def test_the_soak_refuses_existing_outputs_without_overwrite(tmp_path):
    from app.outputs import OutputError
    from app.soak import run_soak

    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.npz").write_bytes(b"earlier")

    class NoSource:  # never read: the writer refuses first
        name, is_live, rig = "none", False, None

    with pytest.raises(OutputError, match="already exists"):
        run_soak(NoSource(), object(), tmp_path / "o", 10)
    assert (tmp_path / "o" / "results.npz").read_bytes() == b"earlier"


def test_body_convert_refuses_to_replace_a_file_without_overwrite(tmp_path, capsys):
    from model.body import BodyModel, main
    from toy_body import write_toy_body

    src = write_toy_body(tmp_path / "toy.npz")
    dst = tmp_path / "body.npz"
    dst.write_bytes(b"the user's earlier body")
    assert main(["convert", str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {dst}: already exists (pass --overwrite to replace)\n"
    assert dst.read_bytes() == b"the user's earlier body"
    assert main(["convert", str(src), str(dst), "--overwrite", "--model-id", "again"]) == 0
    assert BodyModel.from_file(dst).model_id == "again"
    assert main(["convert", str(src), str(tmp_path), "--overwrite"]) == 2  # a folder is never replaced
    assert capsys.readouterr().err.endswith(f"error: {tmp_path}: is a folder, not a file name\n")


@pytest.mark.parametrize("existing", ["rig.json", "rig.yaml"])
def test_checkerboard_refuses_to_replace_either_output_without_overwrite(tmp_path, capsys, existing):
    from calibration.checkerboard import main

    (tmp_path / existing).write_text("earlier calibration")
    argv = ["--ir", str(tmp_path / "ir_*.png"), "--color", str(tmp_path / "color_*.png"), "--pattern", "9x6",
            "--square-mm", "30", "--out", str(tmp_path / "rig.json"), "--opencv-yaml", str(tmp_path / "rig.yaml")]
    assert main(argv) == 2  # refused before any image is read (there are none)
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / existing}: already exists (pass --overwrite to replace)\n"
    assert (tmp_path / existing).read_text() == "earlier calibration"
    with pytest.raises(SystemExit, match="no images match"):  # with --overwrite it goes on to the images
        main(argv + ["--overwrite"])
    assert (tmp_path / existing).read_text() == "earlier calibration"
