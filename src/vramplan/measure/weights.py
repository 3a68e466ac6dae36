"""Weights: the figures `accelerate estimate-memory` prints, computed by accelerate itself.

accelerate's `calculate_maximum_sizes` sizes the model (the largest layer honours
`_no_split_modules`) and its `estimate_training_usage` gives "Training using Adam". The only
step accelerate keeps inside its CLI is the per-dtype division, repeated here as it is there.

Tied weights are counted once, as a loaded model holds them (`ties.py`): for a model whose empty
build leaves them untied (BART, T5) the table differs from accelerate's, and the estimate keeps
accelerate's own total (`accelerate_total_bytes`) for a note. For every other model the figures
are accelerate's, to the byte.
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
    largest_layer_name: str  # the module (or block) accelerate found largest; named in the Largest Layer note
    parameter_count: int
    rows: tuple[DtypeWeights, ...]
    no_split_modules: tuple[str, ...] = ()  # the model's _no_split_modules: then Largest Layer is a whole block
    # Set only where tying changes the figures: what `accelerate estimate-memory` prints (float32
    # total, untied) and the (tied name, name it shares with) pairs.
    accelerate_total_bytes: int | None = None
    tied: tuple[tuple[str, str], ...] = ()

    def tie_note(self) -> str | None:
        """Say how the table differs from accelerate's because tied weights are counted once."""
        if self.accelerate_total_bytes is None:
            return None
        from accelerate.utils import convert_bytes

        names = ", ".join(f"{name} = {source}" for name, source in self.tied)
        return (f"Tied weights counted once, as from_pretrained holds them ({names}): float32 total "
                f"{convert_bytes(self.total_bytes)}; `accelerate estimate-memory` builds them untied and prints "
                f"{convert_bytes(self.accelerate_total_bytes)}")

    def row(self, dtype: str) -> DtypeWeights:
        for row in self.rows:
            if row.dtype == dtype:
                return row
        raise KeyError(dtype)


def measure_weights(model: "nn.Module", dtypes: tuple[str, ...] = DTYPES) -> WeightsEstimate:
    """Size a meta-device model as `accelerate estimate-memory` does, for each dtype, tied weights once."""
    from accelerate.utils import calculate_maximum_sizes

    from .ties import tied_copy

    tied, pairs = tied_copy(model)
    total, (largest, largest_names) = calculate_maximum_sizes(tied)
    accelerate_total = int(calculate_maximum_sizes(model)[0]) if tied is not model else None
    model = tied
    return WeightsEstimate(
        total_bytes=int(total),
        largest_layer_bytes=int(largest),
        largest_layer_name=largest_names[0] if largest_names else "",
        parameter_count=sum(p.numel() for p in model.parameters()),
        rows=tuple(weights_row(total, largest, dtype) for dtype in dtypes),
        no_split_modules=tuple(sorted(getattr(model, "_no_split_modules", None) or ())),  # a set in some versions
        accelerate_total_bytes=accelerate_total if accelerate_total != int(total) else None,
        tied=pairs if accelerate_total is not None else (),
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
