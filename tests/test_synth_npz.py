"""training.synth.npz: the shards' .npz writer (ISA-L deflate, zip container written by hand)."""
import io
import sys
import zipfile

import numpy as np
import pytest

from training.synth.npz import deflate_backend, write_npz


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    return {
        "rgb": rgb,
        "depth_mm": (rng.integers(500, 4000, (4, 32, 32)) // 7 * 7).astype(np.uint16),
        "mask": rng.random((4, 32, 32)) < 0.3,
        "dist": np.array([[0.1, np.nan, -2.5]], np.float32),
        "index": np.int64(7),                                    # 0-d
        "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,   # not C-contiguous
        "empty": np.zeros((0, 3), np.int16),
        "bgr": rgb[..., ::-1],                                   # negative strides
    }


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def test_numpy_reads_back_every_array_exactly_and_the_zip_checks(tmp_path):
    arrays = _arrays()
    write_npz(tmp_path / "a.npz", arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert sorted(data.files) == sorted(arrays)
        for name, a in arrays.items():
            assert _equal(data[name], np.asarray(a)), name
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert zf.testzip() is None                                  # every member's CRC
        infos = zf.infolist()
        assert [i.filename for i in infos] == [f"{n}.npy" for n in sorted(arrays)]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED and i.date_time == (1980, 1, 1, 0, 0, 0) for i in infos)
        rgb = zf.getinfo("rgb.npy")
        assert rgb.compress_size < rgb.file_size                     # actually compressed
    assert not (tmp_path / "a.npz.tmp").exists()


def test_same_arrays_give_the_same_bytes(tmp_path):
    write_npz(tmp_path / "a.npz", _arrays())
    write_npz(tmp_path / "b.npz", dict(reversed(list(_arrays().items()))))   # member order: sorted by name
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_without_isal_the_file_is_byte_identical_to_the_stdlib_writer(tmp_path, monkeypatch):
    arrays = _arrays()
    monkeypatch.setitem(sys.modules, "isal", None)                  # `from isal import ...` -> ImportError
    assert deflate_backend() == "zlib"
    write_npz(tmp_path / "ours.npz", arrays)
    with zipfile.ZipFile(tmp_path / "stdlib.npz", "w") as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    assert (tmp_path / "ours.npz").read_bytes() == (tmp_path / "stdlib.npz").read_bytes()


def test_isal_is_the_backend_when_installed():
    pytest.importorskip("isal")
    assert deflate_backend() == "isal"


def test_object_arrays_are_refused_and_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match="object arrays"):
        write_npz(tmp_path / "a.npz", {"x": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []
