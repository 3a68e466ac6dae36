"""What the text and Markdown reports share: the title, the summary cells, the reproducing command."""

from __future__ import annotations

import shlex

from ..results import ModelResult, RunResult
from ..results import InferenceFailure
from .cells import format_bytes
from .inference import case_input, case_label, cuda_assumptions
from .table import ERROR_CELL, binary_bytes


def report_title(family_title: str | None) -> str:
    """The report's first line."""
    prefix = f"{family_title} " if family_title else ""
    return f"{prefix}VRAM Requirements (vramplan estimate)"


def summary_header(run: RunResult, *, training: bool = True) -> list[str]:
    """Model, a column per weights dtype, a column per inference case (if any), per training case (unless
    `training` is False: the training summary is then a table of its own), status."""
    return ["Model", *run.dtypes, *inference_labels(run), *(training_labels(run) if training else ()), "status"]


def summary_cells(result: ModelResult, run: RunResult, *, training: bool = True) -> list[str]:
    """One summary row: total size per dtype, peak on the card per inference (and training) case, the status."""
    cases = ["-"] * len(inference_labels(run))
    for i, item in enumerate(result.inference[: len(cases)]):
        cases[i] = "error" if isinstance(item, InferenceFailure) else binary_bytes(item.peak_device_bytes)
    cases += training_cells(result, run) if training else []
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
    labels = []
    for i, item in enumerate(longest):
        label = case_label(item.case, len(request.dtypes) > 1, len(request.attns) > 1)
        # Models of different kinds (an image and an audio model, each at its default) share a column.
        if len({case_input(m.inference[i].case) for m in run.models if len(m.inference) > i}) > 1:
            label = label.replace(case_input(item.case), "mixed inputs", 1)
        labels.append(label)
    return labels


def inference_legend(run: RunResult) -> str | None:
    """What the inference columns of the summary hold."""
    if run.inference is None:
        return None
    request = run.inference
    legend = (
        f"Inference columns: peak memory on the card for one forward (simulated {_target(run)}, "
        f"{', '.join(request.dtypes)}{_autocast_words(request)}, {', '.join(request.attns)} attention), "
        "weights included"
    )
    return f"{legend}\n{cuda_assumptions()}" if request.device == "cuda" else legend


def _target(run: RunResult) -> str:
    from .inference import target_name

    for model in run.models:
        if model.inference:
            return target_name(model.inference[0].case)
    return target_name(None) if run.inference.device == "cuda" else run.inference.device


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
    """`ok`, or a compact cell: the reason follows in the model's section (and once on stderr)."""
    return "ok" if result.ok else ERROR_CELL


def inference_summary(run: RunResult) -> tuple[list[str], list[list[str]]]:
    """Peak on the card per model and (batch, dtype, attention), a column per input size: narrow at any sweep."""
    request = run.inference
    many_dtypes, many_attns = len(request.dtypes) > 1, len(request.attns) > 1
    names = ["batch", *(["dtype"] if many_dtypes else []), *(["attn"] if many_attns else [])]

    def key(case) -> tuple:
        return (str(case.batch_size), *([case.dtype] if many_dtypes else []), *([case.attn] if many_attns else []))

    return _peaks_by_input(run, lambda m: m.inference, names, key)


def training_summary(run: RunResult) -> tuple[list[str], list[list[str]]]:
    """Peak on the card per model and (what trains, batch, precision, optimizer), a column per input size."""
    from .training import trains_label

    cases = [item.case for m in run.models for item in m.training]
    many_precisions = len({c.precision for c in cases}) > 1
    many_optimizers = len({c.optimizer for c in cases}) > 1
    names = ["trains", "batch", *(["precision"] if many_precisions else []),
             *(["optimizer"] if many_optimizers else [])]

    def key(case) -> tuple:
        return (trains_label(case), str(case.batch_size), *([case.precision] if many_precisions else []),
                *([case.optimizer] if many_optimizers else []))

    return _peaks_by_input(run, lambda m: m.training, names, key)


def _peaks_by_input(run: RunResult, items_of, names: list[str], key_of) -> tuple[list[str], list[list[str]]]:
    """A row per model and case key, a column per input size; a failed case is `error`, a missing one `-`."""
    from ..results import TrainingFailure

    inputs = list(dict.fromkeys(case_input(item.case) for m in run.models for item in items_of(m)))
    header = ["Model", *names, *inputs]
    rows: list[list[str]] = []
    for model in run.models:
        groups: dict[tuple, dict[str, str]] = {}
        for item in items_of(model):
            failed = isinstance(item, (InferenceFailure, TrainingFailure))
            cell = "error" if failed else binary_bytes(item.peak_device_bytes)
            groups.setdefault(key_of(item.case), {})[case_input(item.case)] = cell
        if not groups:
            rows.append([model.model, *("-" for _ in names), *(ERROR_CELL if i == 0 else "-" for i in range(len(inputs)))])
        for n, (key, cells) in enumerate(groups.items()):
            rows.append([model.model if n == 0 else "", *key, *(cells.get(i, "-") for i in inputs)])
    return header, rows


def _autocast_words(request) -> str:
    """` weights under autocast bfloat16` for an --autocast sweep, else nothing."""
    autocast = getattr(request, "autocast", None)
    return f" weights under autocast {autocast}" if autocast else ""


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
        for shape in getattr(request, "input_shapes", ()):
            words += ["--input-shape", shape.text()]
        words += ["--batch-size", ",".join(map(str, request.batch_sizes)), "--dtype", ",".join(request.dtypes),
                  "--attn", ",".join(request.attns), "--device", request.device]
        if getattr(request, "autocast", None):
            words += ["--autocast", request.autocast]
        if request.gpu is not None and request.device == "cuda":
            words += ["--memory", request.gpu.name.removeprefix("memory-")] if request.gpu.source == "--memory" \
                else ["--gpu", request.gpu.name]
    if run.training is not None:
        words += training_words(run.training)
    if run.parallel:
        from .multigpu import parallel_words

        words += parallel_words(run.parallel)
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
