"""`vramplan list`: the catalogue with each model's measured size."""

from __future__ import annotations

import json

from ..results import RunResult
from ..sources.catalog import CatalogEntry
from .table import ERROR_CELL, binary_bytes, render_table

HEADER = ("id", "alias", "family", "params", "float32")


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


def render_list_table(rows: list[dict], width: int = 100) -> str:
    """An aligned table within `width` columns; float32 sizes in binary units; a failure is a compact cell."""
    cells = [
        [r["id"], r["alias"], r["family"], _params(r["parameters"]),
         binary_bytes(r["float32_bytes"]) if r["float32_bytes"] is not None else ERROR_CELL]
        for r in rows
    ]
    errors = [f"Error: {r['id']}: {r['error']}" for r in rows if r["float32_bytes"] is None and r["error"]]
    table = render_table(HEADER, cells, width=width, numeric=(3, 4))
    return table + "".join(line + "\n" for line in errors)


def render_list_json(rows: list[dict]) -> str:
    return json.dumps({"models": rows}, indent=2) + "\n"


def _params(count: int | None) -> str:
    if count is None:
        return "-"
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    return f"{count / 1e6:.1f}M"
