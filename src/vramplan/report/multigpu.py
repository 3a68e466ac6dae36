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


def split_title(result: ModelResult) -> str:
    gpus = next(s.gpus for s in result.splits if s is not None)
    return f"`{result.model}` over {gpus} GPUs (device_map='auto')"


def split_lines(result: ModelResult) -> list[str]:
    """The boxed split table and how it was made, when --gpus was asked."""
    if not any(s is not None for s in result.splits):
        return []
    from accelerate.commands.estimate import create_ascii_table

    title = split_title(result)
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


# --- estimate/report --mode train --gpus N: the plans of each training case ----------------------------------------

PARALLEL_ROWS = ("Weights", "Grads", "Optim", "Comm", "Activ", "per GPU", "on card", "CPU/node", "peak in")
_PHASE = {"forward": "fwd", "backward": "bwd", "optimizer step": "step"}


def strategy_label(plan) -> str:
    """`zero3+optimizer`, as --strategy spells it."""
    return plan.strategy + (f"+{plan.offload}" if plan.offload != "none" else "")


def parallel_words(plans) -> list[str]:
    """The flags that ask for these plans again: --gpus, --nodes, --strategy (offloads as +suffixes)."""
    first = plans[0]
    words = ["--gpus", str(first.gpus)] + (["--nodes", str(first.nodes)] if first.nodes > 1 else [])
    words += ["--strategy", ",".join(strategy_label(p) for p in plans)]
    return words + (["--grad-accum", str(first.grad_accum)] if first.grad_accum > 1 else [])


def parallel_groups(result: ModelResult) -> list[tuple[str, list]]:
    """(case label, its TrainingPlans) per training case, in the run's order."""
    from .training import training_case_label, varying_fields

    varying = varying_fields([p.measurement.case for p in result.plans])
    groups: dict[int, tuple[str, list]] = {}
    for p in result.plans:
        groups.setdefault(id(p.measurement), (training_case_label(p.measurement.case, varying), []))[1].append(p)
    return list(groups.values())


def parallel_table(plans) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one case: a column per strategy, a row per part of the busiest rank's peak.

    Strategies run across, so five of them fit in 80 columns.
    """
    from .table import binary_bytes

    columns = []
    for p in plans:
        peak = p.peak
        columns.append([*(binary_bytes(v) for v in (
            peak.parameter_bytes + peak.buffer_bytes, peak.gradient_bytes, peak.optimizer_state_bytes,
            peak.comm_bytes, peak.activation_bytes, peak.per_gpu_peak_bytes, p.per_gpu_device_bytes)),
            binary_bytes(peak.cpu_bytes_per_node) if peak.cpu_bytes_per_node else "-",
            _PHASE.get(peak.peak_phase, peak.peak_phase)])
    header = ["", *(strategy_label(p.peak.plan) for p in plans)]
    return header, [[name, *(c[i] for c in columns)] for i, name in enumerate(PARALLEL_ROWS)]


def parallel_title(result: ModelResult, case: str = "") -> str:
    plan = result.plans[0].peak.plan
    nodes = f" x {plan.nodes} nodes" if plan.nodes > 1 else ""
    return f"Training `{result.model}`{' ' + case if case else ''} on {plan.gpus} GPUs per node{nodes}, busiest rank"


def parallel_notes(result: ModelResult) -> list[str]:
    """What the columns mean, then each strategy's own notes, once."""
    lines = ["per GPU = max allocated of the busiest rank (Weights + Grads + Optim + Comm + Activ); on card adds "
             "the one-GPU case's context and allocator cache; CPU/node = offloaded states of one node's GPUs; "
             "--batch-size is per GPU; derived from each one-GPU case above, as `vramplan plan` does."]
    return lines + list(dict.fromkeys(n for p in result.plans for n in p.peak.notes))


def parallel_lines(result: ModelResult, width: int = 100) -> list[str]:
    """The per-GPU table of each training case and strategy, when --mode train --gpus N asked for it."""
    if not result.plans:
        return []
    import textwrap

    from .table import render_table

    lines = []
    for case, plans in parallel_groups(result):
        header, rows = parallel_table(plans)
        lines += [*textwrap.wrap(parallel_title(result, case), width),
                  render_table(header, rows, width=width, numeric=range(1, len(header))).rstrip("\n")]
    return lines + [line for note in parallel_notes(result) for line in textwrap.wrap(note, width)]


def parallel_training_json(result: ModelResult) -> list[dict]:
    """The `training` list with plans: an entry per case and strategy (failed cases keep their one entry)."""
    out: list[dict] = []
    for item in result.training:
        if not hasattr(item, "peak_allocated_bytes"):  # a TrainingFailure
            out.append({**item.case.as_json(), "error": item.reason})
            continue
        out += [p.as_json() for p in result.plans if p.measurement is item]
    return out


PARALLEL_CSV_COLUMNS = ("gpus", "nodes", "strategy", "offload", "per_gpu_peak_bytes", "per_gpu_device_bytes",
                        "cpu_bytes_per_node")


def parallel_csv_rows(result: ModelResult, columns: tuple[str, ...]) -> list[list]:
    """CSV rows, a row per case and strategy, in `columns` (the training columns, then PARALLEL_CSV_COLUMNS)."""
    rows = []
    for entry in parallel_training_json(result):
        h, w = entry.get("image_size") or ("", "")
        head = [result.model, "error" if "error" in entry else "ok", entry.get("error", ""), h, w,
                entry.get("seq_len", "")]
        rows.append(head + ["" if entry.get(c) is None else entry.get(c) for c in columns[6:]])
    return rows
