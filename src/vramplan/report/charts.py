"""What the charts show, as plain data: shared by the HTML report's SVG and `--plot`'s matplotlib figure."""

from __future__ import annotations

from dataclasses import dataclass

from ..results import InferenceFailure, RunResult, TrainingFailure
from .inference import case_input

# torch's MemTracker names (Parameter, Buffer, Gradient, Optstate, Activation, Temp), then the device's own.
CATEGORIES = ("Parameter", "Buffer", "Gradient", "Optstate", "Activation", "Temp", "allocator cache", "CUDA context")
COLOURS = {
    "Parameter": "#4e79a7", "Buffer": "#76b7b2", "Gradient": "#f28e2b", "Optstate": "#edc948",
    "Activation": "#e15759", "Temp": "#b07aa1", "allocator cache": "#9c755f", "CUDA context": "#bab0ac",
}
SERIES_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                  "#9c755f", "#bab0ac", "#1b9e77", "#d95f02")


@dataclass(frozen=True)
class Breakdown:
    """One bar: a model's peak split into categories (bytes)."""

    model: str
    parts: tuple[tuple[str, int], ...]
    caption: str  # what the bar is: the case, or the weights dtype

    @property
    def total(self) -> int:
        return sum(v for _, v in self.parts)


@dataclass(frozen=True)
class Series:
    """One line: a model's peak on the card against an input size or a batch size."""

    model: str
    points: tuple[tuple[str, int], ...]  # (x label, bytes)


def simulated(model) -> list:
    """The model's simulated cases that ran: its inference cases, or its training cases."""
    done = [i for i in model.inference if not isinstance(i, InferenceFailure)]
    return done or [t for t in model.training if not isinstance(t, TrainingFailure)]


def setting(case) -> tuple:
    """What a case runs at, less its input and batch: the dtype and attention, or the training configuration."""
    if hasattr(case, "precision"):
        return (case.precision, case.optimizer, case.freeze, case.lora_rank, case.grad_checkpointing, case.attn)
    return (case.dtype, case.attn)


def caption_of(case) -> str:
    """`224px, batch 1, bfloat16`, or for a training case `224px, batch 8, amp-bf16, adamw, training`."""
    if hasattr(case, "precision"):
        return f"{case_input(case)}, batch {case.batch_size}, {case.precision}, {case.optimizer}, training"
    return f"{case_input(case)}, batch {case.batch_size}, {case.dtype}"


def breakdowns(run: RunResult) -> list[Breakdown]:
    """Each model's first simulated case, by category; the float32 (or first) weights when nothing was simulated."""
    bars = []
    for model in run.models:
        first = next(iter(simulated(model)), None)
        if first is not None:
            extra = dict(first.overheads)
            values = {
                "Parameter": first.parameter_bytes, "Buffer": first.buffer_bytes, "Activation": first.activation_bytes,
                "Temp": first.temp_bytes, "CUDA context": extra.get("CUDA context", 0),
                "allocator cache": extra.get("allocator cache (reserved - allocated)", 0),
                "Gradient": getattr(first, "gradient_bytes", 0), "Optstate": getattr(first, "optimizer_state_bytes", 0),
            }
            caption = caption_of(first.case)
        elif model.weights is not None:
            row = model.weights.rows[0]
            values, caption = {"Parameter": int(row.total_bytes)}, f"weights, {row.dtype}"
        else:
            continue
        bars.append(Breakdown(model.model, tuple((c, int(values.get(c, 0))) for c in CATEGORIES), caption))
    return bars


def used_categories(bars: list[Breakdown]) -> list[str]:
    return [c for c in CATEGORIES if any(dict(b.parts)[c] for b in bars)]


def by_input_size(run: RunResult) -> list[Series]:
    """Peak on the card against input size, at the first batch and setting (dtype and attention, or training's) of
    the sweep."""
    return _series(run, lambda case, first: (case.batch_size, setting(case)) == first[1:],
                   lambda case: case_input(case))


def by_batch(run: RunResult) -> list[Series]:
    """Peak on the card against batch size, at the first input size and setting of the sweep."""
    return _series(run, lambda case, first: (case_input(case), setting(case)) == (first[0], first[2]),
                   lambda case: str(case.batch_size))


def _series(run: RunResult, keep, x_of) -> list[Series]:
    out = []
    for model in run.models:
        done = simulated(model)
        if not done:
            continue
        c0 = done[0].case
        first = (case_input(c0), c0.batch_size, setting(c0))
        points, seen = [], set()
        for item in done:
            x = x_of(item.case)
            if keep(item.case, first) and x not in seen:
                seen.add(x)
                points.append((x, item.peak_device_bytes))
        if len(points) > 1:
            out.append(Series(model.model, tuple(points)))
    return out
