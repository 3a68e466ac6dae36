"""Training across GPUs from one simulated step: the trainee's parameter shapes plus the step's activations.

The one-GPU step is simulated once (`measure.training`); every strategy, GPU count and offload is derived
from it by `sharding.plan_sharding`, nothing re-simulated. The activations and temporaries of each phase are
that phase's simulated peak less the model states held then; at the phase of the overall peak the
simulation's own breakdown (Activation + Temp) is used as it is.

Known limitations:
    - DeepSpeed runs the forward on its 16-bit weights, not under autocast: amp-* cases keep autocast's
      weight-cast cache in their activations, which errs high for ZeRO.
    - `per_gpu_device_bytes` adds the one-GPU case's overheads (CUDA context, allocator cache) unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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
    """Activations and temporaries per phase; the peak phase's from the simulation's own breakdown."""
    phases = dict(measurement.phase_peaks)
    peak = measurement.peak_allocated_bytes
    step = step_from_phase_peaks(states, phases.get("forward", peak), phases.get("backward", peak),
                                 phases.get("optimizer step", peak))
    exact = measurement.activation_bytes + measurement.temp_bytes
    if measurement.peak_phase == "forward":
        return StepActivations(exact, step.backward_bytes, step.optimizer_bytes)
    if measurement.peak_phase == "backward":  # the gradients alive then, as a share of all of them
        everything = states.trainable * states.weight_bytes
        alive = min(measurement.gradient_bytes / everything, 1.0) if everything else 1.0
        return StepActivations(step.forward_bytes, exact, step.optimizer_bytes, alive)
    return StepActivations(step.forward_bytes, step.backward_bytes, exact)
