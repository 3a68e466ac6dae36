"""HTML: one self-contained page (inline CSS and SVG, no script, nothing fetched), every input string escaped.

The page holds the summary table, a stacked bar per model of its peak by category, the peak
against input size and against batch when the sweep has several, and the fit matrix coloured by
the largest batch. Charts are hand-written SVG, so the page needs nothing but a browser.
"""

from __future__ import annotations

from html import escape

from ..results import RunResult
from .cells import format_bytes
from .charts import COLOURS, SERIES_COLOURS, Breakdown, Series, breakdowns, by_batch, by_input_size, used_categories
from .fit_text import cell_for, cell_text, fit_gpus, fit_sizes, fit_title, precision_rows, size_title
from .summary import inference_legend, report_title, summary_cells, summary_header

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:1em;margin:16px 0 4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3;white-space:nowrap}td{white-space:nowrap}td:first-child,th:first-child{text-align:left}
.meta{color:#666;font-size:13px}.note{color:#555;font-size:12px;max-width:1000px}
.fit-none{background:#f8d7da}.fit-few{background:#fff3cd}.fit-many{background:#d4edda}.fit-error{background:#e2e3e5}
svg{display:block;margin:8px 0}svg text{font-family:system-ui,sans-serif}
"""


def render_html(run: RunResult, family_title: str | None = None) -> str:
    """The whole page."""
    title = report_title(family_title)
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {escape(run.generated)} &middot; {len(run.models)} models</p>',
        _summary(run),
        _breakdown_section(breakdowns(run)),
        _lines_section("Peak on the card against input size", "input size", by_input_size(run)),
        _lines_section("Peak on the card against batch size", "batch size", by_batch(run)),
        _cases_section(run),
        _multigpu_section(run),
        _fit_section(run),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")


def _table(header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None, cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            klass = classes[i][j] if classes else ""
            cells.append(f'<td class="{klass}">{escape(cell)}</td>' if klass else f"<td>{escape(cell)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>' + "".join(lines) + "</tbody></table>"


def _summary(run: RunResult) -> str:
    rows = [summary_cells(model, run)[:-1] + ["ok" if model.ok else "error"] for model in run.models]
    legend = inference_legend(run)
    note = f'<p class="note">{escape(legend)}</p>' if legend else ""
    errors = "".join(f"<li><b>{escape(m.model)}</b>: {escape(m.error or '')}</li>" for m in run.models if not m.ok)
    errors = f'<ul class="errors note">{errors}</ul>' if errors else ""
    return ('<h2 id="summary">Summary (Total Size to load weights)</h2>'
            + _table(summary_header(run), rows, cls="summary") + note + errors)


def _breakdown_section(bars: list[Breakdown]) -> str:
    if not bars:
        return ""
    cats = used_categories(bars)
    label_w, bar_w, row_h, top = 360, 560, 26, 30
    scale = bar_w / max(1, max(b.total for b in bars))
    parts = []
    for i, bar in enumerate(bars):
        y = top + i * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" font-size="11">{escape(bar.model)}</text>')
        x = label_w
        for cat, value in bar.parts:
            if value and cat in cats:
                w = value * scale
                parts.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{COLOURS[cat]}">'
                             f"<title>{escape(f'{bar.model}: {cat} {format_bytes(value)} ({bar.caption})')}</title></rect>")
                x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}" font-size="11">{escape(format_bytes(bar.total))}</text>')
    items = [(c, COLOURS[c]) for c in cats]
    width = label_w + bar_w + 110
    legend = _legend(items, min(label_w, width - _legend_width(items)), 14)  # all eight categories of training fit
    height = top + len(bars) * row_h + 10
    svg = (f'<svg class="chart breakdown" role="img" aria-label="Peak memory by category" width="{width}" '
           f'height="{height}" xmlns="http://www.w3.org/2000/svg">{legend}{"".join(parts)}</svg>')
    captions = sorted({b.caption for b in bars})
    return ('<h2 id="breakdown">Peak memory by category</h2>' + svg
            + f'<p class="note">Each bar: {escape("; ".join(captions))}. Categories as torch\'s MemTracker names them; '
            "allocator cache and CUDA context are what the card holds beyond the tensors.</p>")


def _legend(items: list[tuple[str, str]], x0: int, y: int) -> str:
    out, x = [], x0
    for name, colour in items:
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour}"></rect>'
                   f'<text x="{x + 16}" y="{y}" font-size="11">{escape(name)}</text>')
        x += _legend_width([(name, colour)])
    return "".join(out)


def _legend_width(items: list[tuple[str, str]]) -> int:
    return sum(26 + 7 * len(name) for name, _ in items)


def _lines_section(title: str, x_name: str, series: list[Series]) -> str:
    if not series:
        return ""
    width, height, left, right, top, bottom = 1000, 380, 80, 330, 20, 40
    xs = list(dict.fromkeys(x for s in series for x, _ in s.points))
    peak = max(v for s in series for _, v in s.points) or 1
    plot_w, plot_h = width - left - right, height - top - bottom
    px = {x: left + (plot_w * i / max(1, len(xs) - 1)) for i, x in enumerate(xs)}
    py = lambda v: top + plot_h - plot_h * v / peak  # noqa: E731
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"></line>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"></line>']
    for k in range(5):
        v = peak * k / 4
        parts.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end" font-size="10">{escape(format_bytes(v))}</text>')
    for x, pos in px.items():
        parts.append(f'<text x="{pos:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="10">{escape(x)}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" font-size="11">{escape(x_name)}</text>')
    for i, s in enumerate(series):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        pts = " ".join(f"{px[x]:.1f},{py(v):.1f}" for x, v in s.points)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2">'
                     f"<title>{escape(s.model)}</title></polyline>")
        ly = top + 12 + i * 16
        parts.append(f'<rect x="{width - right + 12}" y="{ly - 9}" width="10" height="10" fill="{colour}"></rect>'
                     f'<text x="{width - right + 26}" y="{ly}" font-size="10">{escape(s.model)}</text>')
    height = max(height, top + 20 + len(series) * 16)
    cls = "by-size" if x_name == "input size" else "by-batch"
    return (f'<h2 id="{cls}">{escape(title)}</h2><svg class="chart {cls}" role="img" aria-label="{escape(title)}" '
            f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def _cases_section(run: RunResult) -> str:
    """Every simulated case of every model by category, as the text report's tables have them."""
    from .inference import HEADERS as INFERENCE_HEADERS
    from .inference import inference_rows, inference_title
    from .training import HEADERS as TRAINING_HEADERS
    from .training import training_legend, training_rows, training_title

    blocks = []
    for model in run.models:
        if model.inference:
            blocks.append(f"<h3>{escape(inference_title(model))}</h3>"
                          + _table(list(INFERENCE_HEADERS), inference_rows(model), cls="cases"))
        if model.training:
            blocks.append(f"<h3>{escape(training_title(model))}</h3>"
                          + _table(list(TRAINING_HEADERS), training_rows(model), cls="cases"))
    if not blocks:
        return ""
    note = f'<p class="note">{escape(training_legend())}</p>' if any(m.training for m in run.models) else ""
    return '<h2 id="cases">Each case by category</h2>' + "".join(blocks) + note


def _multigpu_section(run: RunResult) -> str:
    """The inference split over --gpus cards, and each training case's per-GPU plans, per model."""
    from .multigpu import (
        SPLIT_HEADERS,
        parallel_groups,
        parallel_notes,
        parallel_table,
        parallel_title,
        split_rows,
        split_title,
    )

    blocks, notes = [], []
    for model in run.models:
        if any(s is not None for s in model.splits):
            blocks.append(f"<h3>{escape(split_title(model))}</h3>"
                          + _table(list(SPLIT_HEADERS), split_rows(model), cls="split"))
        if model.plans:
            for case, plans in parallel_groups(model):
                header, rows = parallel_table(plans)
                blocks.append(f"<h3>{escape(parallel_title(model, case))}</h3>" + _table(header, rows, cls="plans"))
            notes += [n for n in parallel_notes(model) if n not in notes]
    if not blocks:
        return ""
    return ('<h2 id="multigpu">Over several GPUs</h2>' + "".join(blocks)
            + "".join(f'<p class="note">{escape(n)}</p>' for n in notes))


def _fit_section(run: RunResult) -> str:
    if run.fit is None:
        return ""
    gpus = fit_gpus(run)
    blocks = ['<h2 id="fit">Will it fit</h2>']
    for key in fit_sizes(run):
        cells = [[cell_for(m, g, key, run) for g in gpus] for m in run.models]
        rows = [[m.model, *(cell_text(c) for c in row)] for m, row in zip(run.models, cells)]
        classes = [["", *(_fit_class(c) for c in row)] for row in cells]
        blocks.append(f"<h3>{escape(fit_title(run))}: {escape(size_title(key))}</h3>")
        blocks.append(_table(["Model", *(g.name for g in gpus)], rows, classes, cls="fit-matrix"))
    precision = precision_rows(run)
    if precision:
        blocks.append(f"<h3>Least lossy precision whose batch 1 fits ({escape(size_title(fit_sizes(run)[-1]))})</h3>")
        blocks.append(_table(["Model", *(g.name for g in gpus)], precision, cls="fit-precision"))
    cards = "; ".join(f"{g.name}: {g.label}, {format_bytes(g.memory_bytes)}" for g in gpus)
    step = ("the peak of two simulated training steps (gradients and optimizer state included) on the card"
            if run.fit.training is not None else "the simulated peak on the card")
    blocks.append(f'<p class="note">Green: 8 or more; amber: 1 to 7; red: batch 1 does not fit. '
                  f"Fits: {step} is at most its memory (as the driver reports it) less the "
                  f"headroom. Cards: {escape(cards)}.</p>")
    return "".join(blocks)


def _fit_class(cell) -> str:
    if cell is None or cell.error:
        return "fit-error"
    n = cell.largest_batch_size
    return "fit-none" if n == 0 else ("fit-few" if n < 8 else "fit-many")
