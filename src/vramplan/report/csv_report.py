"""CSV: a header, then one row per model and dtype."""

from __future__ import annotations

import csv
import io

from ..results import RunResult
from .json_report import _number

COLUMNS = ("model", "library", "status", "error", "dtype", "largest_layer_bytes", "total_bytes", "training_adam_bytes")


INFERENCE_COLUMNS = (
    "model", "status", "error", "image_height", "image_width", "seq_len", "batch_size", "dtype", "attn", "device",
    "parameter_bytes", "buffer_bytes", "activation_bytes", "temp_bytes", "peak_allocated_bytes", "peak_device_bytes",
)

SPLIT_CSV_COLUMNS = ("gpus", "nodes", "strategy", "per_gpu_peak_bytes", "per_gpu_device_bytes", "cpu_bytes_per_node",
                     "fits")


def render_csv(run: RunResult) -> str:
    """The run as CSV: weights rows, or with inference (training) asked for, one row per model and case."""
    if run.training is not None:
        return render_training_csv(run)
    return render_inference_csv(run) if run.inference is not None else render_weights_csv(run)


def render_weights_csv(run: RunResult) -> str:
    """A row per model and dtype; a failed model still gets its rows, with its error and empty sizes."""
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


def render_inference_csv(run: RunResult) -> str:
    """A row per model and inference case; a failed case carries its reason and empty sizes."""
    from .inference import inference_json

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    split = SPLIT_CSV_COLUMNS if any(m.splits for m in run.models) else ()  # --gpus N: the busiest card, the CPU
    # --autocast: dtype stays the weights' (float32); the compute dtype gets its own column
    split += ("autocast",) if any(item.case.autocast for m in run.models for item in m.inference) else ()
    writer.writerow(INFERENCE_COLUMNS + split)
    for model in run.models:
        if not model.inference:
            writer.writerow([model.model, model.status, model.error or ""] + [""] * (len(INFERENCE_COLUMNS + split) - 3))
        for entry in inference_json(model):
            h, w = entry.get("image_size") or ("", "")
            sizes = [_blank(entry.get(c)) for c in INFERENCE_COLUMNS[10:] + split]
            writer.writerow([model.model, "error" if "error" in entry else "ok", entry.get("error", ""), h, w,
                             _blank(entry.get("seq_len")), entry["batch_size"], entry["dtype"], entry["attn"],
                             entry["device"], *sizes])
    return out.getvalue()


def render_training_csv(run: RunResult) -> str:
    """A row per model and training case; a failed case carries its reason and empty sizes."""
    from .multigpu import PARALLEL_CSV_COLUMNS, parallel_csv_rows
    from .training import TRAINING_CSV_COLUMNS, training_csv_rows

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = TRAINING_CSV_COLUMNS + (PARALLEL_CSV_COLUMNS if run.parallel else ())  # --gpus N: per case and strategy
    writer.writerow(columns)
    for model in run.models:
        writer.writerows(parallel_csv_rows(model, columns) if model.plans else training_csv_rows(model))
    return out.getvalue()
