"""Markdown: the same content as the text report, as GitHub tables."""

from __future__ import annotations

from ..results import ModelResult, RunResult
from .cells import HEADERS, weights_cells
from .checkpoint_text import checkpoint_lines
from .inference import HEADERS as INFERENCE_HEADERS
from .inference import failure_reasons, inference_rows, inference_title, overhead_note
from .summary import inference_legend, report_title, reproduce_command, summary_cells, summary_header
from .summary import training_legend, training_summary


def render_markdown(run: RunResult, family_title: str | None = None, *, with_summary: bool = True) -> str:
    """A Markdown document: optional title and summary, then a section per model."""
    parts: list[str] = []
    if with_summary:
        parts += [
            f"# {report_title(family_title)}",
            "",
            f"Generated: {run.generated}  ",
            f"Model count: {len(run.models)}",
            "",
            "## Summary (Total Size to load weights)",
            "",
            *_table(summary_header(run, training=False), [summary_cells(m, run, training=False) for m in run.models]),
            "",
            *([legend, ""] if (legend := inference_legend(run)) else []),
            *_training_summary(run),
        ]
    for model in run.models:
        parts += _model_section(model, run)
    return "\n".join(parts)


def _training_summary(run: RunResult) -> list[str]:
    """A row per model and (what trains, batch), a column per input size, as in the text summary."""
    if run.training is None:
        return []
    header, rows = training_summary(run)
    return ["### Peak on the card, two training steps", "", *_table(header, rows), "", training_legend(run), ""]


def _model_section(model: ModelResult, run: RunResult) -> list[str]:
    lines = [f"## {_code(model.model)}", "", f"Command: {_code(reproduce_command(model, run))}  ",
             f"Status: {model.status}", ""]
    if model.weights is None:
        return lines + [f"Error: {_escape(model.error or '')}", ""]
    rows = [weights_cells(row) for row in model.weights.rows]
    ties = [f"Note: {note}"] if (note := model.weights.tie_note()) else []
    notes = [f"- {_escape(line)}" for line in ties + checkpoint_lines(model.checkpoint)]
    out = lines + _table(list(HEADERS), rows) + [""] + (notes + [""] if notes else [])
    if model.inference:
        out += [f"{inference_title(model)}:", "", *_table(list(INFERENCE_HEADERS), inference_rows(model)), ""]
        note = overhead_note(model)
        out += [note, ""] if note else []
    if model.training:
        from .training import HEADERS as TRAINING_HEADERS
        from .training import training_legend as table_legend
        from .training import training_rows, training_title

        out += [f"{training_title(model)}:", "", *_table(list(TRAINING_HEADERS), training_rows(model)), "",
                table_legend(), ""]
    if model.plans:
        from .multigpu import parallel_groups, parallel_notes, parallel_table, parallel_title

        for case, plans in parallel_groups(model):
            out += [f"{_escape(parallel_title(model, case))}:", "", *_table(*parallel_table(plans)), ""]
        out += [*(f"- {_escape(note)}" for note in parallel_notes(model)), ""]
    out += [line for reason in failure_reasons(model) for line in (f"Error: {_escape(reason)}", "")]
    return out


def _code(text: str) -> str:
    """An inline code span that holds any text: a fence longer than any backtick run inside, so the span
    cannot be closed early and HTML in a name stays literal text."""
    import re

    text = " ".join(text.splitlines())
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(_escape(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return out


def _escape(text: str) -> str:
    """Table-safe and HTML-safe: a name like `<img src=x onerror=...>` shows as text, never as markup."""
    import html

    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")
