"""The inputs a model really takes, made as meta tensors for one simulated forward.

What a model is fed is read from the model itself, once, into an `InputPlan`:

- images (`pixel_values`): (batch, channels, height, width) in the case dtype; where the forward
  takes `interpolate_pos_encoding` (HF ViT, CLIP and SigLIP vision, DINOv2...) and the size is not
  the model's own, it is passed as True, as users of those models do at other sizes; timm models
  are set to the case's size with their own `set_input_size` (as `create_model(img_size=...)`
  builds them: a ViT's position embedding is resampled, so its Parameter bytes follow the size);
- text (`input_ids`): int64 token ids, (batch, seq_len). A model with a learned position table
  (BERT's `position_embeddings`, GPT-2's `wpe`, OPT's and BART's offset tables) cannot take more
  tokens than the table has rows: a longer `--seq-len` is refused with the limit named, as a real
  run raises. Rotary and relative positions have no such limit;
- audio: `input_values` (wav2vec2, HuBERT, WavLM) are raw 16 kHz samples, (batch, seq_len):
  `--seq-len` counts samples; `input_features` (Whisper) are log-mel frames, (batch, mel bins,
  seq_len): `--seq-len` counts frames (100 per second), and Whisper's encoder takes exactly
  `max_source_positions * 2` of them (3000: 30 s), so another length is refused, naming it;
- encoder-decoder models (T5, BART, Whisper) also get `decoder_input_ids`: as many tokens as the
  encoder for text models (a teacher-forced forward, the larger of the usual cases), and the
  decoder's full `max_target_positions` for Whisper (the longest transcript it generates);
- `--input-shape` states the inputs outright, for factories and torch.hub modules: each
  `[NAME:]DIMS[:DTYPE]` (`1x16`, `input_ids:1x128:int64`); floating inputs without a dtype take
  the case dtype; inputs with a name are passed by keyword, the others by position.

Known limitations:
    - Token ids are all zeros and audio is silence: memory does not depend on the values, except
      in data-dependent code (MoE routing, masks built from padding), which sees these values.
    - Audio models whose input layout is neither of the two above need `--input-shape`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SimulationError, UsageError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from .activations import InferenceCase

IMAGE_INPUTS = ("pixel_values", "pixel_values_videos", "images", "image")
AUDIO_INPUTS = ("input_values", "input_features")
AUDIO_SAMPLE_RATE = 16_000
DEFAULT_AUDIO_SECONDS = 30
_INPUT_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


@dataclass(frozen=True)
class InputShape:
    """One input stated with --input-shape: name (None: positional), full shape, dtype (None: the case's)."""

    name: str | None
    shape: tuple[int, ...]
    dtype: str | None = None

    def text(self) -> str:
        """The --input-shape spelling, e.g. `input_ids:1x128:int64`."""
        dims = "x".join(map(str, self.shape))
        return ":".join(p for p in (self.name, dims, self.dtype) if p)


def parse_input_shapes(values: list[str]) -> tuple[InputShape, ...]:
    """Parse --input-shape flags: `[NAME:]DIMS[:DTYPE]`, dims joined by `x`.

    Raises:
        UsageError: a part that is not a name, positive dimensions or a dtype.
    """
    shapes = []
    for value in values:
        parts = value.strip().split(":")
        dtype = parts.pop() if len(parts) > 1 and parts[-1] in _INPUT_DTYPES else None
        name = parts.pop(0) if len(parts) == 2 else None
        dims = parts[0].lower().split("x") if len(parts) == 1 else []
        if (name is not None and not name.isidentifier()) or not dims or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise UsageError(
                f"--input-shape `{value}` is not [NAME:]DIMS[:DTYPE], e.g. 1x16 or input_ids:1x128:int64 "
                f"(dtypes: {', '.join(_INPUT_DTYPES)})"
            )
        shapes.append(InputShape(name, tuple(int(d) for d in dims), dtype))
    return tuple(shapes)


@dataclass(frozen=True)
class InputPlan:
    """What one model's forward is fed, read from the model once."""

    name: str  # the main input (`main_input_name`), "pixel_values" for plain modules
    by_keyword: bool  # transformers models take keywords; plain modules a positional input
    num_channels: int
    native_image_size: tuple[int, int] | None = None
    interpolate_pos_encoding: bool = False  # the forward takes it
    max_positions: int | None = None  # rows of a learned position table
    position_table: str = ""  # its module name, for the message
    decoder_tokens: int | None = None  # encoder-decoder: a fixed decoder length (Whisper), else 0 = seq_len
    mel_bins: int | None = None  # Whisper-style input_features: (batch, mel bins, frames)
    features_per_frame: int | None = None  # Speech2Text-style input_features: (batch, frames, features)
    exact_frames: int | None = None  # Whisper's encoder takes exactly this many frames

    @property
    def kind(self) -> str:
        """ "image", "text", "audio", or "other" (a main input vramplan cannot make: --input-shape states it)."""
        if self.name == "input_ids":
            return "text"
        if self.name in AUDIO_INPUTS:
            return "audio"
        return "image" if self.name in IMAGE_INPUTS or not self.by_keyword else "other"

    @property
    def seq_unit(self) -> str | None:
        """What --seq-len counts for audio models: "samples" or "frames"."""
        if self.name == "input_values":
            return "samples"
        return "frames" if self.name == "input_features" else None

    def default_seq_len(self, default_tokens: int) -> int:
        """The length simulated when --seq-len is not given."""
        if self.exact_frames:
            return self.exact_frames
        if self.name == "input_values":
            return DEFAULT_AUDIO_SECONDS * AUDIO_SAMPLE_RATE
        if self.name == "input_features":
            return DEFAULT_AUDIO_SECONDS * 100
        return min(default_tokens, self.max_positions or default_tokens)


def plan_inputs(model: "nn.Module") -> InputPlan:
    """Read what `model`'s forward takes: its main input, position limit, decoder, audio layout."""
    config = getattr(model, "config", None)
    input_name = getattr(model, "main_input_name", None)
    channels = int(getattr(config, "num_channels", None) or getattr(model, "in_chans", None) or 3)
    parameters = _forward_parameters(model)
    limit, table = _position_limit(model)
    decoder_tokens = None
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in parameters:
        decoder_tokens = int(getattr(config, "max_target_positions", 0) or 0) if input_name in AUDIO_INPUTS else 0
    mel_bins = getattr(config, "num_mel_bins", None) if input_name == "input_features" else None
    per_frame = None
    if input_name == "input_features" and mel_bins is None and getattr(config, "input_feat_per_channel", None):
        per_frame = config.input_feat_per_channel * (getattr(config, "input_channels", 1) or 1)
    exact = None
    if mel_bins and getattr(config, "max_source_positions", None) and getattr(model, "encoder", None) is not None:
        exact = _whisper_frames(model.encoder, config.max_source_positions)
    return InputPlan(
        name=input_name or "pixel_values",
        by_keyword=input_name is not None,
        num_channels=channels,
        native_image_size=_image_size(config),
        interpolate_pos_encoding="interpolate_pos_encoding" in parameters,
        max_positions=limit if input_name == "input_ids" else None,
        position_table=table,
        decoder_tokens=decoder_tokens,
        mel_bins=mel_bins,
        features_per_frame=per_frame,
        exact_frames=exact,
    )


def make_inputs(plan: InputPlan, case: "InferenceCase", reference: str) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword inputs of one forward, as meta tensors (made on the current device).

    Raises:
        SimulationError: the case asks for inputs this model cannot take (the message says why).
    """
    dtype = getattr(__import__("torch"), case.dtype)
    if case.inputs:  # --input-shape: the first dimension is the batch
        made = [(s.name, _empty((case.batch_size, *s.shape[1:]), s.dtype, dtype)) for s in case.inputs]
        return [t for name, t in made if name is None], {name: t for name, t in made if name is not None}
    if plan.kind == "other":
        raise SimulationError(reference, f"vramplan cannot make this model's `{plan.name}`: state it with --input-shape")
    inputs = _model_inputs(plan, case, dtype, reference)
    if plan.by_keyword:
        return [], inputs
    return list(inputs.values()), {}


def _model_inputs(plan: InputPlan, case: "InferenceCase", dtype: "torch.dtype", reference: str) -> dict[str, Any]:
    import torch

    if case.image_size is not None:
        if plan.kind != "image":
            raise SimulationError(reference, f"the model takes `{plan.name}`, not images: give a sequence length "
                                             f"(--seq-len, {_what_seq_len_counts(plan)}) or --input-shape")
        inputs: dict[str, Any] = {plan.name: _empty((case.batch_size, plan.num_channels, *case.image_size), None, dtype)}
        if plan.interpolate_pos_encoding and tuple(case.image_size) != plan.native_image_size:
            inputs["interpolate_pos_encoding"] = True
        return inputs
    if plan.kind == "image":
        raise SimulationError(reference, "the model takes images: give an image size (--image-size) or --input-shape, not --seq-len")
    length = case.seq_len
    if plan.kind == "audio":
        inputs = {plan.name: _audio(plan, case.batch_size, length, dtype, reference)}
    else:
        if plan.max_positions is not None and length > plan.max_positions:
            raise SimulationError(
                reference,
                f"--seq-len {length} is longer than the model's {plan.max_positions} positions (its learned "
                f"position table `{plan.position_table}`): a real run raises; use --seq-len {plan.max_positions} or less",
            )
        inputs = {plan.name: torch.zeros((case.batch_size, length), dtype=torch.int64)}
    if plan.decoder_tokens is not None:
        inputs["decoder_input_ids"] = torch.zeros((case.batch_size, plan.decoder_tokens or length), dtype=torch.int64)
    return inputs


def fit_image_size(module: "nn.Module", case: "InferenceCase", reference: str) -> None:
    """Set a timm model's input size to the case's, as `timm.create_model(..., img_size=...)` builds it.

    timm's ViTs, Swins and their kin check the image size against the one they were built for and
    size their position embeddings to it; their `set_input_size` resamples them (on meta: no data).
    """
    setter = getattr(module, "set_input_size", None)
    if case.image_size is None or setter is None or getattr(module, "pretrained_cfg", None) is None:
        return
    try:
        setter(img_size=tuple(case.image_size))
    except Exception as exc:  # timm's code raises anything for sizes it cannot take
        raise SimulationError(
            reference, f"timm could not set the input size to {case.image_size}: {type(exc).__name__}: {exc}"
        ) from exc


def _audio(plan: InputPlan, batch: int, length: int, dtype: "torch.dtype", reference: str) -> "torch.Tensor":
    import torch

    if plan.name == "input_values":
        return torch.empty((batch, length), dtype=dtype)
    if plan.exact_frames and length != plan.exact_frames:
        raise SimulationError(
            reference,
            f"--seq-len counts mel frames for this model, and its encoder takes exactly {plan.exact_frames} "
            f"({plan.exact_frames // 100} s at 100 frames/s; shorter audio is padded): give --seq-len "
            f"{plan.exact_frames} or leave it out",
        )
    if plan.mel_bins:
        return torch.empty((batch, plan.mel_bins, length), dtype=dtype)
    if plan.features_per_frame:
        return torch.empty((batch, length, plan.features_per_frame), dtype=dtype)
    raise SimulationError(
        reference, f"vramplan cannot tell the layout of this model's `{plan.name}`: state it with --input-shape"
    )


def _what_seq_len_counts(plan: InputPlan) -> str:
    return {"samples": "audio samples at 16 kHz", "frames": "mel frames, 100 per second"}.get(plan.seq_unit, "tokens")


def _empty(shape: tuple[int, ...], dtype_name: str | None, case_dtype: "torch.dtype") -> "torch.Tensor":
    import torch

    dtype = getattr(torch, dtype_name) if dtype_name else case_dtype
    if dtype.is_floating_point:
        return torch.empty(shape, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


def _forward_parameters(model: "nn.Module") -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _image_size(config: Any) -> tuple[int, int] | None:
    size = getattr(config, "image_size", None)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return (int(size), int(size)) if isinstance(size, int) else None


def _position_limit(model: "nn.Module") -> tuple[int | None, str]:
    """The fewest positions any learned position table (an nn.Embedding) of the model can index."""
    import torch.nn as nn

    best: tuple[int | None, str] = (None, "")
    for name, module in model.named_modules():
        last = name.rpartition(".")[2]
        if not isinstance(module, nn.Embedding) or not ("position" in last or last == "wpe"):
            continue
        # RoBERTa counts positions from padding_idx + 1; OPT and BART add an offset of 2.
        usable = module.num_embeddings - int(getattr(module, "offset", 0) or 0)
        if module.padding_idx is not None:
            usable -= module.padding_idx + 1
        if best[0] is None or usable < best[0]:
            best = (usable, name)
    return best


def _whisper_frames(encoder: "nn.Module", max_source_positions: int) -> int | None:
    """Frames Whisper's encoder requires: max_source_positions times its two convolutions' strides."""
    conv1, conv2 = getattr(encoder, "conv1", None), getattr(encoder, "conv2", None)
    if conv1 is None or conv2 is None:
        return None
    return max_source_positions * conv1.stride[0] * conv2.stride[0]
