"""Plain text: accelerate's boxed tables, and the family report in the seed's layout."""

from __future__ import annotations

import textwrap

from ..results import RunResult
from .boxed import render_boxed
from .checkpoint_text import checkpoint_lines
from .inference import failure_reasons, overhead_note, render_inference_table
from .summary import (
    inference_legend,
    inference_summary,
    report_title,
    reproduce_command,
    summary_cells,
    summary_header,
    training_legend,
    training_summary,
)
from .table import UNITS_NOTE, render_table

RULE = "-" * 120
BANNER = "=" * 120


def render_tables(run: RunResult, width: int = 100) -> str:
    """`vramplan estimate`'s default output: one boxed table per model, then what its sizes mean."""
    blocks = []
    for model in run.models:
        heading = f"{model.model}: " if model.weights is None else ""
        note = [line for text in largest_layer_note(model) for line in textwrap.wrap(text, width)]
        body = [heading + render_boxed(model), *note, *model_details(model, width)]
        blocks.append("\n".join(body))
    if any(model.weights is not None for model in run.models):
        blocks.append(f"Note: {UNITS_NOTE}")
    return "\n\n".join(blocks) + "\n"


def render_report_text(run: RunResult, family_title: str | None = None, width: int = 100) -> str:
    """The report: title, timestamp, count, summary with status, then each model's table.

    Weights only, the summary keeps the seed report's `a | b` layout; with inference cases it is two
    aligned tables within `width` columns.
    """
    lines = [
        report_title(family_title),
        f"Generated: {run.generated}",
        f"Model count: {len(run.models)}",
        "",
        "Summary (Total Size to load weights)",
        *(summary_lines(run, width)),
        "",
        "Detailed command outputs",
        BANNER if run.inference is None else "=" * width,
    ]
    for model in run.models:
        lines += [
            f"===== {model.model} =====",
            f"Command: {reproduce_command(model, run)}",
            f"Status: {model.status}",
            render_boxed(model),
            *model_details(model, width),
            "",
        ]
    return "\n".join(lines)


def summary_lines(run: RunResult, width: int) -> list[str]:
    """The seed's summary (weights only), or aligned weights, inference and training tables."""
    if run.inference is None and run.training is None:
        return [" | ".join(summary_header(run)), RULE, *(" | ".join(summary_cells(m, run)) for m in run.models)]
    header = ["Model", *run.dtypes, "status"]
    rows = [[cells[0], *cells[1 : 1 + len(run.dtypes)], cells[-1]] for cells in (summary_cells(m, run) for m in run.models)]
    lines = [render_table(header, rows, width=width, numeric=range(1, len(header) - 1)).rstrip("\n"),
             *wrap_paragraphs(f"Note: {UNITS_NOTE}", width)]
    if run.inference is not None:
        inference_header, inference_rows = inference_summary(run)
        peaks = render_table(inference_header, inference_rows, width=width,
                             numeric=range(1, len(inference_header))).rstrip("\n")
        lines += ["", "Peak on the card, one forward", peaks, *wrap_paragraphs(inference_legend(run), width)]
    if run.training is not None:
        training_header, training_rows = training_summary(run)
        steps = render_table(training_header, training_rows, width=width,
                             numeric=range(2, len(training_header))).rstrip("\n")  # "trains" reads left
        lines += ["", "Peak on the card, two training steps", steps, *wrap_paragraphs(training_legend(run), width)]
    return lines


def largest_layer_note(model) -> list[str]:
    """What Largest Layer means for this model: a whole block (_no_split_modules) or a single module."""
    weights = model.weights
    if weights is None or not weights.largest_layer_name:
        return []
    if weights.no_split_modules:
        kinds = ", ".join(weights.no_split_modules)
        return [f"Largest Layer: a whole block kept on one device ({kinds}, from _no_split_modules): "
                f"{weights.largest_layer_name}"]
    return [f"Largest Layer: a single module (the model names no _no_split_modules): {weights.largest_layer_name}"]


def model_details(model, width: int = 100) -> list[str]:
    """What follows the weights table: the checkpoint, the inference table, and each error that left weights."""
    errors = [f"Error: {reason}" for reason in failure_reasons(model)] if model.weights is not None else []
    ties = [f"Note: {note}"] if model.weights is not None and (note := model.weights.tie_note()) else []
    from .multigpu import parallel_lines
    from .training import render_training_text

    return [*ties, *checkpoint_lines(model.checkpoint), *inference_block(model, width), *render_training_text(model, width),
            *parallel_lines(model, width), *errors]


def inference_block(model, width: int = 100) -> list[str]:
    """The inference table and what its last column adds, when inference was simulated."""
    if not model.inference:
        return []
    note = wrap_paragraphs(overhead_note(model), width)
    from .multigpu import split_lines

    return [render_inference_table(model, width), *note, *split_lines(model)]


def wrap_paragraphs(text: str | None, width: int) -> list[str]:
    """Wrap each line of a note to the width, keeping its line breaks (each is a sentence of its own)."""
    return [line for paragraph in (text or "").splitlines() for line in textwrap.wrap(paragraph, width)]
