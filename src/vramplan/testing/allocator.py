"""Real forwards measured by the real CPU allocator: what the simulation is checked against.

torch.profiler with `profile_memory=True` records one `[memory]` event per allocation (+bytes)
and free (-bytes) of the CPU allocator; the running sum's maximum is the forward's peak above
what existed before it (weights, buffers, the input).
"""

from __future__ import annotations

from typing import Any


def random_weight_model(config: dict[str, Any], dtype: str, attn: str):
    """A real random-weight transformers model on the CPU, as from_pretrained(dtype=, attn_implementation=) makes it."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    model = AutoModel.from_config(cfg, dtype=getattr(torch, dtype), attn_implementation=attn)
    return model.eval()


def cpu_peak_above_baseline(model, inputs: dict[str, Any], autocast: str | None = None,
                            no_grad: bool = False) -> int:
    """Run the forward under the profiler; return the CPU allocator's peak above its starting point.

    `autocast` ("bfloat16", "float16"): the forward runs under `torch.autocast("cpu", dtype)`;
    `no_grad`: under `torch.no_grad()` instead of `torch.inference_mode()`.
    """
    import contextlib

    import torch
    from torch.profiler import ProfilerActivity, profile

    from ..measure.activations import _model_caches

    for clear in _model_caches(model):  # start as a fresh process would: nothing cached
        clear()
    with torch.no_grad() if no_grad else torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with torch.autocast("cpu", dtype=getattr(torch, autocast)) if autocast else contextlib.nullcontext():
            output = model(**inputs)
        del output
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.profiler.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak
