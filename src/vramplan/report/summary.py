"""What the text and Markdown reports share: the title, the summary cells, the reproducing command."""

from __future__ import annotations

import shlex

from ..results import ModelResult, RunResult
from ..results import InferenceFailure
from .cells import format_bytes
from .inference import case_label


def report_title(family_title: str | None) -> str:
    """The report's first line."""
    prefix = f"{family_title} " if family_title else ""
    return f"{prefix}VRAM Requirements (vramplan estimate)"


def summary_header(run: RunResult) -> list[str]:
    """Model, a column per weights dtype, a column per inference case (if any), status."""
    return ["Model", *run.dtypes, *inference_labels(run), "status"]


def summary_cells(result: ModelResult, run: RunResult) -> list[str]:
    """One summary row: total size per dtype, peak on the card per inference case, then the status."""
    cases = ["-"] * len(inference_labels(run))
    for i, item in enumerate(result.inference[: len(cases)]):
        cases[i] = "error" if isinstance(item, InferenceFailure) else format_bytes(item.peak_device_bytes)
    if result.weights is None:
        return [result.model, *("-" for _ in run.dtypes), *cases, status_text(result)]
    sizes = [format_bytes(result.weights.row(dtype).total_bytes) for dtype in run.dtypes]
    return [result.model, *sizes, *cases, status_text(result)]


def inference_labels(run: RunResult) -> list[str]:
    """Column labels of the inference cases, from the model that has the most of them."""
    if run.inference is None:
        return []
    longest = max((m.inference for m in run.models), key=len, default=())
    request = run.inference
    return [case_label(item.case, len(request.dtypes) > 1, len(request.attns) > 1) for item in longest]


def inference_legend(run: RunResult) -> str | None:
    """What the inference columns of the summary hold."""
    if run.inference is None:
        return None
    request = run.inference
    return (
        f"Inference columns: peak memory on the card for one forward (simulated {_target(run)}, "
        f"{', '.join(request.dtypes)}, {', '.join(request.attns)} attention), weights included"
    )


def _target(run: RunResult) -> str:
    from .inference import target_name

    for model in run.models:
        if model.inference:
            return target_name(model.inference[0].case)
    return target_name(None) if run.inference.device == "cuda" else run.inference.device


def status_text(result: ModelResult) -> str:
    return "ok" if result.ok else f"error: {result.error}"


def reproduce_command(result: ModelResult, run: RunResult) -> str:
    """The vramplan command that reproduces this model's table."""
    words = ["vramplan", "estimate", *(result.cli_args or (result.reference,))]
    if tuple(run.dtypes) != ("float32", "float16", "int8", "int4"):
        words += ["--dtypes", *run.dtypes]
    request = run.inference
    if request is not None:
        words += ["--mode", "inference"]
        if request.image_sizes:
            words += ["--image-size", ",".join(f"{h}" if h == w else f"{h}x{w}" for h, w in request.image_sizes)]
        if request.seq_lens:
            words += ["--seq-len", ",".join(map(str, request.seq_lens))]
        words += ["--batch-size", ",".join(map(str, request.batch_sizes)), "--dtype", ",".join(request.dtypes),
                  "--attn", ",".join(request.attns), "--device", request.device]
        if request.gpu is not None and request.device == "cuda":
            words += ["--memory", request.gpu.name.removeprefix("memory-")] if request.gpu.source == "--memory" \
                else ["--gpu", request.gpu.name]
    return shlex.join(words)
