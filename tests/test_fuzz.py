"""Fuzz tests (hypothesis) of the parsers a user's files reach first: the Azure Kinect raw calibration JSON
(`calibration.kinect`) and the RGB-D folder reader (`app.sources.FolderSource` with its calibration.json,
timestamps.txt and images). The contract under test: a bad file raises the documented error type
(CalibrationError, SourceError) with a message, never anything else; a good one reads correctly.

Inputs are mutations of the real default calibration and of a valid folder (values replaced by random
JSON, keys deleted, bytes flipped, random bytes as images, odd file names). Runs are derandomised so CI
is reproducible; FUSEMESH_FUZZ_EXAMPLES=2000 FUSEMESH_FUZZ_RANDOM=1 explores further. The explicit
examples at the end are the failures these tests found (fixed in calibration/kinect.py and app/sources.py).
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (it belongs in requirements.txt)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from app.frames import RgbdFrame, SourceError  # noqa: E402
from app.sources import FolderSource, load_rig  # noqa: E402
from calibration import default_rig  # noqa: E402
from calibration.errors import CalibrationError  # noqa: E402
from calibration.kinect import COLOR_RESOLUTIONS, DEPTH_MODES, parse_raw_calibration, rig_from_raw_json  # noqa: E402
from calibration.rig import RgbdRig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RAW_TEXT = (REPO / "assets" / "calibration" / "azure_kinect_default.json").read_text()
RAW = json.loads(RAW_TEXT)
RIG = default_rig("NFOV_2X2BINNED", "720P")
RIG_DOC = RIG.to_dict()
EXAMPLES = int(os.environ.get("FUSEMESH_FUZZ_EXAMPLES", "0")) or None


def fuzz(examples: int):
    """Settings: `examples` (each test stays well under 30 s on 2 busy cores), reproducible, no database."""
    return settings(max_examples=EXAMPLES or examples, deadline=None, database=None,
                    derandomize=not os.environ.get("FUSEMESH_FUZZ_RANDOM"),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------- JSON mutations
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from([0, -1, 2**64, 10**400, 1e308, "CALIBRATION_CameraLocationD0", [], {}]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)


def mutations(doc: Any):
    """Lists of (path, delete?, new value) edits of `doc`."""
    return st.lists(st.tuples(st.sampled_from(_paths(doc)), st.booleans(), json_values), min_size=1, max_size=3)


def mutate(doc: Any, edits) -> Any:
    doc = copy.deepcopy(doc)
    for path, delete, value in edits:
        if not path:
            doc = value
            continue
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            if delete:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):  # an earlier edit removed or replaced the parent
            pass
    return doc


def byte_edits(data: bytes):
    """Lists of (position, op, byte): op 0 replace, 1 insert, 2 delete."""
    return st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 2), st.integers(0, 255)),
                    min_size=1, max_size=8)


def apply_byte_edits(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for pos, op, value in edits:
        pos = min(pos, max(0, len(buf) - 1))
        if op == 0 and buf:
            buf[pos] = value
        elif op == 1:
            buf.insert(pos, value)
        elif buf:
            del buf[pos]
    return bytes(buf)


modes = st.tuples(st.sampled_from(sorted(DEPTH_MODES)), st.sampled_from(sorted(COLOR_RESOLUTIONS)))


def parse_or_calibration_error(text: Any, depth_mode: str, color_resolution: str):
    """The rig, or None after a CalibrationError; anything else fails the test. A rig must fit the modes."""
    try:
        rig = rig_from_raw_json(text, depth_mode, color_resolution)
    except CalibrationError as e:
        assert str(e) and "\n" not in str(e).strip()
        return None
    assert isinstance(rig, RgbdRig)
    assert rig.depth.size == DEPTH_MODES[depth_mode].output and rig.color.size == COLOR_RESOLUTIONS[color_resolution].output
    assert np.isfinite(rig.depth.K).all() and np.isfinite(rig.depth_to_color.t).all()
    return rig


# ---------------------------------------------------------------------------------------- raw calibration
def test_the_unmutated_calibration_parses():  # the fuzzers' baseline
    rig = parse_or_calibration_error(RAW_TEXT, "NFOV_UNBINNED", "720P")
    assert rig is not None and rig == RgbdRig.from_kinect_raw_json(RAW_TEXT, "NFOV_UNBINNED", "720P")


@fuzz(300)
@given(edits=mutations(RAW), mode=modes)
def test_raw_calibration_json_mutations_raise_only_calibration_error(edits, mode):
    doc = mutate(RAW, edits)
    text = json.dumps(doc)  # Python's json writes NaN / Infinity too: the parser must refuse them
    parse_or_calibration_error(text, *mode)
    parse_or_calibration_error(text.encode() + b"\x00", *mode)  # device flash: bytes with a trailing NUL


@fuzz(300)
@given(edits=byte_edits(RAW_TEXT.encode()), mode=modes)
def test_raw_calibration_byte_mutations_raise_only_calibration_error(edits, mode):
    parse_or_calibration_error(apply_byte_edits(RAW_TEXT.encode(), edits), *mode)


@fuzz(200)
@given(data=st.binary(max_size=256) | st.text(max_size=256))
def test_arbitrary_bytes_or_text_are_a_calibration_error(data):
    with pytest.raises(CalibrationError):
        parse_raw_calibration(data)


def _raw_with(path: tuple, value: Any) -> str:
    return json.dumps(mutate(RAW, [(path, False, value)]))


CAM0 = ("CalibrationInformation", "Cameras", 0)


@pytest.mark.parametrize("text, message", [
    (_raw_with(CAM0 + ("Location",), {"a": 1}), r"Cameras\[0\]\.Location must be a string, got dict"),
    (_raw_with(CAM0 + ("Intrinsics", "ModelType"), ["x"]), r"has lens model \['x'\]"),
    (_raw_with(("CalibrationInformation", "InertialSensors"), 5.0), r"InertialSensors must be a list"),
    (_raw_with(CAM0 + ("Intrinsics", "ModelParameters", 0), 10**400), r"ModelParameters contains a number out of range"),
    (_raw_with(CAM0 + ("MetricRadius",), 10**400), r"MetricRadius must be a number in float32 range"),
    (_raw_with(CAM0 + ("Rt", "Translation", 1), 1e300), r"Translation contains NaN or inf"),
    (b"\xff\xfe{}", r"not UTF-8 text"),
    ("[" * 100_000, r"nested too deeply"),
], ids=["location-dict", "model-type-list", "imu-number", "huge-int", "huge-radius", "float32-overflow",
        "not-utf8", "deep-nesting"])
def test_found_by_fuzzing_raw_calibration(text, message):
    """Each of these escaped as TypeError / AttributeError / OverflowError / UnicodeDecodeError / RecursionError."""
    with pytest.raises(CalibrationError, match=message):
        rig_from_raw_json(text, "NFOV_UNBINNED", "720P")


def test_malformed_optional_metadata_is_ignored():
    raw = parse_raw_calibration(_raw_with(("CalibrationInformation", "Metadata"), [1, 2]))
    assert raw.serial == "" and raw.depth == parse_raw_calibration(RAW_TEXT).depth


# ---------------------------------------------------------------------------------------- folder source
DEPTH = np.tile((1500 + np.arange(320, dtype=np.uint16)), (288, 1))
COLOR = np.full((720, 1280, 3), (40, 90, 160), np.uint8)
IMAGES = {
    "depth": cv2.imencode(".png", DEPTH)[1].tobytes(),
    "color": cv2.imencode(".png", COLOR)[1].tobytes(),
    "color_jpg": cv2.imencode(".jpg", COLOR)[1].tobytes(),
    "small16": cv2.imencode(".png", np.ones((6, 8), np.uint16))[1].tobytes(),
    "depth8": cv2.imencode(".png", np.ones((288, 320), np.uint8))[1].tobytes(),
    "rgb16": cv2.imencode(".png", np.ones((288, 320, 3), np.uint16))[1].tobytes(),
    "truncated": cv2.imencode(".png", DEPTH)[1].tobytes()[:300],
}
name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")
stems = (st.text("0123456789²①٣ ", min_size=1, max_size=4)
         | st.sampled_from(["$(touch pwned)", "a;b", "it's", '"q"', "-1", "..a", " ", "~", "*", "\\"])
         | st.text(name_chars, min_size=1, max_size=12)).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)
image_files = st.lists(st.tuples(stems, st.sampled_from([".png", ".jpg", ".jpeg", ".PNG", ".txt"]),
                                 st.sampled_from(sorted(IMAGES)) | st.binary(max_size=48)), max_size=4)
calibrations = (st.sampled_from(["rig", "raw", "none"]) | st.binary(max_size=48)
                | mutations(RIG_DOC).map(lambda e: json.dumps(mutate(RIG_DOC, e)).encode()))
timestamp_files = (st.none() | st.binary(max_size=48)
                   | st.lists(st.integers(-2**70, 2**70) | st.text("0123456789#x -", max_size=6), max_size=6)
                   .map(lambda v: "\n".join(map(str, v)).encode()))


def write_folder(root: Path, colors, depths, calibration, timestamps) -> Path:
    for sub, items in (("color", colors), ("depth", depths)):
        if items is None:
            continue
        (root / sub).mkdir()
        for stem, ext, content in items:
            (root / sub / f"{stem}{ext}").write_bytes(IMAGES[content] if isinstance(content, str) else content)
    if calibration == "rig":
        RIG.save(root / "calibration.json")
    elif calibration == "raw":
        (root / "calibration.json").write_text(RAW_TEXT)
    elif isinstance(calibration, bytes):
        (root / "calibration.json").write_bytes(calibration)
    if timestamps is not None:
        (root / "timestamps.txt").write_bytes(timestamps)
    return root


def read_or_source_error(root: Path) -> list[RgbdFrame] | None:
    """Every frame of the folder, or None after a SourceError; anything else fails the test. The error must
    be one line apart from the file names it quotes (a name may hold a newline; the CLI prints one line)."""
    try:
        with FolderSource(root) as source:
            n = len(source)
            frames = [source.read() for _ in range(n)]
            assert source.read() is None
    except SourceError as e:
        message = str(e)
        for p in sorted(root.rglob("*"), key=lambda p: -len(str(p))):
            message = message.replace(str(p), "<path>").replace(p.name, "<name>").replace(p.stem, "<stem>")
        assert message and "\n" not in message, str(e)
        return None
    assert [f.frame_id for f in frames] == list(range(n))
    for f in frames:  # statuses and images agree (RgbdFrame checks it) and sizes are the calibration's
        assert isinstance(f, RgbdFrame)
        if f.depth_mm is not None:
            assert f.depth_mm.shape == (f.rig.depth.height, f.rig.depth.width)
        if f.color_bgr is not None:
            assert f.color_bgr.shape == (f.rig.color.height, f.rig.color.width, 3)
    return frames


@fuzz(120)
@given(colors=st.none() | image_files, depths=st.none() | image_files, calibration=calibrations,
       timestamps=timestamp_files)
def test_folder_source_fuzzed_layouts_raise_only_source_error(colors, depths, calibration, timestamps):
    with tempfile.TemporaryDirectory() as tmp:
        read_or_source_error(write_folder(Path(tmp), colors, depths, calibration, timestamps))


@fuzz(150)
@given(edits=mutations(RIG_DOC))
def test_rig_json_mutations_through_the_folder_reader_raise_only_source_error(edits, tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(mutate(RIG_DOC, edits)))
    try:
        rig = load_rig(path, "NFOV_2X2BINNED", "720P")
    except SourceError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
    else:
        assert isinstance(rig, RgbdRig)


@pytest.mark.parametrize("stems, order", [
    (["10", "9", "²"], ["10", "9", "²"]),            # '²'.isdigit() but int('²') fails: text order
    (["١٢", "3", "٣"], ["3", "٣", "١٢"]),             # Arabic-Indic digits are decimal: numeric order
    (["$(touch pwned)", "a b", "it's"], ["$(touch pwned)", "a b", "it's"]),
])
def test_odd_frame_names_are_read_as_given(tmp_path, stems, order):
    root = write_folder(tmp_path, [(s, ".png", "color") for s in stems], [(s, ".png", "depth") for s in stems],
                        "rig", None)
    frames = read_or_source_error(root)
    assert frames is not None and len(frames) == 3
    assert all(np.array_equal(f.depth_mm, DEPTH) and np.array_equal(f.color_bgr, COLOR) for f in frames)
    with FolderSource(root) as source:
        assert source._stems == order
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize("timestamps, message", [
    (b"\xff\xfe1\n2\n", r"timestamps\.txt: not UTF-8 text"),
    (f"1\n{2**70}\n".encode(), r"timestamps\.txt:2: timestamp 1180591620717411303424 is outside 0 \.\. 2\*\*63-1"),
    (b"1\n-5\n", r"timestamps\.txt:2: timestamp -5 is outside"),
], ids=["not-utf8", "beyond-int64", "negative"])
def test_found_by_fuzzing_timestamps(tmp_path, timestamps, message):
    root = write_folder(tmp_path, [(f"{i}", ".png", "color") for i in range(2)], None, "rig", timestamps)
    with pytest.raises(SourceError, match=message):
        FolderSource(root)


@pytest.mark.parametrize("edit, message", [
    ((("depth_to_color", "rotation", 1), [1.0]), r"bad calibration: rig JSON: bad value \(ValueError: "),
    ((("depth_mode",), ["NFOV_2X2BINNED"]), r"bad calibration: rig JSON: bad value \(TypeError: unhashable type"),
    ((("depth", "fx"), {"a": 1}), r"bad calibration: camera fx must be a number"),
    ((("depth", "width"), 10**400), r"bad calibration: rig JSON: bad value \(OverflowError: "),
], ids=["ragged-rotation", "mode-list", "fx-dict", "huge-int"])
def test_found_by_fuzzing_rig_json(tmp_path, edit, message):
    (tmp_path / "calibration.json").write_text(json.dumps(mutate(RIG_DOC, [(edit[0], False, edit[1])])))
    root = write_folder(tmp_path, [("0", ".png", "color")], [("0", ".png", "depth")], "keep", None)
    with pytest.raises(SourceError, match=message):
        FolderSource(root)


# found by fuzzing: a ragged rotation, a list depth_mode, an int beyond float64 escaped as ValueError /
# TypeError / OverflowError before calibration/rig.py wrapped them
@pytest.mark.parametrize("edit", [(("depth_to_color", "rotation", 1), [1.0]), (("depth_mode",), ["NFOV_2X2BINNED"]),
                                  (("depth", "fx"), 10**400)], ids=["ragged-rotation", "mode-list", "huge-int"])
def test_rig_json_errors_are_calibration_errors(edit):
    with pytest.raises(CalibrationError):
        RgbdRig.from_dict(mutate(RIG_DOC, [(edit[0], False, edit[1])]))
