"""What the text and Markdown reports share: the title, the summary cells, the reproducing command."""

from __future__ import annotations

import shlex

from ..results import ModelResult, RunResult
from .cells import format_bytes


def report_title(family_title: str | None) -> str:
    """The report's first line."""
    prefix = f"{family_title} " if family_title else ""
    return f"{prefix}VRAM Requirements (vramplan estimate)"


def summary_header(run: RunResult) -> list[str]:
    return ["Model", *run.dtypes, "status"]


def summary_cells(result: ModelResult, run: RunResult) -> list[str]:
    """One summary row: total size per dtype, then the status."""
    if result.weights is None:
        return [result.model, *("-" for _ in run.dtypes), status_text(result)]
    sizes = [format_bytes(result.weights.row(dtype).total_bytes) for dtype in run.dtypes]
    return [result.model, *sizes, status_text(result)]


def status_text(result: ModelResult) -> str:
    return "ok" if result.ok else f"error: {result.error}"


def reproduce_command(result: ModelResult, run: RunResult) -> str:
    """The vramplan command that reproduces this model's table."""
    words = ["vramplan", "estimate", result.reference if result.source == "local" else result.model]
    if tuple(run.dtypes) != ("float32", "float16", "int8", "int4"):
        words += ["--dtypes", *run.dtypes]
    return shlex.join(words)
