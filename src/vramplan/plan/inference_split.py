"""Inference split over GPUs as `device_map="auto"` does it: accelerate's own balanced device map.

accelerate's `get_balanced_memory` and `infer_auto_device_map` place the model's `_no_split_modules`
blocks on the cards in order, given each card's `max_memory`. vramplan's `max_memory` per card is the
card's memory less what the simulated forward needs beside the weights (activations, kernel workspaces,
and on the CUDA target the allocator's rounding and the CUDA context): the whole single-card figure is
reserved on every card, because the card holding the widest layers, or the input and output, can need it
all. Each card's peak is then its own weights plus that reserve.

Known limitations:
    - Errs high: a card that holds only some layers needs at most, not exactly, the whole forward's
      activations. The hidden state moved between cards by accelerate's hooks is inside the reserve.
    - The card memory is a number given by the caller (`card_bytes`): an H100's by default, until a
      GPU catalogue provides others.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

# torch.cuda.get_device_properties(0).total_memory of an H100 80GB (nvidia-smi: 81559MiB). The card's
# nominal "80 GB" is not what a process can address; the smaller figure errs on the safe side.
H100_BYTES = 81559 * 2**20

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def card_memory(text: str | None = None) -> int:
    """Bytes of one card: `80GiB`, `81559MiB`, `80GB`, plain bytes; the H100's when not given.

    The GPU catalogue (`--gpu`) can hand its figure here.
    """
    if text is None:
        return H100_BYTES
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?I?B?)\s*", text.upper())
    if not match or match.group(2) not in _UNITS:
        raise UsageError(f"--memory `{text}` is not a size: use e.g. 80GiB, 81559MiB or 24GB")
    value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value <= 0:
        raise UsageError(f"--memory `{text}` must be more than 0")
    return value


@dataclass(frozen=True)
class InferenceSplit:
    """Where the weights go on `gpus` cards, and each card's peak; `fits` is False when some go to the CPU."""

    gpus: int
    card_bytes: int
    reserve_bytes: int  # what every card keeps for the forward beside its weights (allocated + context)
    per_gpu_weight_bytes: tuple[int, ...]
    per_gpu_peak_bytes: tuple[int, ...]  # on the card: weights + reserve (what must fit in card_bytes)
    per_gpu_allocated_bytes: tuple[int, ...]  # max_memory_allocated: weights + activations and workspaces
    cpu_weight_bytes: int  # weights accelerate would offload to the CPU (0 when the split fits)
    device_map: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def fits(self) -> bool:
        return self.cpu_weight_bytes == 0

    @property
    def busiest_peak_bytes(self) -> int:
        return max(self.per_gpu_peak_bytes, default=0)

    @property
    def busiest_allocated_bytes(self) -> int:
        return max(self.per_gpu_allocated_bytes, default=0)

    def as_json(self) -> dict[str, Any]:
        return {
            "gpus": self.gpus, "nodes": 1, "strategy": "device_map", "offload": "none" if self.fits else "cpu",
            "card_bytes": self.card_bytes, "reserve_bytes": self.reserve_bytes,
            "per_gpu_weight_bytes": list(self.per_gpu_weight_bytes),
            "per_gpu_peak_bytes": self.busiest_allocated_bytes, "per_gpu_device_bytes": self.busiest_peak_bytes,
            "per_gpu_allocated_bytes": list(self.per_gpu_allocated_bytes),
            "per_gpu_on_card_bytes": list(self.per_gpu_peak_bytes),
            "cpu_bytes_per_node": self.cpu_weight_bytes, "fits": self.fits,
        }


def split_inference(model, measurement, gpus: int, card_bytes: int = H100_BYTES) -> InferenceSplit:
    """Place `model` (meta, any dtype) on `gpus` cards for one simulated inference case.

    Args:
        model: the meta-device model the measurement was simulated from.
        measurement: a `measure.activations.InferenceMeasurement` (its dtype and its non-weight peak).
        gpus: cards on one host.
        card_bytes: memory of one card.
    """
    import torch

    if gpus < 1:
        raise UsageError("--gpus must be at least 1")
    dtype = getattr(torch, measurement.case.dtype)
    weights = measurement.parameter_bytes + measurement.buffer_bytes
    reserve = max(measurement.peak_device_bytes - weights, 0)
    working = max(measurement.peak_allocated_bytes - weights, 0)
    room = card_bytes - reserve
    if room <= 0:
        return InferenceSplit(gpus, card_bytes, reserve, (0,) * gpus, (reserve,) * gpus, (working,) * gpus, weights)
    device_map = _device_map(model, {i: room for i in range(gpus)}, dtype)
    sizes = _placed_sizes(model, device_map, dtype, measurement.case.device == "cuda")
    per_gpu = tuple(sizes.get(i, 0) for i in range(gpus))
    offloaded = sum(v for k, v in sizes.items() if not isinstance(k, int))
    peaks = tuple(w + reserve if w else 0 for w in per_gpu)
    allocated = tuple(w + working if w else 0 for w in per_gpu)
    return InferenceSplit(gpus, card_bytes, reserve, per_gpu, peaks, allocated, offloaded, dict(device_map))


def _device_map(model, max_memory: dict, dtype) -> dict:
    """accelerate's balanced `device_map="auto"`, the CPU taking what the cards cannot."""
    from accelerate.utils import get_balanced_memory, infer_auto_device_map

    no_split = sorted(getattr(model, "_no_split_modules", None) or ())
    log = logging.getLogger("accelerate.utils.modeling")
    level = log.level
    log.setLevel(logging.ERROR)  # "Device 0 is not available": planning runs where the cards are not
    try:
        budget = {**max_memory, "cpu": 2**62}
        balanced = get_balanced_memory(model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
        return infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)
    finally:
        log.setLevel(level)


def _placed_sizes(model, device_map: dict, dtype, cuda: bool) -> dict:
    """Bytes of weights on each device of the map, as the simulation counts them: floating parameters in
    the case dtype, buffers in their own, loaded in `module.to()` order through a caching-allocator replay
    per card on the CUDA target (blocks, not bytes); tied tensors once."""
    from ..measure.overheads import CachingAllocatorModel

    seen: set[int] = set()
    allocators: dict = {}
    out: dict = {}
    for name, device in device_map.items():
        for tensor, is_param in _tensors(model, name):
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            size = dtype.itemsize if is_param and tensor.is_floating_point() else tensor.element_size()
            nbytes = tensor.numel() * size
            if cuda and isinstance(device, int):
                block = allocators.setdefault(device, CachingAllocatorModel()).malloc(nbytes)
                nbytes = block.size if block is not None else 0
            out[device] = out.get(device, 0) + nbytes
    return out


def _tensors(model, name: str) -> list:
    """(tensor, is_parameter) under a device-map entry, in the order `module.to()` moves them."""
    import torch

    try:
        module = model.get_submodule(name)
    except AttributeError:
        owner, _, leaf = name.rpartition(".")
        tensor = getattr(model.get_submodule(owner), leaf)
        return [(tensor, isinstance(tensor, torch.nn.Parameter))]
    return list(_load_order(module))


def _load_order(module):
    for child in module.children():
        yield from _load_order(child)
    yield from ((p, True) for p in module._parameters.values() if p is not None)
    yield from ((b, False) for b in module._buffers.values() if b is not None)
