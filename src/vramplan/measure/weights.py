"""Weights: the figures `accelerate estimate-memory` prints, computed by accelerate itself.

accelerate's `calculate_maximum_sizes` sizes the model (the largest layer honours
`_no_split_modules`) and its `estimate_training_usage` gives "Training using Adam". The only
step accelerate keeps inside its CLI is the per-dtype division, repeated here as it is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn

DTYPES = ("float32", "float16", "int8", "int4")
# accelerate.commands.estimate.gather_data divides the float32 size by these.
_DIVISOR = {"float32": 1, "float16": 2, "int8": 4, "int4": 8}


@dataclass(frozen=True)
class DtypeWeights:
    """One row of accelerate's table."""

    dtype: str
    largest_layer_bytes: float
    total_bytes: float
    training_adam_bytes: float | None  # None where accelerate prints N/A


@dataclass(frozen=True)
class WeightsEstimate:
    """Weights of a model in float32 and the rows derived from them."""

    total_bytes: int
    largest_layer_bytes: int
    parameter_count: int
    rows: tuple[DtypeWeights, ...]

    def row(self, dtype: str) -> DtypeWeights:
        for row in self.rows:
            if row.dtype == dtype:
                return row
        raise KeyError(dtype)


def measure_weights(model: "nn.Module", dtypes: tuple[str, ...] = DTYPES) -> WeightsEstimate:
    """Size a meta-device model as `accelerate estimate-memory` does, for each dtype."""
    from accelerate.utils import calculate_maximum_sizes

    total, (largest, _) = calculate_maximum_sizes(model)
    return WeightsEstimate(
        total_bytes=int(total),
        largest_layer_bytes=int(largest),
        parameter_count=sum(p.numel() for p in model.parameters()),
        rows=tuple(weights_row(total, largest, dtype) for dtype in dtypes),
    )


def weights_row(total: int, largest: int, dtype: str) -> DtypeWeights:
    """Derive one dtype's row from the float32 sizes, exactly as accelerate's gather_data."""
    training = _training_usage(total, dtype)
    divisor = _DIVISOR[dtype]
    # accelerate divides with `/=` only for the lower dtypes, so float32 stays an int.
    return DtypeWeights(
        dtype=dtype,
        largest_layer_bytes=largest / divisor if divisor > 1 else largest,
        total_bytes=total / divisor if divisor > 1 else total,
        training_adam_bytes=training,
    )


def _training_usage(total: int, dtype: str) -> float | None:
    from accelerate.commands.estimate import estimate_training_usage

    usage = max(estimate_training_usage(total, dtype).values())
    return None if usage == -1 else usage
