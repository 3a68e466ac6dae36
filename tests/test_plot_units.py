"""`--plot`'s figure (report/plot.py) for the run built by hand in tests/handmade_run.py: its size, axes, labels,
colours and the order of the bars, read from the SVG with text kept as text (for its mutation run)."""

from __future__ import annotations

import re
from dataclasses import replace

import matplotlib
import pytest
from handmade_run import ODD, handmade_run

from vramplan.errors import UsageError
from vramplan.report.plot import write_plot


SVG_ODD = ODD.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _svg(run, path) -> str:
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "vramplan"}):
        write_plot(run, str(path))
    return path.read_text(encoding="utf-8")


def _texts(svg: str) -> list[str]:
    return re.findall(r"<text [^>]*>([^<]*)</text>", svg)


def test_bars_and_both_lines(tmp_path):
    svg = _svg(handmade_run(), tmp_path / "charts.SVG")  # the suffix in any case
    # 11 inches wide; 3 + 0.35 x 3 bars + 4 x 2 line charts = 12.05 inches high, at 72 pt an inch.
    assert 'width="792pt" height="867.6pt"' in svg
    texts = _texts(svg)
    for label in ("Peak memory by category", "GiB", "input size", "batch size", "224px", "512x256px"):
        assert label in texts
    assert texts.count("peak on the card (GiB)") == 2
    legend = [t for t in texts if t in ("Parameter", "Buffer", "Activation", "Temp", "allocator cache", "CUDA context")]
    assert legend == ["Parameter", "Activation", "Temp", "allocator cache", "CUDA context"]  # used categories only
    assert texts.count("org/a") == 3 and texts.count(SVG_ODD) == 2  # a bar and two line legends; a bar and one line
    assert "3.0" in texts and "4.0" in texts and "4.5" not in texts  # bars to 3 GiB, lines to 4 GiB
    for colour in ("#4e79a7", "#e15759", "#b07aa1", "#9c755f", "#bab0ac"):
        assert f"fill: {colour}" in svg
    assert "fill: #76b7b2" not in svg  # buffers are 0 in the first case of every model: no bar part
    assert "stroke: #4e79a7" in svg  # the first series' colour
    y = {name: float(re.search(rf'y="([0-9.]+)"[^>]*>{re.escape(name)}</text>', svg)[1])
         for name in ("org/a", "org/w")}
    assert y["org/a"] < y["org/w"]  # the first model at the top


def test_bars_only(tmp_path):
    run = handmade_run()
    single = replace(run, models=tuple(replace(m, inference=m.inference[:1]) for m in run.models))
    svg = _svg(single, tmp_path / "bars.svg")
    assert 'width="792pt" height="291.6pt"' in svg  # 3 + 0.35 x 3 = 4.05 inches
    assert "input size" not in _texts(svg) and "peak on the card (GiB)" not in _texts(svg)
    assert SVG_ODD in svg


def test_png_and_refusals(tmp_path):
    write_plot(handmade_run(), str(tmp_path / "charts.png"))
    assert (tmp_path / "charts.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(UsageError) as exc:
        write_plot(handmade_run(), str(tmp_path / "charts.pdf"))
    assert exc.value.args[0] == f"--plot `{tmp_path / 'charts.pdf'}`: give a .png or .svg file"
    with pytest.raises(UsageError) as exc:
        write_plot(handmade_run(), str(tmp_path / "missing" / "charts.svg"))
    assert exc.value.args[0] == f"Cannot write `{tmp_path / 'missing' / 'charts.svg'}`: No such file or directory"
