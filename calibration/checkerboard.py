"""Checkerboard calibration for RGB-D cameras that are not Kinects (Kinects carry a factory calibration).

Give matching image pairs of a checkerboard seen by the IR/depth camera and the color camera (same
moment, same order). Each camera is calibrated (Brown-Conrady k1 k2 p1 p2 k3; `--rational` adds
k4..k6, which needs many well-spread views), then the depth -> color transform with `stereoCalibrate`
(intrinsics fixed). Views where only one camera found the board still help that camera's intrinsics.
Each camera's metric radius (calibrated field of view) is set to 1.2x the farthest corner seen, so
the distortion polynomial is never trusted far outside the data. The result is written as our rig
JSON and/or an OpenCV YAML; with only color images, the color camera alone is written (OpenCV YAML).

    python -m calibration.checkerboard --ir 'shots/ir_*.png' --color 'shots/color_*.png' \
        --pattern 9x6 --square-mm 25 --out rig.json --opencv-yaml rig.yaml

Existing output files are not replaced without --overwrite (exit code 2, one line naming the file,
before any image is read).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from calibration.errors import CalibrationError
from calibration.intrinsics import CameraIntrinsics
from calibration.rig import Extrinsics, RgbdRig

_TERM = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 100, 1e-9)


def to_gray8(image: np.ndarray) -> np.ndarray:
    """Any camera image -> uint8 gray: BGR(A) converted, 16-bit IR stretched between its 1st and 99th
    percentile."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    if img.dtype == np.uint8:
        return img
    lo, hi = np.percentile(img, [1, 99])
    scaled = (img.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1.0))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def find_corners(image: np.ndarray, pattern: tuple[int, int]) -> Optional[np.ndarray]:
    """Inner corners (cols * rows, 2) float32 px, sub-pixel refined, row by row starting at the corner
    nearest the image's top-left (so two cameras facing the same board agree); None if not found."""
    gray = to_gray8(image)
    found, corners = cv2.findChessboardCorners(
        gray, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found:
        return None
    corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), _TERM).reshape(-1, 2)
    if corners[0].sum() > corners[-1].sum():  # canonical order: first corner top-left
        corners = corners[::-1].copy()
    return corners.astype(np.float32)


def board_points(pattern: tuple[int, int], square_m: float) -> np.ndarray:
    """(cols * rows, 3) float32 board-frame corners, metres, in `find_corners` order."""
    cols, rows = pattern
    grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2)
    return np.concatenate([grid * square_m, np.zeros((len(grid), 1))], axis=1).astype(np.float32)


@dataclass
class CameraFit:
    intrinsics: CameraIntrinsics
    rms_px: float
    views: int


def calibrate_camera(corner_sets: Sequence[np.ndarray], pattern: tuple[int, int], square_m: float,
                     image_size: tuple[int, int], rational: bool = False) -> CameraFit:
    """Intrinsics from >= 3 views of detected corners; image_size = (width, height) px."""
    views = [c for c in corner_sets if c is not None]
    if len(views) < 3:
        raise CalibrationError(f"need the board in at least 3 images, found it in {len(views)}")
    obj = [board_points(pattern, square_m)] * len(views)
    flags = cv2.CALIB_RATIONAL_MODEL if rational else 0
    rms, K, dist, _, _ = cv2.calibrateCamera(obj, [v.reshape(-1, 1, 2) for v in views], image_size, None, None,
                                             flags=flags, criteria=_TERM)
    d = np.concatenate([dist.reshape(-1), np.zeros(8)])[:8]
    cam = CameraIntrinsics(width=image_size[0], height=image_size[1], fx=K[0, 0], fy=K[1, 1], cx=K[0, 2],
                           cy=K[1, 2], k1=d[0], k2=d[1], p1=d[2], p2=d[3], k3=d[4], k4=d[5], k5=d[6], k6=d[7])
    # the distortion polynomial is only trustworthy as far out as the board was seen: limit the
    # calibrated field of view (metric radius) to 1.2x the largest normalised radius of any corner
    xy, ok = cam.pixels_to_normalized(np.concatenate(views))
    if not ok.all():
        raise CalibrationError("the fitted distortion model cannot be inverted at some detected corners; "
                               "try the default 5-coefficient model or more varied board poses")
    radius = float(np.sqrt((xy ** 2).sum(axis=1)).max()) * 1.2
    cam = dataclasses.replace(cam, metric_radius=radius)
    return CameraFit(cam, float(rms), len(views))


@dataclass
class RigFit:
    rig: RgbdRig
    depth_rms_px: float
    color_rms_px: float
    stereo_rms_px: float
    pairs: int


def calibrate_rig(depth_corners: Sequence[Optional[np.ndarray]], color_corners: Sequence[Optional[np.ndarray]],
                  pattern: tuple[int, int], square_m: float, depth_size: tuple[int, int],
                  color_size: tuple[int, int], rational: bool = False) -> RigFit:
    """Both cameras' intrinsics, then depth -> color extrinsics from the views where both saw the board."""
    if len(depth_corners) != len(color_corners):
        raise CalibrationError(f"{len(depth_corners)} depth/IR views but {len(color_corners)} color views; "
                               "images must come in pairs")
    depth_fit = calibrate_camera(depth_corners, pattern, square_m, depth_size, rational)
    color_fit = calibrate_camera(color_corners, pattern, square_m, color_size, rational)
    pairs = [(d, c) for d, c in zip(depth_corners, color_corners) if d is not None and c is not None]
    if len(pairs) < 3:
        raise CalibrationError(f"need at least 3 image pairs where both cameras see the board, got {len(pairs)}")
    obj = [board_points(pattern, square_m)] * len(pairs)
    dcam, ccam = depth_fit.intrinsics, color_fit.intrinsics
    rms, _, _, _, _, R, T, _, _ = cv2.stereoCalibrate(
        obj, [d.reshape(-1, 1, 2) for d, _ in pairs], [c.reshape(-1, 1, 2) for _, c in pairs],
        dcam.K, dcam.opencv_dist_coeffs(), ccam.K, ccam.opencv_dist_coeffs(), depth_size,
        flags=cv2.CALIB_FIX_INTRINSIC | (cv2.CALIB_RATIONAL_MODEL if rational else 0), criteria=_TERM)
    rig = RgbdRig(depth=dcam, color=ccam, depth_to_color=Extrinsics(R, T.reshape(3)))
    return RigFit(rig, depth_fit.rms_px, color_fit.rms_px, float(rms), len(pairs))


def _parse_pattern(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"pattern must look like 9x6 (inner corners), got {text!r}") from exc
    if cols < 2 or rows < 2:
        raise argparse.ArgumentTypeError(f"pattern needs at least 2x2 inner corners, got {text!r}")
    return cols, rows


def _images(pattern: str) -> list[Path]:
    paths = sorted(Path(p) for p in glob.glob(pattern))
    if not paths:
        raise CalibrationError(f"no images match {pattern!r}")
    return paths


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CalibrationError(f"cannot read image {path}")
    return img


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration.checkerboard",
                                description="Calibrate an RGB-D camera (not a Kinect) from checkerboard images.")
    p.add_argument("--color", required=True, help="glob of color images (sorted; pairs with --ir)")
    p.add_argument("--ir", help="glob of IR / depth-camera images of the same shots (8 or 16 bit)")
    p.add_argument("--pattern", type=_parse_pattern, required=True, help="inner corners, COLSxROWS, e.g. 9x6")
    p.add_argument("--square-mm", type=float, required=True, help="checker square side in millimetres")
    p.add_argument("--rational", action="store_true",
                   help="OpenCV's rational 8-coefficient model (needs many well-spread views) instead of the "
                        "5-coefficient Brown-Conrady k1 k2 p1 p2 k3")
    p.add_argument("--out", type=Path, help="write our rig JSON here (needs --ir)")
    p.add_argument("--opencv-yaml", type=Path, help="write an OpenCV YAML (rig with --ir, else the color camera)")
    p.add_argument("--overwrite", action="store_true", help="replace --out / --opencv-yaml if they exist")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.square_mm <= 0 or not math.isfinite(args.square_mm):
        raise SystemExit("error: --square-mm must be a positive number")
    if args.out is None and args.opencv_yaml is None:
        raise SystemExit("error: give --out and/or --opencv-yaml")
    if args.out is not None and args.ir is None:
        raise SystemExit("error: --out writes a rig and needs --ir images too")
    if args.out is not None and args.opencv_yaml is not None and args.out.resolve() == args.opencv_yaml.resolve():
        raise SystemExit("error: --out and --opencv-yaml name the same file")
    existing = [p for p in (args.out, args.opencv_yaml) if p is not None and p.exists()]
    if existing and not args.overwrite:  # checked before the (slow) calibration, not after it
        print(f"error: {existing[0]}: already exists (pass --overwrite to replace)", file=sys.stderr)
        return 2
    from calibration.opencv_io import save_opencv

    square_m = args.square_mm / 1000.0
    try:
        color_paths = _images(args.color)
        color_imgs = [_read(p) for p in color_paths]
        color_corners = [find_corners(img, args.pattern) for img in color_imgs]
        color_size = (color_imgs[0].shape[1], color_imgs[0].shape[0])
        print(f"color: board found in {sum(c is not None for c in color_corners)}/{len(color_paths)} images")
        if args.ir is None:
            fit = calibrate_camera(color_corners, args.pattern, square_m, color_size, args.rational)
            print(f"color: rms {fit.rms_px:.3f} px over {fit.views} views, fx {fit.intrinsics.fx:.2f} px")
            save_opencv(args.opencv_yaml, fit.intrinsics)
            print(f"wrote {args.opencv_yaml}")
            return 0
        ir_paths = _images(args.ir)
        ir_imgs = [_read(p) for p in ir_paths]
        ir_corners = [find_corners(img, args.pattern) for img in ir_imgs]
        print(f"ir:    board found in {sum(c is not None for c in ir_corners)}/{len(ir_paths)} images")
        fit = calibrate_rig(ir_corners, color_corners, args.pattern, square_m,
                            (ir_imgs[0].shape[1], ir_imgs[0].shape[0]), color_size, args.rational)
    except CalibrationError as exc:
        raise SystemExit(f"error: {exc}") from exc
    t = fit.rig.depth_to_color.t
    print(f"rms px: depth {fit.depth_rms_px:.3f}, color {fit.color_rms_px:.3f}, stereo {fit.stereo_rms_px:.3f} "
          f"({fit.pairs} pairs); baseline {np.linalg.norm(t) * 1000:.1f} mm")
    if args.out is not None:
        fit.rig.save(args.out)
        print(f"wrote {args.out}")
    if args.opencv_yaml is not None:
        save_opencv(args.opencv_yaml, fit.rig)
        print(f"wrote {args.opencv_yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
