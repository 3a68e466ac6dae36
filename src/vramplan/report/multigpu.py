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


PLAN_HEADERS = ("strategy", "offload", "GPUs", "Parameter", "Gradient", "Optstate", "comm", "Activation",
                "per GPU", "on the card", "CPU/node", "peak in")


def plan_rows(plans) -> list[list[str]]:
    """One row per strategy: the busiest rank's parts, its peak, the card's view, the host's CPU memory."""
    rows = []
    for p in plans:
        peak = p.peak
        gpus = f"{peak.plan.gpus}x{peak.plan.nodes}" if peak.plan.nodes > 1 else str(peak.plan.gpus)
        rows.append([peak.plan.strategy, peak.plan.offload, gpus, *(format_bytes(v) for v in (
            peak.parameter_bytes + peak.buffer_bytes, peak.gradient_bytes, peak.optimizer_state_bytes,
            peak.comm_bytes, peak.activation_bytes, peak.per_gpu_peak_bytes, p.per_gpu_device_bytes)),
            format_bytes(peak.cpu_bytes_per_node) if peak.cpu_bytes_per_node else "-", peak.peak_phase])
    return rows


def render_plans_text(results) -> str:
    """A boxed table per model, the one-GPU step it came from, and each strategy's notes."""
    from accelerate.commands.estimate import create_ascii_table

    blocks = []
    for result in results:
        if result.error:
            blocks.append(f"{result.model}: error: {result.error}")
            continue
        one = result.plans[0].measurement
        case = one.case
        title = f"Training `{result.model}` across GPUs (busiest rank)"
        lines = [create_ascii_table(list(PLAN_HEADERS), plan_rows(result.plans), title),
                 f"one GPU (simulated {case.device}, {case.precision}, {case.optimizer}, batch {case.batch_size} "
                 f"per GPU): {format_bytes(one.peak_allocated_bytes)} max allocated, "
                 f"{format_bytes(one.peak_device_bytes)} on the card, peak in {one.peak_phase}",
                 "per GPU = max allocated of the busiest rank; on the card adds the one-GPU case's context and "
                 "allocator cache; GPUs = per node x nodes"]
        if one.peak_phase != "backward" and any(p.peak.peak_phase == "backward" for p in result.plans):
            lines.append("a backward peak's Activation holds the gradients made by then, unsharded (the one-GPU "
                         "peak is elsewhere, so how many is not known): errs high")
        notes = dict.fromkeys(n for p in result.plans for n in p.peak.notes)
        lines += [f"- {n}" for n in notes]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def render_plans_json(results) -> str:
    """{"models": [{"model", "error", "training": [case + measurement + plan fields, ...]}]}."""
    import json

    models = [{"model": r.model, "status": "error" if r.error else "ok", "error": r.error,
               "training": [p.as_json() for p in r.plans]} for r in results]
    return json.dumps({"schema_version": 1, "models": models}, indent=2) + "\n"
