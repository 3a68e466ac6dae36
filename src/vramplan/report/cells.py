"""Cell text shared by the renderers: byte sizes as accelerate prints them."""

from __future__ import annotations

from ..measure.weights import DtypeWeights

NA = "N/A"
HEADERS = ("dtype", "Largest Layer", "Total Size", "Training using Adam")


def format_bytes(size: float | None) -> str:
    """Format bytes exactly as accelerate's convert_bytes (N/A for None)."""
    from accelerate.utils import convert_bytes

    return NA if size is None else convert_bytes(size)


def weights_cells(row: DtypeWeights) -> list[str]:
    """The four cells of one accelerate table row."""
    return [
        row.dtype,
        format_bytes(row.largest_layer_bytes),
        format_bytes(row.total_bytes),
        format_bytes(row.training_adam_bytes),
    ]
