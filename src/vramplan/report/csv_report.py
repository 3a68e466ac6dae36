"""CSV: a header, then one row per model and dtype."""

from __future__ import annotations

import csv
import io

from ..results import RunResult
from .json_report import _number

COLUMNS = ("model", "library", "status", "error", "dtype", "largest_layer_bytes", "total_bytes", "training_adam_bytes")


def render_csv(run: RunResult) -> str:
    """The run as CSV; a failed model still gets a row per dtype, with its error and empty sizes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for model in run.models:
        for dtype in run.dtypes:
            row = model.weights.row(dtype) if model.weights is not None else None
            sizes = (
                [_blank(_number(row.largest_layer_bytes)), _blank(_number(row.total_bytes)),
                 _blank(_number(row.training_adam_bytes))]
                if row is not None
                else ["", "", ""]
            )
            writer.writerow([model.model, model.library, model.status, model.error or "", dtype, *sizes])
    return out.getvalue()


def _blank(value: int | float | None) -> str:
    return "" if value is None else str(value)
