"""Will it fit: the largest batch (or square input) whose simulated peak fits on a card.

The search only needs `peak_for(batch) -> bytes`, the peak on the card of one step at that batch,
so any mode that can simulate a step plugs in: inference (`inference_peak`: one forward) and
training (`training_peak`: two simulated training steps, gradients and optimizer state included).

The search gallops from a first guess and then bisects, remembering every simulation: the peak
grows almost linearly with the batch, so the line through batch 1 and batch 2 lands next to the
answer, and a handful of simulations settle it (`FitCell.simulations` says how many).

Known limitations:
    - Fitting means the simulated peak on the card (`peak_device_bytes`: allocator segments,
      CUDA context) is at most the card's memory less the headroom. The simulation assumes
      unlimited memory; near the limit the real allocator frees cached segments and retries,
      so a batch found here may leave a little memory unused (errs low, which is safe).
    - The peak is assumed to grow with the batch (and the input size): the search trusts that.
    - Batches are searched up to `MAX_BATCH`, input sizes in steps of the model's patch size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import SimulationError, UsageError
from .gpus import GpuSpec

if TYPE_CHECKING:
    import torch.nn as nn

    from ..measure.activations import InferenceCase
    from ..measure.training import TrainingCase

MODES = ("inference", "train")
MAX_BATCH = 1 << 16
MAX_IMAGE_STEPS = 1 << 10  # 16 px patches: up to 16384 px
MAX_STEP = 256  # the largest step the square search tries for a model without a patch size
SECANT_STEPS = 3

PeakFn = Callable[[int], int]


@dataclass(frozen=True)
class FitRequest:
    """What to fit: targets, mode, inputs, precision, headroom; `max_image_size` searches sizes instead."""

    gpus: tuple[GpuSpec, ...]
    mode: str = "inference"
    image_sizes: tuple[tuple[int, int], ...] = ()
    seq_lens: tuple[int, ...] = ()
    dtype: str | None = None  # None: bfloat16 where the card has it, float16 elsewhere
    attn: str = "sdpa"
    headroom_percent: float = 0.0
    max_image_size: bool = False
    batch_size: int = 1  # the batch at which --max-image-size searches
    # --mode train: a measure.training_cases.TrainingRequest with one optimizer and one "trains", and one
    # precision or none (then amp-bf16, or amp-fp16 on cards without bfloat16); its sizes, batches and card are
    # replaced by the fit's own
    training: Any = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"fit mode `{self.mode}` is not one of {', '.join(MODES)}")
        if self.mode == "train" and self.training is None:
            from ..measure.training_cases import TrainingRequest

            object.__setattr__(self, "training", TrainingRequest(precisions=()))  # adamw, full, amp per card
        elif self.mode != "train" and self.training is not None:
            raise UsageError("training settings go with fit mode `train`")


@dataclass(frozen=True)
class FitCell:
    """The answer for one (model, card, input size)."""

    gpu: GpuSpec
    mode: str
    dtype: str
    attn: str
    image_size: tuple[int, int] | None
    seq_len: int | None
    largest_batch_size: int  # 0 when batch 1 does not fit; with max_image_size: the batch searched at
    peak_device_bytes: int  # at the answer (at batch 1 / the smallest input when nothing fits)
    memory_bytes: int
    headroom_bytes: int  # kept free by --headroom: the peak must stay within memory - headroom
    simulations: int
    cheapest_precision: str | None = None  # the least lossy float dtype whose batch 1 fits
    largest_image_size: int | None = None  # with max_image_size: the largest square side that fits (0: none)
    error: str | None = None
    training: Any = None  # mode "train": the TrainingCase searched (at batch 1): precision, optimizer, what trains

    @property
    def limit_bytes(self) -> int:
        return self.memory_bytes - self.headroom_bytes

    def as_json(self) -> dict[str, Any]:
        """An entry of the model's JSON `"fit"` list."""
        size = {"image_size": list(self.image_size)} if self.image_size is not None else {"seq_len": self.seq_len}
        entry: dict[str, Any] = {
            "gpu": self.gpu.name, "mode": self.mode, **size, "largest_batch_size": self.largest_batch_size,
            "peak_device_bytes": self.peak_device_bytes, "memory_bytes": self.memory_bytes,
            "headroom_bytes": self.headroom_bytes, "dtype": self.dtype, "attn": self.attn,
            "cheapest_precision": self.cheapest_precision, "simulations": self.simulations,
        }
        if self.training is not None:
            case = self.training
            entry.update(precision=case.precision, optimizer=case.optimizer, trains=trains_label(case),
                         grad_checkpointing=case.grad_checkpointing)
        if self.largest_image_size is not None:
            entry["largest_image_size"] = self.largest_image_size
        if self.error:
            entry["error"] = self.error
        return entry


def largest_fitting(peak_for: PeakFn, limit: int, upper: int = MAX_BATCH,
                    slope_hint: float | None = None) -> tuple[int, dict[int, int]]:
    """The largest n in [1, upper] with peak_for(n) <= limit (0 if none), and the peaks simulated.

    `slope_hint`, bytes per sample from a similar search (the same model and input on another
    card), replaces the probe at n=2 with a first guess from n=1.
    A few secant steps (the line through the last two peaks) land next to the answer; from the
    nearest simulated n on each side the search gallops (steps 1, 2, 4, ...) until the answer is
    bracketed, then bisects. Each n is simulated at most once.
    """
    peaks: dict[int, int] = {}

    def fits(n: int) -> bool:
        if n not in peaks:
            peaks[n] = peak_for(n)
        return peaks[n] <= limit

    if not fits(1):
        return 0, peaks
    if upper == 1:
        return 1, peaks
    b = 2 if not slope_hint else int(min(upper, max(2, 1 + (limit - peaks[1]) // slope_hint)))
    if not fits(b) and b == 2:
        return 1, peaks
    a = 1
    while peaks[b] == peaks[a] and b < upper and fits(b):  # small batches can share blocks: look further
        b = min(upper, b * 8)
        fits(b)
    for _ in range(SECANT_STEPS):
        slope = (peaks[b] - peaks[a]) / (b - a)
        if slope <= 0:
            break
        guess = int(min(upper, max(2, b + (limit - peaks[b]) // slope)))
        if guess in peaks:
            break
        fits(guess)
        a, b = b, guess
    lo = max(n for n in peaks if peaks[n] <= limit)
    hi = min((n for n in peaks if n > lo), default=None)
    step, galloped = 1, hi is None
    while hi is None:  # nothing fails yet: gallop up
        if lo == upper:
            return lo, peaks
        probe = min(upper, lo + step)
        lo, hi, step = (probe, None, step * 2) if fits(probe) else (lo, probe, step)
    # After the secant, gallop from the side whose peak is nearer the limit until the answer is
    # bracketed closely (the answer is usually next to a secant guess); then bisect.
    up = limit - peaks[lo] <= peaks[hi] - limit
    step = 1
    while hi - lo > 1 and not galloped:
        probe = min(hi - 1, lo + step) if up else max(lo + 1, hi - step)
        ok = fits(probe)
        lo, hi = (probe, hi) if ok else (lo, probe)
        if ok != up:
            break
        step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, peaks


def trains_label(case: Any) -> str:
    """What trains in a training case: full, probe (the head only) or lora-R."""
    return f"lora-{case.lora_rank}" if case.lora_rank else ("probe" if case.freeze == "backbone" else "full")


def step_peak(model: "nn.Module", case: Any, reference: str) -> int:
    """The simulated peak on the card of one inference case or of two training steps of a training case."""
    from ..measure.training import TrainingCase, measure_training

    if isinstance(case, TrainingCase):
        return measure_training(model, case, reference=reference).peak_device_bytes
    from ..measure.activations import measure_inference

    return measure_inference(model, case, reference=reference).peak_device_bytes


def inference_peak(model: "nn.Module", case: "InferenceCase", reference: str) -> PeakFn:
    """peak_for(batch) for the inference mode: the simulated peak on the card at that batch."""
    return lambda batch: step_peak(model, replace(case, batch_size=batch), reference)


def training_peak(model: "nn.Module", case: "TrainingCase", reference: str) -> PeakFn:
    """peak_for(batch) for the training mode: the peak on the card of two simulated steps at that batch."""
    return lambda batch: step_peak(model, replace(case, batch_size=batch), reference)


def fit_model(model: "nn.Module", request: FitRequest, reference: str) -> tuple[FitCell, ...]:
    """One cell per (card, input size) of the request, in that order; a cell that cannot be simulated carries its error."""
    if request.mode == "train":
        from ..measure.training import forget_trainees

        slopes: dict = {}
        try:
            return tuple(_fit_cell(model, case, request, reference, slopes)
                         for case in _training_cases(model, request, reference))
        finally:
            forget_trainees(model)
    from ..measure.cases import InferenceRequest, cases_for

    cells = []
    slopes: dict = {}  # (input size, dtype) -> bytes per sample found on an earlier card
    for gpu in request.gpus:
        dtype = request.dtype or ("bfloat16" if gpu.bf16 else "float16")
        sizes = InferenceRequest(image_sizes=request.image_sizes, seq_lens=request.seq_lens, dtypes=(dtype,),
                                 attns=(request.attn,), gpu=gpu)
        cases = cases_for(model, sizes, reference)
        for case in cases[:1] if request.max_image_size else cases:
            cells.append(_fit_cell(model, case, request, reference, slopes))
    return tuple(cells)


def _training_cases(model: "nn.Module", request: FitRequest, reference: str) -> list:
    """The training case (at batch 1) of each (card, input size), in that order."""
    from ..measure.training_cases import training_cases_for

    training = request.training
    cases = []
    for gpu in request.gpus:
        precision = training.precisions[:1] or (("amp-bf16",) if gpu.bf16 else ("amp-fp16",))
        sizes = replace(training, image_sizes=request.image_sizes, seq_lens=request.seq_lens,
                        batch_sizes=(1,), precisions=precision, attns=(request.attn,), device="cuda", gpu=gpu)
        found = training_cases_for(model, sizes, reference)
        cases += found[:1] if request.max_image_size else found
    return cases


def _fit_cell(model: "nn.Module", case: Any, request: FitRequest, reference: str, slopes: dict) -> FitCell:
    gpu = case.gpu
    headroom = int(gpu.memory_bytes * request.headroom_percent / 100)
    training = case if request.mode == "train" else None
    blank = FitCell(gpu=gpu, mode=request.mode, dtype=case.dtype, attn=case.attn, image_size=case.image_size,
                    seq_len=case.seq_len, largest_batch_size=0, peak_device_bytes=0, memory_bytes=gpu.memory_bytes,
                    headroom_bytes=headroom, simulations=0, training=training)
    limit = blank.limit_bytes
    try:
        if request.max_image_size:
            return _fit_image_size(model, replace(case, batch_size=request.batch_size), blank, reference)
        key = (case.image_size, case.seq_len, case.dtype, training and training.precision)
        peak_for = (training_peak if training is not None else inference_peak)(model, case, reference)
        best, peaks = largest_fitting(peak_for, limit, slope_hint=slopes.get(key))
        if best > 1:
            slopes[key] = (peaks[best] - peaks[1]) / (best - 1)
        cheapest = None if training is not None else _cheapest_precision(model, case, limit, reference)
    except SimulationError as exc:
        return replace(blank, error=exc.reason)
    return replace(blank, largest_batch_size=best, peak_device_bytes=peaks[max(best, 1)], simulations=len(peaks),
                   cheapest_precision=cheapest)


def _fit_image_size(model: "nn.Module", case: Any, blank: FitCell, reference: str) -> FitCell:
    """The largest square side, in steps of the model's patch size, that fits at the case's batch.

    Without a `patch_size` (a ConvNeXt, a timm or torch.hub model) the step is the smallest side from 16 px,
    doubling, that the model takes: a ConvNeXt's four stages downsample 32 times, so 16 px cannot run.
    """
    if case.image_size is None:
        raise UsageError("--max-image-size searches image sizes: it needs a vision model")
    step = int(getattr(getattr(model, "config", None), "patch_size", None) or 16)
    first: dict[int, int] = {}
    while True:
        try:
            first[step] = step_peak(model, replace(case, image_size=(step, step)), reference)
            break
        except SimulationError:
            if step >= MAX_STEP:
                raise
            step *= 2

    def peak_for(k: int) -> int:
        if k == 1:
            return first[step]
        side = k * step
        return step_peak(model, replace(case, image_size=(side, side)), reference)

    best, peaks = largest_fitting(peak_for, blank.limit_bytes, MAX_IMAGE_STEPS)
    side = max(best, 1) * step  # nothing fits: the smallest side tried, whose peak the cell keeps
    return replace(blank, largest_batch_size=case.batch_size if best else 0, image_size=(side, side),
                   peak_device_bytes=peaks[max(best, 1)], simulations=len(peaks),
                   largest_image_size=best * step)


def _cheapest_precision(model: "nn.Module", case: "InferenceCase", limit: int, reference: str) -> str | None:
    """The least lossy float dtype the card runs (float32, then bfloat16 or float16) whose batch 1 fits."""
    from ..measure.activations import measure_inference

    half = "bfloat16" if case.gpu.bf16 else "float16"
    for dtype in ("float32", half):
        try:
            peak = measure_inference(model, replace(case, batch_size=1, dtype=dtype), reference=reference)
        except SimulationError:
            continue
        if peak.peak_device_bytes <= limit:
            return dtype
    return None
