"""The public pipeline: resolve -> build -> measure, one model at a time, failures isolated."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable
from datetime import datetime, timezone

from .build import build_model
from .errors import VramplanError
from .measure.cases import InferenceRequest, cases_for
from .measure.weights import DTYPES, measure_weights
from .results import InferenceFailure, ModelResult, RunResult
from .sources import expand_references, resolve_model
from .spec import DeferredSpec, ModelSpec, SourceOptions


def estimate(
    models: str | ModelSpec | Iterable[str | ModelSpec | DeferredSpec],
    *,
    dtypes: Iterable[str] = DTYPES,
    library: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    timeout: float = 10.0,
    checkpoint: bool = True,
    inference: InferenceRequest | None = None,
    gpus: int | None = None,
    card_bytes: int | None = None,
    debug: bool = False,
) -> RunResult:
    """Estimate the memory each model needs to load, as `accelerate estimate-memory` would, and to run.

    Args:
        models: catalogue ids, aliases, family names (`dinov3`), paths to config.json files or
            directories, Hub ids, timm names, or ModelSpecs already made (torch.hub entrypoints,
            factories: see vramplan.sources.torchhub).
        dtypes: any of float32, float16, int8, int4, in the order the rows should appear.
        library: "transformers" or "timm" where the source does not say.
        trust_remote_code: allow a config's own modelling code to run; never implied.
        revision: Hub branch, tag or commit.
        timeout: seconds to wait for any one Hub look-up.
        checkpoint: read the checkpoint's safetensors headers (Hub repos, local directories).
        inference: simulate forward passes at these sizes, batches, dtypes and attentions.
        gpus: split each inference case over this many cards (accelerate's device_map="auto").
        card_bytes: memory of one card for the split (default: an H100's).
        debug: print the traceback of each failed model to stderr.

    Returns:
        A RunResult with one ModelResult per model; a model that fails has status "error"
        and never stops the others.
    """
    references = [models] if isinstance(models, (str, ModelSpec, DeferredSpec)) else list(models)
    dtypes = _check_dtypes(dtypes)
    options = SourceOptions(library=library, trust_remote_code=trust_remote_code, revision=revision, timeout=timeout)
    results = [
        _estimate_one(reference, dtypes, options, checkpoint=checkpoint, inference=inference, debug=debug,
                      split=(gpus, card_bytes) if gpus else None)
        for reference in expand_references(references)
    ]
    return RunResult(models=tuple(results), dtypes=dtypes, generated=generated_timestamp(), inference=inference)


def estimate_spec(spec: ModelSpec, dtypes: Iterable[str] = DTYPES, *, checkpoint: bool = False,
                  timeout: float = 10.0, inference: InferenceRequest | None = None,
                  split: tuple[int, int | None] | None = None) -> ModelResult:
    """Measure an already resolved spec (raises if it cannot be built)."""
    model = build_model(spec)
    weights = measure_weights(model, tuple(dtypes))
    stored = read_checkpoint(spec, model, weights, timeout) if checkpoint else None
    simulated: tuple = ()
    failures: list[str] = []
    if inference is not None:
        try:
            simulated = simulate_inference(model, inference, spec.model_id)
        except VramplanError as exc:  # no case could be made for this model; its weights stand
            failures.append(one_line_reason(exc))
    failures += [s.reason for s in simulated if isinstance(s, InferenceFailure)]
    splits = split_cases(model, simulated, *split) if split else ()
    return ModelResult(
        model=spec.model_id,
        reference=spec.reference,
        library=spec.library,
        source=spec.source,
        status="error" if failures else "ok",
        error=failures[0] if failures else None,
        weights=weights,
        checkpoint=stored,
        inference=simulated,
        splits=splits,
        cli_args=spec.cli_args(),
    )


def simulate_inference(model, request: InferenceRequest, reference: str) -> tuple:
    """Simulate every case of the request; a case that cannot run becomes an InferenceFailure."""
    from .measure.activations import measure_inference_sweep

    cases = cases_for(model, request, reference)
    results = measure_inference_sweep(model, cases, reference=reference)
    return tuple(
        InferenceFailure(case, one_line_reason(r)) if isinstance(r, Exception) else r
        for case, r in zip(cases, results)
    )


def split_cases(model, simulated: tuple, gpus: int, card_bytes: int | None) -> tuple:
    """Each simulated case split over `gpus` cards; None where the case failed."""
    from .plan.inference_split import H100_BYTES, split_inference

    return tuple(None if isinstance(s, InferenceFailure) else split_inference(model, s, gpus, card_bytes or H100_BYTES)
                 for s in simulated)


def read_checkpoint(spec: ModelSpec, model, weights, timeout: float):
    """The stored checkpoint beside the spec's config, explained against the estimate; None if there is none."""
    from pathlib import Path

    from .measure.checkpoint import (
        explain_checkpoint,
        read_hub_checkpoint,
        read_local_checkpoint,
        unreadable_checkpoint,
    )

    try:
        if spec.source in ("local", "cache") and spec.config_path:
            found = read_local_checkpoint(Path(spec.config_path).parent)
        elif spec.source == "hub":
            found = read_hub_checkpoint(spec.model_id, spec.revision, timeout, spec.repo_files)
        else:
            return None
    except Exception as exc:  # the weights estimate stands without the checkpoint
        return unreadable_checkpoint(spec.source, one_line_reason(exc))
    return explain_checkpoint(found, model, weights, spec.config) if found else None


def _estimate_one(reference: str | ModelSpec | DeferredSpec, dtypes: tuple[str, ...], options: SourceOptions, *, checkpoint: bool,
                  inference: InferenceRequest | None, debug: bool, split=None) -> ModelResult:
    spec = reference if isinstance(reference, ModelSpec) else None
    try:
        if isinstance(reference, DeferredSpec):
            spec = reference.make()
        spec = spec or resolve_model(reference, options)
        return estimate_spec(spec, dtypes, checkpoint=checkpoint, timeout=options.timeout, inference=inference,
                             split=split)
    except Exception as exc:  # one bad model never stops the others
        if debug:
            traceback.print_exc(file=sys.stderr)
        name = reference if isinstance(reference, str) else getattr(reference, "reference", None) or reference.name
        return failed_result(name, spec, exc)


def failed_result(reference: str, spec: ModelSpec | None, exc: BaseException) -> ModelResult:
    """Turn an exception into an error result with a one-line reason."""
    return ModelResult(
        model=spec.model_id if spec else reference,
        reference=reference,
        library=spec.library if spec else "transformers",
        source=spec.source if spec else None,
        status="error",
        error=one_line_reason(exc),
    )


def one_line_reason(exc: BaseException) -> str:
    """A single line for any exception: our own messages as they are, others with their type."""
    if isinstance(exc, VramplanError):
        text = exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def generated_timestamp() -> str:
    """Now, or SOURCE_DATE_EPOCH when set (reproducible reports), as an ISO timestamp."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return datetime.now().strftime("%Y-%m-%dT%H:%M:%S")


def _check_dtypes(dtypes: Iterable[str]) -> tuple[str, ...]:
    from .errors import UsageError

    out = tuple(dtypes)
    bad = [d for d in out if d not in DTYPES]
    if bad or not out:
        raise UsageError(f"Unknown dtype {', '.join(bad) or '(none)'}: choose from {', '.join(DTYPES)}")
    return out
