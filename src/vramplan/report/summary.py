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
    return ["Model", *run.dtypes, *inference_labels(run), *training_labels(run), "status"]


def summary_cells(result: ModelResult, run: RunResult) -> list[str]:
    """One summary row: total size per dtype, peak on the card per inference case, then the status."""
    cases = ["-"] * len(inference_labels(run))
    for i, item in enumerate(result.inference[: len(cases)]):
        cases[i] = "error" if isinstance(item, InferenceFailure) else format_bytes(item.peak_device_bytes)
    cases += training_cells(result, run)
    if result.weights is None:
        return [result.model, *("-" for _ in run.dtypes), *cases, status_text(result)]
    sizes = [format_bytes(result.weights.row(dtype).total_bytes) for dtype in run.dtypes]
    return [result.model, *sizes, *cases, status_text(result)]


def training_labels(run: RunResult) -> list[str]:
    """Column labels of the training cases, from the model that has the most of them."""
    from .training import training_case_label, varying_fields

    if run.training is None:
        return []
    longest = [item.case for item in max((m.training for m in run.models), key=len, default=())]
    return [training_case_label(case, varying_fields(longest)) for case in longest]


def training_cells(result: ModelResult, run: RunResult) -> list[str]:
    """Peak on the card per training case (binary units), "error" or "-"."""
    from ..results import TrainingFailure
    from .training import format_binary

    cells = ["-"] * len(training_labels(run))
    for i, item in enumerate(result.training[: len(cells)]):
        cells[i] = "error" if isinstance(item, TrainingFailure) else format_binary(item.peak_device_bytes)
    return cells


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
        f"Inference columns: peak memory on the card for one forward (simulated {request.device}, "
        f"{', '.join(request.dtypes)}, {', '.join(request.attns)} attention), weights included"
    )


def training_legend(run: RunResult) -> str | None:
    """What the training columns of the summary hold."""
    request = run.training
    if request is None:
        return None
    return (
        f"Training columns: peak memory on the card over two training steps (simulated {request.device}, "
        f"{', '.join(request.precisions)}, {', '.join(request.optimizers)}), weights included; probe = frozen "
        f"backbone + linear head"
    )


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
    if run.training is not None:
        words += training_words(run.training)
    return shlex.join(words)


def training_words(request) -> list[str]:
    """The `--mode train` flags that ask for this training sweep again."""
    words = ["--mode", "train"]
    if request.image_sizes:
        words += ["--image-size", ",".join(f"{h}" if h == w else f"{h}x{w}" for h, w in request.image_sizes)]
    if request.seq_lens:
        words += ["--seq-len", ",".join(map(str, request.seq_lens))]
    words += ["--batch-size", ",".join(map(str, request.batch_sizes)), "--precision", ",".join(request.precisions),
              "--optimizer", ",".join(request.optimizers), "--attn", ",".join(request.attns),
              "--device", request.device, "--trains", ",".join(request.trains)]
    if "lora" in request.trains:
        words += ["--lora-rank", str(request.lora_rank)]
        if request.lora_targets:
            words += ["--lora-targets", ",".join(request.lora_targets)]
    if request.grad_checkpointing:
        words.append("--grad-checkpointing")
    if request.num_labels != 1000:
        words += ["--num-labels", str(request.num_labels)]
    return words
