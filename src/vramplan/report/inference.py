"""Inference tables: the simulated peak per case, broken down as torch's MemTracker names it."""

from __future__ import annotations

from typing import Any

from ..results import InferenceFailure, ModelResult
from .cells import format_bytes

HEADERS = ("input", "batch", "dtype", "attn", "Parameter", "Buffer", "Activation", "Temp",
           "max allocated", "on the card")


def case_input(case: Any) -> str:
    """`1024px`, `768x1344px` or `512 tok`."""
    if case.image_size is not None:
        h, w = case.image_size
        return f"{h}px" if h == w else f"{h}x{w}px"
    return f"{case.seq_len} tok"


def case_label(case: Any, show_dtype: bool = False, show_attn: bool = False) -> str:
    """A short column label for a summary table, e.g. `1024px b8`."""
    parts = [case_input(case), f"b{case.batch_size}"]
    if show_dtype:
        parts.append(case.dtype)
    if show_attn:
        parts.append(case.attn)
    return " ".join(parts)


def inference_rows(result: ModelResult) -> list[list[str]]:
    """One row per case: the four parts, then the two totals; a failed case shows its reason."""
    rows = []
    for item in result.inference:
        case = item.case
        head = [case_input(case), str(case.batch_size), case.dtype, case.attn]
        if isinstance(item, InferenceFailure):
            rows.append(head + ["error", "", "", "", "", item.reason])
            continue
        rows.append(head + [format_bytes(v) for v in (
            item.parameter_bytes, item.buffer_bytes, item.activation_bytes, item.temp_bytes,
            item.peak_allocated_bytes, item.peak_device_bytes)])
    return rows


def inference_title(result: ModelResult) -> str:
    device = result.inference[0].case.device if result.inference else "cuda"
    return f"Inference peak for `{result.model}` (simulated {device})"


def render_inference_boxed(result: ModelResult) -> str:
    """accelerate-style boxed table of the cases."""
    if not result.inference:
        return ""
    from accelerate.commands.estimate import create_ascii_table

    return create_ascii_table(list(HEADERS), inference_rows(result), inference_title(result))


def inference_json(result: ModelResult) -> list[dict[str, Any]]:
    """The model's JSON `inference` list (failed cases carry `error`)."""
    out = []
    splits = result.splits or (None,) * len(result.inference)
    for item, split in zip(result.inference, splits):
        if isinstance(item, InferenceFailure):
            out.append({**item.case.as_json(), "error": item.reason})
        else:
            entry = item.as_json()
            entry["overheads"] = {name: value for name, value in item.overheads}
            if split is not None:  # --gpus: the multi-GPU fields of the split
                entry.update(split.as_json())
            out.append(entry)
    return out


def overhead_note(result: ModelResult) -> str | None:
    """Name what `on the card` adds to `max allocated`, from the first case that has overheads."""
    for item in result.inference:
        if not isinstance(item, InferenceFailure) and item.overheads:
            parts = ", ".join(f"{name} {format_bytes(value)}" for name, value in item.overheads)
            return f"on the card = max allocated + {parts} (first case; constants and their sources: vramplan/measure/overheads.py)"
    return None
