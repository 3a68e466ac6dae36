"""Plain text: accelerate's boxed tables, and the family report in the seed's layout."""

from __future__ import annotations

from ..results import RunResult
from .boxed import render_boxed
from .checkpoint_text import checkpoint_lines
from .inference import overhead_note, render_inference_boxed
from .summary import inference_legend, report_title, reproduce_command, summary_cells, summary_header

RULE = "-" * 120
BANNER = "=" * 120


def render_tables(run: RunResult) -> str:
    """`vramplan estimate`'s default output: one boxed table per model."""
    blocks = []
    for model in run.models:
        heading = f"{model.model}: " if model.weights is None else ""
        blocks.append("\n".join([heading + render_boxed(model), *model_details(model)]))
    return "\n\n".join(blocks) + "\n"


def render_report_text(run: RunResult, family_title: str | None = None) -> str:
    """The report: title, timestamp, count, summary with status, then each model's table."""
    lines = [
        report_title(family_title),
        f"Generated: {run.generated}",
        f"Model count: {len(run.models)}",
        "",
        "Summary (Total Size to load weights)",
        " | ".join(summary_header(run)),
        RULE,
        *(" | ".join(summary_cells(model, run)) for model in run.models),
        *([legend] if (legend := inference_legend(run)) else []),
        "",
        "Detailed command outputs",
        BANNER,
    ]
    for model in run.models:
        lines += [
            f"===== {model.model} =====",
            f"Command: {reproduce_command(model, run)}",
            f"Status: {model.status}",
            render_boxed(model),
            *model_details(model),
            "",
        ]
    return "\n".join(lines)


def model_details(model) -> list[str]:
    """What follows the weights table: the checkpoint, the inference table, and an error that left weights."""
    error = [f"Error: {model.error}"] if model.error and model.weights is not None else []
    return [*checkpoint_lines(model.checkpoint), *inference_block(model), *error]


def inference_block(model) -> list[str]:
    """The inference table and what its last column adds, when inference was simulated."""
    if not model.inference:
        return []
    from .multigpu import split_lines

    note = overhead_note(model)
    return [render_inference_boxed(model), *([note] if note else []), *split_lines(model)]
