"""JSON: the stable, documented schema (see README, "JSON output")."""

from __future__ import annotations

import json
from typing import Any

from ..measure.weights import DTYPES
from ..results import ModelResult, RunResult
from .checkpoint_text import checkpoint_json
from .inference import inference_json

SCHEMA_VERSION = 1


def render_json(run: RunResult) -> str:
    """The whole run as JSON."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "generated": run.generated,
        "dtypes": list(run.dtypes),
        "models": [model_json(m, run.dtypes) for m in run.models],
    }
    if run.inference is not None:
        for entry in payload["models"]:
            entry.setdefault("inference", [])
    if run.fit is not None:
        for entry in payload["models"]:
            entry.setdefault("fit", [])
    if run.training is not None:
        for entry in payload["models"]:
            entry.setdefault("training", [])
    return json.dumps(payload, indent=2) + "\n"


def model_json(result: ModelResult, dtypes: tuple[str, ...] = DTYPES) -> dict[str, Any]:
    """One model's entry: weights per dtype, null when the model failed."""
    weights = None
    if result.weights is not None:
        weights = {
            row.dtype: {
                "largest_layer_bytes": _number(row.largest_layer_bytes),
                "total_bytes": _number(row.total_bytes),
                "training_adam_bytes": _number(row.training_adam_bytes),
            }
            for row in result.weights.rows
        }
    entry: dict[str, Any] = {
        "model": result.model,
        "library": result.library,
        "status": result.status,
        "error": result.error,
        "weights": weights,
    }
    if result.weights is not None:
        entry["parameters"] = result.weights.parameter_count
        if result.weights.accelerate_total_bytes is not None:  # tied weights: accelerate counts them apart
            entry["accelerate_total_bytes"] = result.weights.accelerate_total_bytes
    entry["source"] = result.source
    entry["checkpoint"] = checkpoint_json(result.checkpoint)
    if result.inference:
        entry["inference"] = inference_json(result)
    if result.fit:
        entry["fit"] = [cell.as_json() for cell in result.fit]
    if result.training:
        from .multigpu import parallel_training_json
        from .training import training_json

        entry["training"] = parallel_training_json(result) if result.plans else training_json(result)
    return entry


def _number(value: float | None) -> int | float | None:
    """Whole byte counts as ints; accelerate's divided sizes keep their fraction."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value
