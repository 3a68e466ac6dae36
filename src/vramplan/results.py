"""Typed results of a run: what the renderers in report/ turn into text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .measure.weights import WeightsEstimate


@dataclass(frozen=True)
class InferenceFailure:
    """A case whose forward could not be simulated, and why."""

    case: Any  # measure.activations.InferenceCase
    reason: str


@dataclass(frozen=True)
class TrainingFailure:
    """A training case that could not be simulated, and why."""

    case: Any  # measure.training.TrainingCase
    reason: str


@dataclass(frozen=True)
class ModelResult:
    """Everything measured for one model, or the one-line reason it failed."""

    model: str  # canonical id shown in reports (the reference itself when resolution failed)
    reference: str
    library: str
    source: str | None
    status: str  # "ok" | "error"
    error: str | None = None
    weights: WeightsEstimate | None = None
    checkpoint: Any = None  # measure.checkpoint.CheckpointInfo, when a checkpoint sits beside the config
    inference: tuple[Any, ...] = ()  # InferenceMeasurement or InferenceFailure, in the order asked
    training: tuple[Any, ...] = ()  # TrainingMeasurement or TrainingFailure, in the order asked
    splits: tuple[Any, ...] = ()  # plan.inference_split.InferenceSplit per inference case (None: failed), --gpus
    cli_args: tuple[str, ...] = ()  # the `vramplan estimate` arguments that name this model again
    fit: tuple[Any, ...] = ()  # plan.fit.FitCell per (card, input size), when a fit was asked for
    plans: tuple[Any, ...] = ()  # plan.training_plan.TrainingPlan per (training case, strategy), --mode train --gpus

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class RunResult:
    """A whole run: the models in the order asked, and what was asked."""

    models: tuple[ModelResult, ...]
    dtypes: tuple[str, ...]
    generated: str  # ISO timestamp, seconds
    inference: Any = None  # measure.cases.InferenceRequest when inference was asked for
    fit: Any = None  # plan.fit.FitRequest when a fit was asked for
    training: Any = None  # measure.training_cases.TrainingRequest when training was asked for
    parallel: tuple[Any, ...] = ()  # plan.parallel.ParallelPlan per strategy, when training across GPUs was asked

    @property
    def exit_code(self) -> int:
        """0 when every model succeeded, 1 when some failed."""
        return 0 if all(m.ok for m in self.models) else 1
