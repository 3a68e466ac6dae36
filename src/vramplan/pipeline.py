"""The public pipeline: resolve -> build -> measure, one model at a time, failures isolated."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections.abc import Iterable
from datetime import datetime, timezone

from .build import build_model
from .errors import VramplanError, one_line
from .measure.cases import InferenceRequest, cases_for
from .measure.weights import DTYPES, measure_weights
from .progress import RunProgress
from .results import InferenceFailure, ModelResult, RunResult, TrainingFailure
from .sources import expand_references, resolve_model
from .spec import DeferredSpec, ModelSpec, SourceOptions
from .workers import measure_each, resolve_jobs


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
    progress: RunProgress | None = None,
    fit=None,
    training=None,
    parallel: Iterable = (),
    jobs: int | str = 1,
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
        fit: a plan.fit.FitRequest: the largest batch (or input) that fits on each of its cards.
        training: a measure.training_cases.TrainingRequest: simulate two training steps per case.
        parallel: plan.parallel.ParallelPlans: each training case spread over GPUs by each strategy
            (derived from the one simulation per case, as `vramplan plan` does; precision and batch follow the case).
        gpus: split each inference case over this many cards (accelerate's device_map="auto").
        card_bytes: memory of one card for the split (default: an H100's).
        debug: print the traceback of each failed model and each failed inference case to stderr.
        progress: told as each model and inference case starts (vramplan.progress; the CLI's bar).
        jobs: processes measuring models at once (vramplan.workers): a number, or "auto" for one per core
            when two or more models are simulated. The results are the same, in the same order.

    Returns:
        A RunResult with one ModelResult per model; a model that fails has status "error"
        and never stops the others.
    """
    references = [models] if isinstance(models, (str, ModelSpec, DeferredSpec)) else list(models)
    dtypes = _check_dtypes(dtypes)
    options = SourceOptions(library=library, trust_remote_code=trust_remote_code, revision=revision, timeout=timeout)
    progress = progress or RunProgress()
    expanded = expand_references(references)
    parallel = tuple(parallel)
    work = functools.partial(_estimate_one, dtypes=dtypes, options=options, checkpoint=checkpoint,
                             inference=inference, debug=debug, fit=fit, training=training,
                             split=(gpus, card_bytes) if gpus else None, parallel=parallel)
    jobs = resolve_jobs(jobs, len(expanded), simulates=any(r is not None for r in (inference, fit, training)))
    names = [_reference_name(reference) for reference in expanded]

    def started(completed: int, index: int | None) -> None:  # the model this process measures now
        waiting = f"waiting for {jobs - 1} worker process{'es' if jobs > 2 else ''}"
        progress.start_model(completed, len(expanded), waiting if index is None else names[index])

    together = [_build_key(reference) for reference in expanded] if jobs > 1 else None
    results = measure_each(work, expanded, jobs, started, debug=debug, together=together, progress=progress)
    return RunResult(models=tuple(results), dtypes=dtypes, generated=generated_timestamp(), inference=inference,
                     fit=fit, training=training, parallel=parallel)


def estimate_spec(spec: ModelSpec, dtypes: Iterable[str] = DTYPES, *, checkpoint: bool = False,
                  timeout: float = 10.0, inference: InferenceRequest | None = None, debug: bool = False,
                  progress: RunProgress | None = None, fit=None, training=None,
                  split: tuple[int, int | None] | None = None, parallel: tuple = ()) -> ModelResult:
    """Measure an already resolved spec (raises if it cannot be built)."""
    model = build_model(spec)
    weights = measure_weights(model, tuple(dtypes))
    stored = read_checkpoint(spec, model, weights, timeout) if checkpoint else None
    simulated: tuple = ()
    failures: list[str] = []
    if inference is not None:
        try:
            simulated = simulate_inference(model, inference, spec.model_id, debug=debug, progress=progress)
        except VramplanError as exc:  # no case could be made for this model; its weights stand
            failures.append(one_line(exc, typed=True))
    failures += [s.reason for s in simulated if isinstance(s, InferenceFailure)]
    splits = split_cases(model, simulated, *split) if split else ()
    cells: tuple = ()
    if fit is not None:
        from .plan.fit import fit_model

        try:
            cells = fit_model(model, fit, spec.model_id)
        except VramplanError as exc:  # no case could be made for this model; its weights stand
            failures.append(one_line(exc, typed=True))
        failures += [c.error for c in cells if c.error]
    trained: tuple = ()
    if training is not None:
        try:
            trained = simulate_training(model, training, spec.model_id)
        except VramplanError as exc:
            failures.append(one_line(exc, typed=True))
        failures += [t.reason for t in trained if isinstance(t, TrainingFailure)]
    plans: tuple = ()
    if parallel and trained:
        from .plan.training_plan import plan_cases

        try:
            plans = plan_cases(model, trained, parallel, spec.model_id)
        except VramplanError as exc:  # the one-GPU cases stand
            failures.append(one_line(exc, typed=True))
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
        training=trained,
        splits=splits,
        cli_args=spec.cli_args(),
        fit=cells,
        plans=plans,
    )


def simulate_inference(model, request: InferenceRequest, reference: str, *, debug: bool = False,
                       progress: RunProgress | None = None) -> tuple:
    """Simulate every case of the request; a case that cannot run becomes an InferenceFailure."""
    from .measure.activations import measure_inference_sweep

    cases = cases_for(model, request, reference)
    results = []
    with contextlib.redirect_stdout(sys.stderr):  # the model's own forward may print: keep stdout ours
        for index, case in enumerate(cases):  # one at a time, so progress can follow; the caches are shared anyway
            (progress or RunProgress()).start_case(index, len(cases), case)
            results += measure_inference_sweep(model, [case], reference=reference)
    if debug:
        for failed in (r for r in results if isinstance(r, Exception)):
            traceback.print_exception(failed, file=sys.stderr)
    return tuple(
        InferenceFailure(case, one_line(r, typed=True)) if isinstance(r, Exception) else r
        for case, r in zip(cases, results)
    )


def simulate_training(model, request, reference: str) -> tuple:
    """Simulate every training case of the request; a case that cannot run becomes a TrainingFailure."""
    from .measure.training import measure_training_sweep
    from .measure.training_cases import training_cases_for

    cases = training_cases_for(model, request, reference)
    results = measure_training_sweep(model, cases, reference=reference)
    return tuple(
        TrainingFailure(case, one_line(r, typed=True)) if isinstance(r, Exception) else r
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
        return unreadable_checkpoint(spec.source, one_line(exc, typed=True))
    return explain_checkpoint(found, model, weights, spec.config) if found else None


def _estimate_one(reference: str | ModelSpec | DeferredSpec, *, dtypes: tuple[str, ...], options: SourceOptions, checkpoint: bool,
                  inference: InferenceRequest | None, debug: bool, progress: RunProgress | None = None,
                  fit=None, training=None, split=None, parallel: tuple = ()) -> ModelResult:
    spec = reference if isinstance(reference, ModelSpec) else None
    try:
        if isinstance(reference, DeferredSpec):
            spec = reference.make()
        spec = spec or resolve_model(reference, options)
        return estimate_spec(spec, dtypes, checkpoint=checkpoint, timeout=options.timeout, inference=inference,
                             debug=debug, progress=progress, fit=fit, training=training,
                             split=split, parallel=parallel)
    except Exception as exc:  # one bad model never stops the others
        if debug:
            traceback.print_exc(file=sys.stderr)
        return failed_result(_reference_name(reference), spec, exc)


def _build_key(reference: str | ModelSpec | DeferredSpec) -> str | None:
    """What a reference builds, where known without resolving it (a spec, a catalogue id): models that build
    the same module are measured in one process, which builds and simulates it once. A scheduling hint only."""
    from .sources.catalog import catalog_spec, find_entry

    if isinstance(reference, ModelSpec):
        return reference.build_key()
    entry = find_entry(reference) if isinstance(reference, str) else None
    return catalog_spec(entry, reference).build_key() if entry else None


def _reference_name(reference: str | ModelSpec | DeferredSpec) -> str:
    return reference if isinstance(reference, str) else getattr(reference, "reference", None) or reference.name


def failed_result(reference: str, spec: ModelSpec | None, exc: BaseException) -> ModelResult:
    """Turn an exception into an error result with a one-line reason."""
    return ModelResult(
        model=spec.model_id if spec else reference,
        reference=reference,
        library=spec.library if spec else "transformers",
        source=spec.source if spec else None,
        status="error",
        error=one_line(exc, typed=True),
    )


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
