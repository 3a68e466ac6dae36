"""Multi-GPU tables: the inference split per card (and, with training, the per-GPU plans)."""

from __future__ import annotations

from ..results import ModelResult
from .cells import format_bytes
from .inference import case_input

SPLIT_HEADERS = ("input", "batch", "dtype", "GPU", "weights", "max allocated", "on the card", "card")


def split_rows(result: ModelResult) -> list[list[str]]:
    """One row per case and card; a case that leaves weights on the CPU says how much."""
    rows = []
    for item, split in zip(result.inference, result.splits):
        if split is None:
            continue
        head = [case_input(item.case), str(item.case.batch_size), item.case.dtype]
        for gpu, (w, alloc, peak) in enumerate(zip(split.per_gpu_weight_bytes, split.per_gpu_allocated_bytes,
                                                   split.per_gpu_peak_bytes)):
            rows.append(head + [str(gpu), format_bytes(w), format_bytes(alloc), format_bytes(peak),
                                format_bytes(split.card_bytes)])
        if not split.fits:
            rows.append(head + ["CPU", format_bytes(split.cpu_weight_bytes), "", "", ""])
    return rows


def split_lines(result: ModelResult) -> list[str]:
    """The boxed split table and how it was made, when --gpus was asked."""
    if not any(s is not None for s in result.splits):
        return []
    from accelerate.commands.estimate import create_ascii_table

    gpus = next(s.gpus for s in result.splits if s is not None)
    title = f"`{result.model}` over {gpus} GPUs (device_map='auto')"
    notes = ["each card keeps the one-card forward's activations, workspaces and context beside its weights"]
    if any(s is not None and not s.fits for s in result.splits):
        notes.append("a CPU row: those weights do not fit on the cards; device_map='auto' would offload them")
    return [create_ascii_table(list(SPLIT_HEADERS), split_rows(result), title), *notes]
