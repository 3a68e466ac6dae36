"""Real training steps measured by the real CPU allocator: what the training simulation is checked against.

The same loop the simulation runs (`measure.training.run_steps`), on a real random-weight model
on the CPU, under torch.profiler with `profile_memory=True`. The model is made trainable inside
the profiled region and its weights counted beside it, so the peak counts everything the steps
hold: weights, the batch, gradients, optimizer state, activations and temporaries.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RealTrainingPeak:
    """The CPU allocator's peak over two steps, and per phase of the second step (bytes, weights included)."""

    peak: int
    phase_peaks: dict[str, int]


def random_task_model(config: dict[str, Any], *, bare: bool = False):
    """A real random-weight transformers model on the CPU: the class `architectures[0]` names, or AutoModel."""
    import torch
    import transformers
    from transformers import AutoConfig

    config = dict(config)
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    arch = (cfg.architectures or [None])[0]
    torch.manual_seed(0)
    if bare or arch is None:
        return transformers.AutoModel.from_config(cfg, dtype=torch.float32)
    return getattr(transformers, arch)._from_config(cfg, dtype=torch.float32)


def cpu_training_peak(model, case, reference: str = "real") -> RealTrainingPeak:
    """Run two real training steps of `model` for `case` on the CPU and read the allocator's peaks."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from ..measure.activations import _model_caches
    from ..measure.optimizers import grad_scaler
    from ..measure.training import PHASES, make_optimizer, prepare_trainee, run_steps

    for clear in _model_caches(model):
        clear()
    model.to(getattr(torch, case.dtype))  # as from_pretrained(dtype=...) loads it
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))

    def mark(phase: str, step: int) -> None:
        with record_function(f"vramplan-phase:{phase}:{step}"):
            pass

    # oneDNN's convolution scratchpad is not modelled: the check runs PyTorch's own convolution.
    with warnings.catch_warnings():  # flags() restores a TF32 setting and warns that this build has no Intel GPU
        warnings.simplefilter("ignore", UserWarning)
        no_onednn = torch.backends.mkldnn.flags(enabled=False)
        no_onednn.__enter__()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            trainee = prepare_trainee(model, case, reference, meta=False)
            optimizer = make_optimizer(trainee.module, case)
            # amp-fp16: at GradScaler's default scale a small model's fp16 gradients overflow and the
            # real steps are skipped (no optimizer state); at 1.0 they run, as the simulation assumes.
            run_steps(trainee, optimizer, case, steps=2, on_phase=mark, scaler=grad_scaler(case, init_scale=1.0))
            del trainee, optimizer
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            no_onednn.__exit__(None, None, None)
    events = prof.profiler.kineto_results.events()
    memory = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and e.device_type() == torch.profiler.DeviceType.CPU
    )
    marks = sorted((e.start_ns(), e.name().split(":")[1:]) for e in events if e.name().startswith("vramplan-phase:"))
    current = peak = 0
    phase_peaks: dict[str, int] = {}
    phase, i = None, 0
    for time, nbytes in memory:
        while i < len(marks) and marks[i][0] <= time:
            name, step = marks[i][1]
            phase = name if step == "1" and name in PHASES else None
            if phase:
                phase_peaks[phase] = max(phase_peaks.get(phase, 0), current)
            i += 1
        current += nbytes
        peak = max(peak, current)
        if phase:
            phase_peaks[phase] = max(phase_peaks[phase], current)
    return RealTrainingPeak(weights + peak, {k: weights + v for k, v in phase_peaks.items()})
