"""Training tables: the simulated peak of two training steps per case, in MemTracker's categories.

Sizes are in binary units (KiB, MiB, GiB), three significant digits, so a table of eight
sizes stays within 100 columns. The weights table's "Training using Adam" (accelerate's
weights x 4) is left as it is; this table says what the real step needs.
"""

from __future__ import annotations

from typing import Any

from ..results import ModelResult, TrainingFailure
from .inference import case_input
from .table import ERROR_CELL, render_table

HEADERS = ("case", "Weights", "Grads", "Optim", "Activ", "Temp", "max alloc", "on card", "peak in")
_PHASE = {"forward": "fwd", "backward": "bwd", "optimizer step": "step"}


def format_binary(size: int) -> str:
    """`512 B`, `1.50 KiB`, `12.3 MiB`, `123 GiB`: binary units, three significant digits."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{int(value)} B"
    digits = 2 if value < 10 else (1 if value < 100 else 0)
    return f"{value:.{digits}f} {unit}"


def trains_label(case: Any) -> str:
    """What trains: `full`, `probe` (frozen backbone) or `LoRA16` (rank 16), with `ckpt` for checkpointing."""
    what = "probe" if case.freeze == "backbone" else (f"LoRA{case.lora_rank}" if case.lora_rank else "full")
    return what + (" ckpt" if case.grad_checkpointing else "")


def training_case_label(case: Any, varying: set[str] = frozenset()) -> str:
    """`224px b32 probe`, with precision, optimizer and attention when they vary in the run."""
    parts = [case_input(case), f"b{case.batch_size}", trains_label(case)]
    parts += [getattr(case, name) for name in ("precision", "optimizer", "attn") if name in varying]
    return " ".join(parts)


def varying_fields(cases: list[Any]) -> set[str]:
    """Which of precision, optimizer and attention differ between the cases."""
    return {name for name in ("precision", "optimizer", "attn") if len({getattr(c, name) for c in cases}) > 1}


def training_rows(result: ModelResult, items: list[Any] | None = None) -> list[list[str]]:
    """One row per case: the parts, the two totals, and the phase of the peak; failures give their reason."""
    items = list(result.training) if items is None else items
    varying = varying_fields([item.case for item in items])
    rows = []
    for item in items:
        label = training_case_label(item.case, varying)
        if isinstance(item, TrainingFailure):  # the reason follows the table, once (`Error:` lines)
            rows.append([label, ERROR_CELL] + [""] * (len(HEADERS) - 2))
            continue
        rows.append([label, *(format_binary(v) for v in (
            item.parameter_bytes + item.buffer_bytes, item.gradient_bytes, item.optimizer_state_bytes,
            item.activation_bytes, item.temp_bytes, item.peak_allocated_bytes, item.peak_device_bytes,
        )), _PHASE.get(item.peak_phase, item.peak_phase)])
    return rows


def training_title(result: ModelResult, items: list[Any] | None = None) -> str:
    """The table's title: the model, the target and what all its cases share."""
    cases = [item.case for item in (list(result.training) if items is None else items)]
    first = cases[0]
    varying = varying_fields(cases)
    shared = [getattr(first, n) for n in ("precision", "optimizer", "attn") if n not in varying]
    target = first.device if first.gpu is None else f"{first.device} {first.gpu.name}"
    return f"Training peak of `{result.model}` (2 steps, simulated {target}, {', '.join(shared)})"


def render_training_text(result: ModelResult, width: int = 100) -> list[str]:
    """A table per (precision, optimizer, attention), titled, then the legend, as lines within `width` columns."""
    import textwrap

    if not result.training:
        return []
    groups: dict[tuple, list[Any]] = {}
    for item in result.training:
        groups.setdefault((item.case.precision, item.case.optimizer, item.case.attn), []).append(item)
    lines: list[str] = []
    for items in groups.values():
        table = render_table(HEADERS, training_rows(result, items), width=width, title=training_title(result, items),
                             numeric=range(1, len(HEADERS) - 1))
        lines += table.rstrip("\n").splitlines()
    return lines + textwrap.wrap(training_legend(), width)


def training_legend() -> str:
    return ("Weights = parameters + buffers; Optim = optimizer state; Temp = temporaries of the backward and "
            "the step, kernel buffers; peak in fwd, bwd or step (optimizer). \"Training using Adam\" = weights x 4.")


def training_json(result: ModelResult) -> list[dict[str, Any]]:
    """The model's JSON `training` list (failed cases carry `error`)."""
    return [
        {**item.case.as_json(), "error": item.reason} if isinstance(item, TrainingFailure) else item.as_json()
        for item in result.training
    ]


TRAINING_CSV_COLUMNS = (
    "model", "status", "error", "image_height", "image_width", "seq_len", "batch_size", "precision", "optimizer",
    "attn", "device", "grad_checkpointing", "freeze", "lora_rank", "parameter_bytes", "buffer_bytes",
    "gradient_bytes", "optimizer_state_bytes", "activation_bytes", "temp_bytes", "peak_allocated_bytes",
    "peak_device_bytes", "peak_phase",
)


def training_csv_rows(result: ModelResult) -> list[list[Any]]:
    """CSV rows, one per case (one bare row for a model with none)."""
    if not result.training:
        return [[result.model, result.status, result.error or ""] + [""] * (len(TRAINING_CSV_COLUMNS) - 3)]
    rows = []
    for entry in training_json(result):
        h, w = entry.get("image_size") or ("", "")
        head = [result.model, "error" if "error" in entry else "ok", entry.get("error", ""), h, w,
                entry.get("seq_len", "")]
        rest = ["" if entry.get(c) is None else entry.get(c) for c in TRAINING_CSV_COLUMNS[6:]]
        rows.append(head + rest)
    return rows
