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
# Bounds on what a user may ask for: far beyond any GPU, yet small enough that every shape fits torch's int64.
MAX_BATCH = 1 << 20
MAX_IMAGE_SIDE = 1 << 16
MAX_SEQ_LEN = 1 << 24


@dataclass(frozen=True)
class InferenceRequest:
    """What the user asked to simulate; empty sizes mean the model's own default input size."""

    image_sizes: tuple[tuple[int, int], ...] = ()
    seq_lens: tuple[int, ...] = ()
    batch_sizes: tuple[int, ...] = (1,)
    dtypes: tuple[str, ...] = ("bfloat16",)
    attns: tuple[str, ...] = ("sdpa",)
    device: str = "cuda"
    input_shapes: tuple = ()  # inputs.InputShape from --input-shape: used in place of sizes and lengths
    gpu: Any = None  # plan.gpus.GpuSpec of the CUDA target; None: the default H100 SXM
    autocast: str | None = None  # --autocast: float32 weights, the forward under torch.autocast(dtype)


def input_kind(model: "nn.Module") -> str:
    """"image" for models fed pixel_values, "text" for token ids, "audio" for samples or mel frames."""
    from .inputs import plan_inputs

    return plan_inputs(model).kind


def cases_for(model: "nn.Module", request: InferenceRequest, reference: str) -> list["InferenceCase"]:
    """Expand a request into cases for this model (image sizes for vision models, lengths for text and audio)."""
    from .activations import InferenceCase
    from .inputs import plan_inputs

    config = getattr(model, "config", None)
    plan = plan_inputs(model)
    if request.input_shapes:
        sizes = [dict(inputs=request.input_shapes)]
    elif plan.kind in ("text", "audio"):
        if request.image_sizes and not request.seq_lens:
            counts = f"{plan.seq_unit} of audio" if plan.seq_unit else "tokens"
            raise UsageError(f"`{reference}` is {'an audio' if plan.kind == 'audio' else 'a text'} model: give --seq-len ({counts}), not --image-size")
        limit = getattr(config, "max_position_embeddings", None) or DEFAULT_SEQ_LEN
        default = plan.default_seq_len(min(DEFAULT_SEQ_LEN, limit))
        sizes = [dict(seq_len=n, seq_unit=plan.seq_unit) for n in (request.seq_lens or (default,))]
    else:
        if request.seq_lens and not request.image_sizes:
            raise UsageError(f"`{reference}` is a vision model: give --image-size, not --seq-len")
        default = getattr(config, "image_size", None) or 224
        default_hw = tuple(default) if isinstance(default, (list, tuple)) else (int(default), int(default))
        sizes = [dict(image_size=hw) for hw in (request.image_sizes or (default_hw,))]
    return [
        InferenceCase(batch_size=b, dtype=d, attn=a, device=request.device, gpu=request.gpu,
                      autocast=request.autocast, **size)
        for size, b, d, a in itertools.product(sizes, request.batch_sizes, request.dtypes, request.attns)
        if case_conflict(d, a, request.device) is None
    ]


def case_conflict(dtype: str, attn: str, device: str) -> str | None:
    """Why this dtype, attention and device cannot go together (flash_attention_2's limits), or None."""
    if attn == "flash" and device != "cuda":
        return "flash attention (flash_attention_2) runs on CUDA only"
    if attn == "flash" and dtype == "float32":
        return "flash attention (flash_attention_2) supports float16 and bfloat16 only"
    return None


def skipped_combinations(request: InferenceRequest) -> list[str]:
    """A note per (dtype, attention) pair of the sweep that cannot run; UsageError when none can.

    Raises:
        UsageError: every pair conflicts, so there is nothing to simulate.
    """
    notes = []
    for dtype, attn in itertools.product(request.dtypes, request.attns):
        reason = case_conflict(dtype, attn, request.device)
        if reason is not None:
            notes.append(f"skipped --attn {attn} with --dtype {dtype} --device {request.device}: {reason}")
    if len(notes) == len(request.dtypes) * len(request.attns):
        raise UsageError("nothing to simulate: " + "; ".join(n.removeprefix("skipped ") for n in notes))
    return notes


def parse_image_sizes(values: list[str]) -> tuple[tuple[int, int], ...]:
    """`224,512` and `768x1344` (height x width), from one or more --image-size flags."""
    out = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            parts = item.lower().split("x")
            if not all(p.isascii() and p.isdigit() for p in parts):  # int() would take "1_0", " 1" or "١"
                raise UsageError(f"--image-size `{item}` is not a size: use 1024 or HEIGHTxWIDTH, e.g. 768x1344")
            hw = tuple(int(p) for p in parts)
            if len(hw) == 1:
                hw = (hw[0], hw[0])
            if len(hw) != 2 or min(hw) < 1:
                raise UsageError(f"--image-size `{item}` is not a size: use 1024 or HEIGHTxWIDTH, e.g. 768x1344")
            if max(hw) > MAX_IMAGE_SIDE:
                raise UsageError(f"--image-size `{item}` is more than {MAX_IMAGE_SIDE} pixels a side")
            out.append(hw)
    return tuple(out)


def parse_int_list(values: list[str], flag: str, limit: int | None = None) -> tuple[int, ...]:
    """`1,8` and repeated flags, each a positive integer (at most `limit`)."""
    out = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            if not (item.isascii() and item.isdigit()) or int(item) < 1:
                raise UsageError(f"{flag} `{item}` is not a positive whole number")
            if limit is not None and int(item) > limit:
                raise UsageError(f"{flag} `{item}` is more than {limit:,}")
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
