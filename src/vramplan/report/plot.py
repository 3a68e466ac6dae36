"""`--plot FILE.png|FILE.svg`: the HTML report's charts drawn by matplotlib (imported here only)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..results import RunResult
from .charts import COLOURS, SERIES_COLOURS, breakdowns, by_batch, by_input_size, used_categories

GiB = 1024**3


def write_plot(run: RunResult, path: str) -> None:
    """Draw the breakdown bars and the size/batch lines into one figure at `path` (.png or .svg)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise UsageError(f"--plot `{path}`: give a .png or .svg file")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = breakdowns(run)
    lines = [(t, s) for t, s in (("input size", by_input_size(run)), ("batch size", by_batch(run))) if s]
    rows = 1 + len(lines)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 3 + 0.35 * len(bars) + 4 * len(lines)), squeeze=False,
                             gridspec_kw={"height_ratios": [max(2, 0.35 * len(bars))] + [4] * len(lines)})
    _draw_bars(axes[0][0], bars)
    for ax, (name, series) in zip((a[0] for a in axes[1:]), lines):
        for i, s in enumerate(series):
            ax.plot([x for x, _ in s.points], [v / GiB for _, v in s.points], marker="o",
                    color=SERIES_COLOURS[i % len(SERIES_COLOURS)], label=s.model)
        ax.set_xlabel(name)
        ax.set_ylabel("peak on the card (GiB)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    try:
        fig.savefig(path, format=suffix[1:])
    except OSError as exc:
        raise UsageError(f"Cannot write `{path}`: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)


def _draw_bars(ax, bars) -> None:
    names = [b.model for b in bars]
    left = [0.0] * len(bars)
    for cat in used_categories(bars):
        values = [dict(b.parts)[cat] / GiB for b in bars]
        ax.barh(names, values, left=left, color=COLOURS[cat], label=cat)
        left = [a + b for a, b in zip(left, values)]
    ax.invert_yaxis()
    ax.set_xlabel("GiB")
    ax.set_title("Peak memory by category")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
