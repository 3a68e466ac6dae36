"""The fit matrix (models x cards, one per input size) and the GPU catalogue, as text and Markdown."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from ..results import RunResult
from .cells import format_bytes


def fit_sizes(run: RunResult) -> list[Any]:
    """The input sizes of the fit, in the order first met: (h, w) tuples or sequence lengths."""
    if run.fit is None:
        return []
    if run.fit.max_image_size:
        return [("batch", run.fit.batch_size)]
    seen: list[Any] = []
    for model in run.models:
        for cell in model.fit:
            key = cell.image_size if cell.image_size is not None else cell.seq_len
            if key not in seen:
                seen.append(key)
    return seen


def fit_gpus(run: RunResult) -> list[Any]:
    return list(run.fit.gpus) if run.fit is not None else []


def size_title(key: Any) -> str:
    if isinstance(key, tuple) and key and key[0] == "batch":
        return f"batch {key[1]}"
    if isinstance(key, tuple):
        h, w = key
        return f"{h}px" if h == w else f"{h}x{w}px"
    return f"{key} tokens"


def cell_for(model, gpu, key, run: RunResult):
    """The model's cell for this card and input size, or None."""
    for cell in model.fit:
        if cell.gpu != gpu:
            continue
        if run.fit.max_image_size or (cell.image_size if cell.image_size is not None else cell.seq_len) == key:
            return cell
    return None


def cell_text(cell) -> str:
    """`141`, `0 (needs 30.2 GB)`, `1024px` with --max-image-size, or `error`."""
    if cell is None:
        return "-"
    if cell.error:
        return "error"
    if cell.largest_image_size is not None:
        return f"{cell.largest_image_size}px" if cell.largest_image_size else f"none ({format_bytes(cell.peak_device_bytes)})"
    if cell.largest_batch_size == 0:
        return f"0 (needs {format_bytes(cell.peak_device_bytes)})"
    return str(cell.largest_batch_size)


def fit_title(run: RunResult) -> str:
    request = run.fit
    what = "Largest square input that fits" if request.max_image_size else "Largest batch that fits"
    headroom = f", {request.headroom_percent:g}% headroom" if request.headroom_percent else ""
    if request.training is not None:
        return f"{what} (training: {', '.join(training_settings(request.training))}, {request.attn}{headroom})"
    dtype = request.dtype or "bfloat16 or float16"
    return f"{what} ({request.mode}, {dtype}, {request.attn}{headroom})"


def training_settings(training) -> list[str]:
    """What a training fit keeps fixed: precision, optimizer, what trains, checkpointing."""
    trains = training.trains[0] if training.trains else "full"
    settings = [training.precisions[0] if training.precisions else "amp-bf16 or amp-fp16", training.optimizers[0],
                f"lora-{training.lora_rank}" if trains == "lora" else trains]
    return settings + (["checkpointing"] if training.grad_checkpointing else [])


def fit_tables(run: RunResult) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per input size: a row per model, a column per card."""
    gpus = fit_gpus(run)
    tables = []
    for key in fit_sizes(run):
        rows = [[m.model, *(cell_text(cell_for(m, g, key, run)) for g in gpus)] for m in run.models]
        tables.append((f"{fit_title(run)}: {size_title(key)}", ["Model", *(g.name for g in gpus)], rows))
    return tables


def precision_rows(run: RunResult) -> list[list[str]]:
    """The least lossy precision whose batch 1 fits, per model and card (the last input size, as titled)."""
    gpus, sizes = fit_gpus(run), fit_sizes(run)
    if not sizes or run.fit.max_image_size or run.fit.training is not None:
        return []
    rows = []
    for model in run.models:
        cells = [cell_for(model, g, sizes[-1], run) for g in gpus]
        rows.append([model.model, *((c.cheapest_precision or "none") if c and not c.error else "-" for c in cells)])
    return rows


def render_fit_text(run: RunResult) -> str:
    """Aligned plain-text matrices, then the precision matrix and the fitting rule."""
    blocks = [_aligned(title, header, rows) for title, header, rows in fit_tables(run)]
    precision = precision_rows(run)
    if precision:
        last = size_title(fit_sizes(run)[-1])
        header = ["Model", *(g.name for g in fit_gpus(run))]
        blocks.append(_aligned(f"Least lossy precision whose batch 1 fits ({last})", header, precision))
    blocks.append(fit_legend(run))
    errors = [f"{m.model} on {c.gpu.name}: {c.error}" for m in run.models for c in m.fit if c.error]
    errors += [f"{m.model}: {m.error}" for m in run.models if m.error and not m.fit]
    return "\n\n".join(blocks + (["Errors:\n" + "\n".join(errors)] if errors else [])) + "\n"


def render_fit_markdown(run: RunResult) -> str:
    blocks = []
    for title, header, rows in fit_tables(run):
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        blocks.append("\n".join(lines))
    blocks.append(fit_legend(run))
    return "\n\n".join(blocks) + "\n"


def fit_legend(run: RunResult) -> str:
    cards = "; ".join(f"{g.name} = {g.label}, {format_bytes(g.memory_bytes)}" for g in fit_gpus(run))
    training = run.fit.training
    if training is not None:
        step = ("the peak of two simulated training steps (forward, backward, optimizer step; weights, gradients, "
                "optimizer state and activations) on the card")
        auto = "" if training.precisions else " amp-bf16, or amp-fp16 on cards without bfloat16 (T4, V100)."
    else:
        step = "the simulated peak on the card"
        auto = "" if run.fit.dtype else " bfloat16, or float16 on cards without it (T4, V100)."
    text = (f"Fits: {step} (allocator segments, CUDA context and workspaces included) "
            f"is at most the card's memory as the driver reports it, less the headroom.{auto} Cards: {cards}.")
    return textwrap.fill(text, 80)


def _aligned(title: str, header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i in left else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    rule = "-" * max(len(line(r)) for r in [header, *rows])
    title = textwrap.fill(title.replace(" tokens", "\xa0tokens"), 80, subsequent_indent="  ").replace("\xa0", " ")
    return "\n".join([title, line(header), rule, *(line(r) for r in rows)])


def render_gpus_table(gpus) -> str:
    header = ["name", "memory", "vendor", "arch", "SMs", "bf16", "fp8", "aliases"]
    rows = [[g.name, format_bytes(g.memory_bytes), g.vendor, g.compute_capability, str(g.sm_count),
             "yes" if g.bf16 else "no", "yes" if g.fp8 else "no", ", ".join(g.aliases[:2])] for g in gpus]
    title = "GPU targets (memory as the driver reports it; sources: vramplan/plan/gpus.json)"
    return _aligned(title, header, rows, left=(0, 7)) + "\n"


def render_gpus_json(gpus) -> str:
    return json.dumps({"gpus": [g.as_json() for g in gpus]}, indent=2) + "\n"
