"""The alignment benchmark runs end to end and its three implementations agree (timings are not tested)."""
from __future__ import annotations

import re

from calibration.bench import main


def test_bench_reports_agreeing_implementations_and_a_ratio(capsys):
    assert main(["--frames", "3", "--naive-frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "fit error <= 0.0" in out and "0 pixels on the exact path" in out
    masks = [float(v) for v in re.findall(r"valid masks equal on ([0-9.]+)%", out)]
    assert masks == [100.0, 100.0]
    colors = float(re.search(r"colors within 2 levels on ([0-9.]+)%", out).group(1))
    assert colors > 99.9
    assert re.search(r"ratio naive/fast +[0-9.]+x", out)
