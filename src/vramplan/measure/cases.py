"""Which inference cases to simulate for a model: the user's sizes x batches x dtypes x attentions."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    import torch.nn as nn

    from .activations import InferenceCase

DEFAULT_SEQ_LEN = 512


@dataclass(frozen=True)
class InferenceRequest:
    """What the user asked to simulate; empty sizes mean the model's own default input size."""

    image_sizes: tuple[tuple[int, int], ...] = ()
    seq_lens: tuple[int, ...] = ()
    batch_sizes: tuple[int, ...] = (1,)
    dtypes: tuple[str, ...] = ("bfloat16",)
    attns: tuple[str, ...] = ("sdpa",)
    device: str = "cuda"
    gpu: Any = None  # plan.gpus.GpuSpec of the CUDA target; None: the default H100 SXM


def input_kind(model: "nn.Module") -> str:
    """"image" for models fed pixel_values, "text" for token ids."""
    name = getattr(model, "main_input_name", None) or "pixel_values"
    return "text" if name == "input_ids" else "image"


def cases_for(model: "nn.Module", request: InferenceRequest, reference: str) -> list["InferenceCase"]:
    """Expand a request into cases for this model (image sizes for vision models, lengths for text)."""
    from .activations import InferenceCase

    config = getattr(model, "config", None)
    if input_kind(model) == "text":
        if request.image_sizes and not request.seq_lens:
            raise UsageError(f"`{reference}` is a text model: give --seq-len, not --image-size")
        limit = getattr(config, "max_position_embeddings", None) or DEFAULT_SEQ_LEN
        sizes = [dict(seq_len=n) for n in (request.seq_lens or (min(DEFAULT_SEQ_LEN, limit),))]
    else:
        if request.seq_lens and not request.image_sizes:
            raise UsageError(f"`{reference}` is a vision model: give --image-size, not --seq-len")
        default = getattr(config, "image_size", None) or 224
        default_hw = tuple(default) if isinstance(default, (list, tuple)) else (int(default), int(default))
        sizes = [dict(image_size=hw) for hw in (request.image_sizes or (default_hw,))]
    return [
        InferenceCase(batch_size=b, dtype=d, attn=a, device=request.device, gpu=request.gpu, **size)
        for size, b, d, a in itertools.product(sizes, request.batch_sizes, request.dtypes, request.attns)
    ]


def parse_image_sizes(values: list[str]) -> tuple[tuple[int, int], ...]:
    """`224,512` and `768x1344` (height x width), from one or more --image-size flags."""
    out = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            parts = item.lower().split("x")
            try:
                hw = tuple(int(p) for p in parts)
            except ValueError:
                raise UsageError(f"--image-size `{item}` is not a size: use 1024 or HEIGHTxWIDTH, e.g. 768x1344") from None
            if len(hw) == 1:
                hw = (hw[0], hw[0])
            if len(hw) != 2 or min(hw) < 1:
                raise UsageError(f"--image-size `{item}` is not a size: use 1024 or HEIGHTxWIDTH, e.g. 768x1344")
            out.append(hw)
    return tuple(out)


def parse_int_list(values: list[str], flag: str) -> tuple[int, ...]:
    """`1,8` and repeated flags, each a positive integer."""
    out = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            if not item.isdigit() or int(item) < 1:
                raise UsageError(f"{flag} `{item}` is not a positive whole number")
            out.append(int(item))
    return tuple(out)


def parse_choices(values: list[str], flag: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """Comma lists of names, each one of `choices`."""
    out = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            if item not in choices:
                raise UsageError(f"{flag} `{item}` is not one of {', '.join(choices)}")
            out.append(item)
    return tuple(out)
