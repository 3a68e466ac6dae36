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


@pytest.fixture
def drawn(monkeypatch):
    """The figures write_plot saves (matplotlib's own savefig, called through)."""
    import matplotlib.figure

    figures, save = [], matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


def test_the_figure_in_gib_stacked_and_labelled(tmp_path, drawn):
    write_plot(handmade_run(), str(tmp_path / "charts.png"))
    (fig,) = drawn
    assert list(fig.get_size_inches()) == [11, 12.05] and len(fig.axes) == 3
    bars, by_size, by_batch = fig.axes
    assert bars.get_gridspec().get_height_ratios() == [2, 4, 4]  # max(2, 0.35 x 3 bars), then 4 per line chart
    # org/a's bar, stacked left to right in GiB: 100, 50, 10, 2 and 500 MiB.
    first = [(round(p.get_x(), 4), round(p.get_width(), 4), p.get_facecolor()) for p in bars.patches
             if p.get_y() == -0.4]
    assert [(x, w) for x, w, _ in first] == [(0.0, 0.0977), (0.0977, 0.0488), (0.1465, 0.0098), (0.1562, 0.002),
                                             (0.1582, 0.4883)]
    assert [matplotlib.colors.to_hex(c) for *_, c in first] == ["#4e79a7", "#e15759", "#b07aa1", "#9c755f", "#bab0ac"]
    assert max(p.get_width() for p in bars.patches) == 3.0  # the odd model's 3 GiB of parameters
    assert bars.get_ylim()[0] > bars.get_ylim()[1]  # inverted: the first model on top
    assert [t.get_text() for t in bars.get_yticklabels()] == ["org/a", ODD, "org/w"]
    assert (bars.get_title(), bars.get_xlabel()) == ("Peak memory by category", "GiB")
    assert [(line.get_label(), [round(v, 4) for v in line.get_ydata()], line.get_marker(), line.get_color())
            for line in by_size.get_lines()] == [("org/a", [0.6465, 0.8916, 1.1816], "o", "#4e79a7"),
                                                 (ODD, [3.0, 4.0], "o", "#f28e2b")]
    assert list(by_batch.get_lines()[0].get_xdata()) == ["1", "2"]
    for ax, xlabel in zip(fig.axes, ("GiB", "input size", "batch size")):
        legend = ax.get_legend()
        assert ax.get_xlabel() == xlabel and legend._loc == 2  # upper left
        assert legend.get_texts()[0].get_fontsize() == 7
        assert tuple(legend.get_bbox_to_anchor()._bbox.bounds[:2]) == (1.01, 1.0)  # beside the plot
    assert by_size.get_ylabel() == by_batch.get_ylabel() == "peak on the card (GiB)"
