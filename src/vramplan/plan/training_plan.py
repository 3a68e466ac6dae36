"""Training across GPUs from one simulated step: the trainee's parameter shapes plus the step's activations.

The one-GPU step is simulated once (`measure.training`); every strategy, GPU count and offload is derived
from it by `sharding.plan_sharding`, nothing re-simulated. The activations and temporaries of each phase are
that phase's simulated peak less the model states held then, and at backward's peak less the gradients the
simulation says exist then.

Known limitations:
    - DeepSpeed runs the forward on its 16-bit weights, not under autocast: amp-* cases keep autocast's
      weight-cast cache in their activations, which errs high for ZeRO.
    - `per_gpu_device_bytes` adds the one-GPU case's overheads (CUDA context, allocator cache) unchanged.
    - When the one-GPU peak is not in backward, the gradients alive at backward's peak are not known (the
      simulation reports the breakdown at its overall peak only): they stay in backward's Activation,
      unsharded. Errs high, by at most the gradients' bytes x (1 - 1/GPUs) (exact for DDP); a breakdown
      per phase from `measure.training` would make it exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from .parallel import ParallelPlan
from .sharding import ModelStates, ShardedPeak, StepActivations, model_states, plan_sharding, step_from_phase_peaks

# torch's optimizers keep their state in the parameter's dtype: AdamW exp_avg and exp_avg_sq, SGD's momentum.
_STATES_PER_ELEMENT = {"adamw": 2, "adamw-fused": 2, "sgd": 1}


@dataclass(frozen=True)
class TrainingPlan:
    """One strategy of one simulated training case: the busiest rank, and the one-GPU case it came from."""

    measurement: Any  # measure.training.TrainingMeasurement
    peak: ShardedPeak

    @property
    def per_gpu_device_bytes(self) -> int:
        return self.peak.per_gpu_peak_bytes + sum(size for _, size in self.measurement.overheads)

    def as_json(self) -> dict[str, Any]:
        return {**self.measurement.as_json(), **self.peak.as_json(),
                "per_gpu_device_bytes": self.per_gpu_device_bytes}


def plan_training(model, measurement, plans: Iterable[ParallelPlan], reference: str) -> list[TrainingPlan]:
    """Every plan of `plans` for the simulated `measurement` of `model` (the meta model it was simulated from)."""
    states = trainee_states(model, measurement, reference)
    step = step_from_measurement(states, measurement)
    return [TrainingPlan(measurement, plan_sharding(states, step, p)) for p in plans]


def plan_cases(model, measured: Iterable, plans: Iterable[ParallelPlan], reference: str) -> tuple[TrainingPlan, ...]:
    """`plan_training` for each simulated case of a sweep (failed cases have none), case by case.

    Each plan takes the case's precision, per-GPU batch and checkpointing, and the model's wrap classes, so
    the plan (and what `--emit` writes from it) is the case's. `vramplan estimate --mode train --gpus N`
    comes here; `vramplan plan` calls `plan_training` for its one case: one derivation for both.
    """
    wrap = wrap_classes(model)
    out: list[TrainingPlan] = []
    for m in measured:
        if not hasattr(m, "peak_allocated_bytes"):  # a TrainingFailure: nothing to derive
            continue
        own = [replace(p, precision=m.case.precision, micro_batch=m.case.batch_size,
                       grad_checkpointing=m.case.grad_checkpointing, wrap_classes=wrap) for p in plans]
        out += plan_training(model, m, own, reference)
    return tuple(out)


def wrap_classes(model) -> tuple[str, ...]:
    """The `_no_split_modules` blocks FSDP2 wraps (accelerate's transformer-based wrap), sorted."""
    return tuple(sorted(getattr(model, "_no_split_modules", None) or ()))


def trainee_states(model, measurement, reference: str) -> ModelStates:
    """The shapes of what trains (task class, probe, LoRA, frozen backbone), wrapped at the model's blocks."""
    from ..measure.training import prepare_trainee

    case = measurement.case
    trainee = prepare_trainee(model, case, reference, meta=True)
    per_element = _STATES_PER_ELEMENT.get(case.optimizer, 2)
    weight = 4 if case.precision in ("fp32", "amp-bf16", "amp-fp16") else 2
    wrap = getattr(model, "_no_split_modules", None) or ()
    return model_states(trainee.module, case.precision, optstate_bytes=per_element * weight, wrap_classes=wrap)


def step_from_measurement(states: ModelStates, measurement) -> StepActivations:
    """Activations and temporaries per phase: each phase's peak less the model states held then.

    The simulation says how many gradients exist at backward's peak: those are taken out exactly, and their
    share sizes the FSDP2 gradient buffers. The model states are counted as the plan counts them
    (elements x dtype), not from the simulation's categories, so a state the simulation is still creating
    at the peak (the first step's optimizer state) is not counted twice.
    """
    phases = dict(measurement.phase_peaks)
    peak = measurement.peak_allocated_bytes
    step = step_from_phase_peaks(states, phases.get("forward", peak), phases.get("backward", peak),
                                 phases.get("optimizer step", peak))
    made = dict(measurement.phase_gradients).get("backward")
    if made is None:  # a measurement without per-phase gradients: the peak's own, if backward is the peak
        if measurement.peak_phase != "backward":
            return step
        made = measurement.gradient_bytes
    everything = states.trainable * states.weight_bytes
    alive = min(made / everything, 1.0) if everything else 1.0
    exact = max(step.backward_bytes - made, 0)
    return StepActivations(step.forward_bytes, exact, step.optimizer_bytes, alive, alive)


@dataclass(frozen=True)
class ModelPlans:
    """One model's plans (case x strategy), or the one-line reason it could not be planned."""

    model: str
    plans: tuple[TrainingPlan, ...] = ()
    error: str | None = None
    wrap_classes: tuple[str, ...] = ()


def plan_model(reference: str, make_case, plans: list[ParallelPlan], *, trust_remote_code: bool = False,
               revision: str | None = None, timeout: float = 10.0) -> ModelPlans:
    """Resolve, build, simulate the one-GPU step once, derive every plan; failures become an error line.

    `make_case(model)` gives the TrainingCase for the built model (its input kind decides size or length).
    """
    from ..build import build_model
    from ..measure.training import measure_training
    from ..errors import one_line
    from ..sources import resolve_model
    from ..spec import SourceOptions

    name = reference
    try:
        spec = resolve_model(reference, SourceOptions(trust_remote_code=trust_remote_code, revision=revision,
                                                      timeout=timeout))
        name = spec.model_id
        model = build_model(spec)
        measured = measure_training(model, make_case(model), reference=name)
        derived = plan_training(model, measured, plans, name)
    except Exception as exc:  # one bad model never stops the others
        return ModelPlans(name, error=one_line(exc, typed=True))
    return ModelPlans(name, tuple(derived), wrap_classes=wrap_classes(model))
