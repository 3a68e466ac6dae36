"""Inference tables: the simulated peak per case, broken down as torch's MemTracker names it."""

from __future__ import annotations

from typing import Any

from ..results import InferenceFailure, ModelResult
from .table import ERROR_CELL, binary_bytes, render_table

HEADERS = ("input", "batch", "dtype", "attn", "Parameter", "Buffer", "Activation", "Temp",
           "max allocated", "on the card")


def case_input(case: Any) -> str:
    """`1024px`, `768x1344px`, `512 tok`, `480000 samples`, `3000 frames`, or the --input-shape dims past the batch (`input_ids[128]`)."""
    if case.image_size is not None:
        h, w = case.image_size
        return f"{h}px" if h == w else f"{h}x{w}px"
    if getattr(case, "inputs", ()):
        return ",".join(f"{s.name or ''}[{'x'.join(map(str, s.shape[1:]))}]" for s in case.inputs)
    return f"{case.seq_len} {getattr(case, 'seq_unit', None) or 'tok'}"


def case_dtype(case: Any) -> str:
    """The case's dtype, or `amp-bf16` / `amp-fp16` for float32 weights under --autocast."""
    autocast = getattr(case, "autocast", None)
    return case.dtype if not autocast else {"bfloat16": "amp-bf16", "float16": "amp-fp16"}[autocast]


def case_label(case: Any, show_dtype: bool = False, show_attn: bool = False) -> str:
    """A short column label for a summary table, e.g. `1024px b8` (`1024px b8 amp-bf16` under --autocast)."""
    parts = [case_input(case), f"b{case.batch_size}"]
    if show_dtype or getattr(case, "autocast", None):
        parts.append(case_dtype(case))
    if show_attn:
        parts.append(case.attn)
    return " ".join(parts)


def inference_rows(result: ModelResult) -> list[list[str]]:
    """One row per case: the four parts, then the two totals; a failed case shows its reason."""
    rows = []
    for item in result.inference:
        case = item.case
        ran = getattr(item, "attn_implementation", "") or case.attn  # what ran: eager where sdpa is missing
        head = [case_input(case), str(case.batch_size), case_dtype(case), ran]
        if isinstance(item, InferenceFailure):  # the reason follows the table, once
            rows.append(head + [ERROR_CELL, "", "", "", "", ""])
            continue
        rows.append(head + [binary_bytes(v) for v in (
            item.parameter_bytes, item.buffer_bytes, item.activation_bytes, item.temp_bytes,
            item.peak_allocated_bytes, item.peak_device_bytes)])
    return rows


def inference_title(result: ModelResult) -> str:
    case = result.inference[0].case if result.inference else None
    return f"Inference peak for `{result.model}` (simulated {target_name(case)})"


def target_name(case: Any) -> str:
    """`cpu`, or the card by its id, `h100-sxm` (the default target is named too; `vramplan gpus` lists ids)."""
    if case is None or case.device == "cuda":
        from ..plan.gpus import default_gpu

        gpu = case.target if case is not None else default_gpu()
        return gpu.name
    return case.device


def render_inference_table(result: ModelResult, width: int = 100) -> str:
    """The cases as an aligned table within `width` columns, sizes in binary units.

    A dtype or attention that is the same for every case moves from its column into the title.
    """
    if not result.inference:
        return ""
    rows, header, same = inference_rows(result), list(HEADERS), []
    for column in (3, 2):  # attn, dtype
        values = {row[column] for row in rows}
        if len(values) == 1:
            same.insert(0, values.pop())
            header.pop(column)
            rows = [row[:column] + row[column + 1 :] for row in rows]
    title = inference_title(result)
    title = title[:-1] + ", " + ", ".join(same) + ")" if same else title
    numeric = [1, *range(header.index("Parameter"), len(header))]
    return render_table(header, rows, width=width, title=title, numeric=numeric).rstrip("\n")


def failure_reasons(result: ModelResult) -> list[str]:
    """Each distinct reason the model or its cases failed, in order."""
    from ..results import TrainingFailure

    failed = (InferenceFailure, TrainingFailure)
    reasons = [item.reason for item in (*result.inference, *result.training) if isinstance(item, failed)]
    return list(dict.fromkeys(reasons or ([result.error] if result.error else [])))


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
    """Name what `on the card` adds to `max allocated`, from the first case that has overheads,
    and say that CUDA figures are modelled, with the assumptions they rest on."""
    for item in result.inference:
        if not isinstance(item, InferenceFailure) and item.overheads:
            parts = ", ".join(f"{name} {binary_bytes(value)}" for name, value in item.overheads)
            return (f"on the card = max allocated + {parts} (first case; constants and their sources: "
                    f"vramplan/measure/overheads.py)\n{cuda_assumptions()}")
    return None


def cuda_assumptions() -> str:
    """What every CUDA figure is: modelled from PyTorch's source, not measured, and on what assumptions."""
    from ..measure import overheads

    mib = overheads.MiB
    return (
        "CUDA figures are modelled from PyTorch's caching-allocator and kernel source, not measured on a GPU: "
        f"an H100 (sm90) with default allocator settings, cuBLAS workspace {overheads.CUBLAS_WORKSPACE_BYTES // mib} MiB "
        f"+ cuBLASLt {overheads.CUBLASLT_WORKSPACE_BYTES // mib} MiB, CUDA context estimated at "
        f"{overheads.CUDA_CONTEXT_BYTES // mib} MiB; cuDNN convolution workspaces not included "
        "(docs/accuracy.md)"
    )
