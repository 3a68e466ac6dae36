"""`vramplan list`: the catalogue with each model's measured size."""

from __future__ import annotations

import json

from ..results import RunResult
from ..sources.catalog import CatalogEntry
from .cells import format_bytes

HEADER = ("id", "alias", "family", "parameters", "float32")


def listing_rows(entries: tuple[CatalogEntry, ...], run: RunResult) -> list[dict]:
    """Join catalogue entries with their measured weights (same order)."""
    rows = []
    for entry, result in zip(entries, run.models):
        weights = result.weights
        rows.append({
            "id": entry.model_id,
            "alias": entry.alias,
            "family": entry.family,
            "parameters": weights.parameter_count if weights else None,
            "float32_bytes": weights.total_bytes if weights else None,
            "error": result.error,
        })
    return rows


def render_list_table(rows: list[dict]) -> str:
    """A plain aligned table."""
    cells = [list(HEADER)] + [
        [r["id"], r["alias"], r["family"], _params(r["parameters"]),
         format_bytes(r["float32_bytes"]) if r["float32_bytes"] is not None else f"error: {r['error']}"]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in cells]
    return "\n".join(lines) + "\n"


def render_list_json(rows: list[dict]) -> str:
    return json.dumps({"models": rows}, indent=2) + "\n"


def _params(count: int | None) -> str:
    if count is None:
        return "-"
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    return f"{count / 1e6:.1f}M"
