"""Inference under `torch.autocast` (`--autocast bfloat16|float16`): float32 weights, lower-precision compute.

What a user writes, `with torch.no_grad(), torch.autocast(device, dtype): model(**inputs)`,
simulated with the casting policy and the weight-cast cache of `autocast.AutocastCaster` (the
training simulation's): each float32 weight an autocast operator takes is copied once to the
autocast dtype and the copy is held until the autocast context exits (`cached_cast` caches
leaves that require grad, as weights from `from_pretrained` do), so the peak holds the float32
weights and, by the end of the forward, their lower-precision copies. That is the forward
under `torch.no_grad()`; under `torch.inference_mode()` torch 2.13 does not use the cache
(measured on the CPU allocator: tests/test_inference_autocast.py), and the simulation errs high
for it by at most the copies (half the float32 weights for bfloat16).
A model's own `torch.autocast(...)` inside the forward is honoured as in training.

Known limitations:
    - Weights the user froze with `requires_grad_(False)` are not cached by autocast (each use
      casts again and frees); the simulation caches them all, which errs high.
    - `--attn flash` is refused with float32 weights (flash_attention_2 checks the weights'
      dtype before autocast runs); sdpa picks its kernel from the cast q, k and v, as on the device.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .autocast import AutocastCaster

if TYPE_CHECKING:
    import torch.nn as nn

    from .activations import InferenceCase


class _WeightCaster(AutocastCaster):
    """The caster, with the model's weights cached as the loaded (requires-grad) weights are."""

    def __init__(self, device: str, module: "nn.Module") -> None:
        super().__init__(device)
        self._weights = {id(p) for p in module.parameters()}

    def _requires_grad_leaf(self, x) -> bool:
        return id(x) in self._weights or super()._requires_grad_leaf(x)


def _function_mode_base():
    from torch.overrides import TorchFunctionMode

    return TorchFunctionMode


class _CastMode(_function_mode_base()):  # type: ignore[misc]
    """Cast each torch function's arguments as autocast would on the target."""

    def __init__(self, caster: AutocastCaster) -> None:
        super().__init__()
        self.caster = caster

    def __torch_function__(self, func, types, args=(), kwargs=None):
        args, kwargs = self.caster.cast(func, args, kwargs or {})
        return func(*args, **kwargs)


@contextlib.contextmanager
def autocast_forward(module: "nn.Module", case: "InferenceCase"):
    """Run the block as under `torch.autocast(case.device, case.autocast)`, simulated on meta tensors.

    CPU autocast's state stands for the target's (autocast itself ignores meta tensors); the casts
    follow the target's operator lists. Its exit drops the cached weight copies.
    """
    import torch

    from .training import _model_autocast

    caster = _WeightCaster(case.device, module)
    original_clear = torch.clear_autocast_cache

    def clear_autocast_cache() -> None:
        caster.clear_cache()
        original_clear()

    torch.clear_autocast_cache = clear_autocast_cache
    try:
        with _model_autocast(case.device), torch.autocast("cpu", dtype=getattr(torch, case.autocast)), \
                _CastMode(caster):
            yield
    finally:
        torch.clear_autocast_cache = original_clear
        caster.clear_cache()

