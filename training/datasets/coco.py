"""COCO person-keypoints annotations (`person_keypoints_{train,val}2017.json`): a typed reader.

JSON layout read here:
- `images`: [{id, file_name, width, height, ...}]
- `annotations`: [{id, image_id, category_id, keypoints: [x1, y1, v1, ..., x17, y17, v17], num_keypoints,
  bbox: [x, y, w, h], area, iscrowd, ...}]
- `categories`: [{id, name: "person", keypoints: 17 names, skeleton: [[a, b], ...] 1-based}]
Keypoints are in `joint_sets.COCO_JOINT_NAMES` order (left/right = the subject's own side). Coordinates are
pixels in the image, x right, y down, origin at the top-left image corner; stored as written (COCO's labels
are mostly integers; frameworks differ on adding 0.5 to reach pixel-centre coordinates). v = 0 not labelled
(x = y = 0), 1 labelled but not visible, 2 labelled and visible; `num_keypoints` = count of v > 0.
Only annotations of the "person" category are read (crowd regions included, flagged by `iscrowd`).
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets.joint_sets import COCO_JOINT_NAMES, DatasetFormatError

__all__ = ["CocoImage", "CocoPerson", "CocoKeypoints", "read_coco_keypoints"]


@dataclass(frozen=True)
class CocoImage:
    """One image: id, file_name, width/height in pixels, path = image_dir / file_name (None without image_dir)."""

    id: int
    file_name: str
    width: int
    height: int
    path: Path | None


@dataclass(frozen=True)
class CocoPerson:
    """One person annotation.

    keypoints: (17, 2) float64 pixels (x, y); visibility: (17,) int 0/1/2; bbox: (4,) x, y, w, h pixels.
    """

    id: int
    image_id: int
    keypoints: np.ndarray = field(repr=False)
    visibility: np.ndarray = field(repr=False)
    bbox: np.ndarray = field(repr=False)
    num_keypoints: int
    area: float
    iscrowd: bool


@dataclass
class CocoKeypoints:
    """A COCO keypoints file: images by id, people in file order, keypoint names and 0-based skeleton edges (E, 2)."""

    images: dict[int, CocoImage]
    people: list[CocoPerson]
    keypoint_names: tuple[str, ...]
    skeleton: np.ndarray
    source: str
    _by_image: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        by_image: dict[int, list[int]] = defaultdict(list)
        for i, person in enumerate(self.people):
            by_image[person.image_id].append(i)
        self._by_image = dict(by_image)

    def people_in(self, image_id: int) -> list[CocoPerson]:
        """People annotated in image `image_id` (file order); [] if none."""
        return [self.people[i] for i in self._by_image.get(image_id, [])]


def _require(obj: dict[str, Any], key: str, path: Path, where: str) -> Any:
    if key not in obj:
        raise DatasetFormatError(path, f"{where} has no {key!r} field")
    return obj[key]


def _int(obj: dict[str, Any], key: str, path: Path, where: str) -> int:
    value = _require(obj, key, path, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise DatasetFormatError(path, f"{where}: {key!r} must be an integer, got {value!r}")
    return int(value)


def _person_category(categories: Any, path: Path) -> tuple[int, tuple[str, ...], np.ndarray]:
    if not isinstance(categories, list):
        raise DatasetFormatError(path, "'categories' must be a list")
    for i, cat in enumerate(categories):
        if isinstance(cat, dict) and cat.get("name") == "person":
            where = f"categories[{i}] (person)"
            names = tuple(_require(cat, "keypoints", path, where))
            if names != COCO_JOINT_NAMES:
                raise DatasetFormatError(
                    path, f"{where}: keypoint names {names} differ from COCO's 17 {COCO_JOINT_NAMES}")
            try:
                skeleton = np.asarray(_require(cat, "skeleton", path, where), dtype=np.int64)
            except (TypeError, ValueError):
                raise DatasetFormatError(path, f"{where}: skeleton must be a list of [a, b] integer pairs") from None
            if skeleton.ndim != 2 or skeleton.shape[1] != 2 or skeleton.min() < 1 or skeleton.max() > 17:
                raise DatasetFormatError(path, f"{where}: skeleton must be pairs of 1-based keypoint numbers 1..17")
            skeleton = skeleton - 1
            skeleton.setflags(write=False)
            return _int(cat, "id", path, where), names, skeleton
    raise DatasetFormatError(path, "no category named 'person' in 'categories'")


def read_coco_keypoints(path: str | Path, image_dir: str | Path | None = None) -> CocoKeypoints:
    """Read a COCO person-keypoints JSON file (see module docstring).

    image_dir: folder of the images (e.g. `val2017/`); fills `CocoImage.path` (existence not checked).
    Raises DatasetFormatError naming the file and the offending entry (JSON syntax errors: line and column)
    for a missing field, keypoints that are not 17 x (x, y, v), v outside {0, 1, 2}, num_keypoints that does
    not count v > 0, a malformed bbox, a duplicate id or an annotation of an unknown image.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    except UnicodeDecodeError as e:
        raise DatasetFormatError(path, f"not a text file (undecodable byte at offset {e.start})") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "top level must be a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        _require(data, key, path, "the top-level object")
    person_cat, names, skeleton = _person_category(data["categories"], path)

    images: dict[int, CocoImage] = {}
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            raise DatasetFormatError(path, f"{where} is not an object")
        image_id = _int(img, "id", path, where)
        if image_id in images:
            raise DatasetFormatError(path, f"{where}: duplicate image id {image_id}")
        file_name = str(_require(img, "file_name", path, where))
        images[image_id] = CocoImage(
            id=image_id, file_name=file_name, width=_int(img, "width", path, where),
            height=_int(img, "height", path, where),
            path=Path(image_dir) / file_name if image_dir is not None else None,
        )

    people: list[CocoPerson] = []
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DatasetFormatError(path, f"annotations[{i}] is not an object")
        if ann.get("category_id") != person_cat:
            continue
        where = f"annotations[{i}] (id={ann.get('id')})"
        ann_id = _int(ann, "id", path, where)
        if ann_id in seen:
            raise DatasetFormatError(path, f"{where}: duplicate annotation id")
        seen.add(ann_id)
        image_id = _int(ann, "image_id", path, where)
        if image_id not in images:
            raise DatasetFormatError(path, f"{where}: image_id {image_id} is not in 'images'")
        try:
            kp = np.asarray(_require(ann, "keypoints", path, where), dtype=np.float64)
            bbox = np.asarray(_require(ann, "bbox", path, where), dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetFormatError(path, f"{where}: keypoints and bbox must be lists of numbers") from None
        if kp.shape != (51,):
            raise DatasetFormatError(path, f"{where}: keypoints must be 51 numbers (17 x [x, y, v]), got {kp.size}")
        kp = kp.reshape(17, 3)
        if not np.all(np.isfinite(kp)) or not np.all(np.isin(kp[:, 2], (0, 1, 2))):
            raise DatasetFormatError(path, f"{where}: visibility flags must be 0, 1 or 2 and values finite")
        vis = kp[:, 2].astype(np.int64)
        num = _int(ann, "num_keypoints", path, where)
        if num != int(np.count_nonzero(vis)):
            raise DatasetFormatError(
                path, f"{where}: num_keypoints is {num} but {np.count_nonzero(vis)} keypoints have v > 0")
        if bbox.shape != (4,) or not np.all(np.isfinite(bbox)) or bbox[2] < 0 or bbox[3] < 0:
            raise DatasetFormatError(path, f"{where}: bbox must be [x, y, width, height] with width, height >= 0")
        people.append(CocoPerson(
            id=ann_id, image_id=image_id, keypoints=kp[:, :2].copy(), visibility=vis, bbox=bbox,
            num_keypoints=num, area=float(ann.get("area", 0.0)), iscrowd=bool(ann.get("iscrowd", 0)),
        ))
    return CocoKeypoints(images=images, people=people, keypoint_names=names, skeleton=skeleton, source=str(path))
