"""training/curves.py: a PNG from a run's scalars.csv; clear errors for folders that are not runs."""

from __future__ import annotations

import csv

import cv2
import pytest

from training.curves import main, plot_curves


def _run(tmp_path, names=("loss", "loss_2d")):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    with open(run / "scalars.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "name", "value"])
        for step in range(20, 1020, 20):
            for n in names:
                w.writerow([step, n, 1000.0 / step])
    return run


def test_one_panel_per_logged_scalar(tmp_path):
    two = plot_curves(_run(tmp_path), tmp_path / "two.png")
    img = cv2.imread(str(two))
    assert img is not None and img.shape[1] > 600
    (tmp_path / "run" / "scalars.csv").unlink()
    one = plot_curves(_run(tmp_path / "b", names=("loss",)), tmp_path / "one.png")
    assert cv2.imread(str(one)).shape[1] < 0.6 * img.shape[1]   # a single panel is narrower


def test_errors_name_the_problem(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2 and "no scalars.csv" in capsys.readouterr().err
    run = _run(tmp_path, names=("other",))
    with pytest.raises(ValueError, match="none of loss"):
        plot_curves(run, tmp_path / "x.png", names=("loss",))
