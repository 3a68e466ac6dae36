"""accelerate's boxed table, drawn by accelerate's own create_ascii_table."""

from __future__ import annotations

from ..results import ModelResult
from .cells import HEADERS, weights_cells


def render_boxed(result: ModelResult) -> str:
    """The table `accelerate estimate-memory` prints for one model (or, with no weights, its error line)."""
    if result.weights is None:
        return f"Error: {result.error}"
    from accelerate.commands.estimate import create_ascii_table

    rows = [weights_cells(row) for row in result.weights.rows]
    return create_ascii_table(list(HEADERS), rows, f"Memory Usage for loading `{result.model}`")
