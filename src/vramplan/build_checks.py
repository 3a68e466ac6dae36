"""Bounds on a build: configs refused before building, and a budget on what a build may create.

A config is only numbers, and a build on the meta device costs no weights, but it still creates
one Python object per module: `num_hidden_layers: 100000000` would run for hours and past any
machine's memory, while `num_hidden_layers: -3` builds a model without layers that transformers
accepts. So:

- `check_config` refuses, before anything is built, a layer count, size or head count that is not
  a positive whole number (anywhere in the config, sub-configs included), and a layer count above
  `MAX_LAYERS`;
- `BuildBudget` stops a build that registers more than `MAX_MODULES` modules or runs longer than
  `MAX_BUILD_SECONDS`, with a one-line reason;
- `config_warnings` names what transformers accepts but no trained model has: a hidden size that
  the head count does not divide, when the config sets no `head_dim` (Qwen2's or Electra's forward
  then fails, ViT's runs with the remainder of the features left out of attention).

The bounds are generous for real models: the largest per-expert MoE of the Hub (Switch-C, 2048
experts) registers about 150,000 modules; DeepSeek-V3 (671B) about 4,000; a module on meta costs
about 2.6 KB, so the module bound keeps a build well under 1 GB of RSS.

Known limitations:
    - The budget is checked each time a module, parameter or buffer is registered: code that loops
      for long without registering anything is not stopped by the time bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .errors import BuildLimitError, ConfigError

MAX_MODULES = 200_000
MAX_BUILD_SECONDS = 120.0
MAX_LAYERS = 10_000  # per layer-count key; the deepest models published have a few hundred

LAYER_KEYS = frozenset({
    "num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
    "num_decoder_layers", "num_encoder_layers", "depth", "depths",
    # expert counts build modules the same way (a million experts is a million MLPs)
    "num_experts", "n_routed_experts", "num_local_experts",
})
# Config keys (transformers' names and their common aliases) that count layers, heads or sizes.
STRUCTURAL_KEYS = LAYER_KEYS | frozenset({
    "num_attention_heads", "num_heads", "n_head", "n_heads", "encoder_attention_heads",
    "decoder_attention_heads", "num_key_value_heads",
    "hidden_size", "hidden_sizes", "d_model", "n_embd", "embed_dim", "intermediate_size", "d_ff",
    "n_inner", "encoder_ffn_dim", "decoder_ffn_dim", "head_dim", "d_kv", "vocab_size",
    "image_size", "patch_size", "num_channels",
})


def check_config(config: dict[str, Any], reference: str) -> None:
    """Refuse a config whose layer counts, sizes or head counts are numbers but not positive whole ones.

    Values of other types (a string, say) are left to transformers, whose own checks name them.

    Raises:
        ConfigError: naming the first such key, its value and where it is.
    """
    for path, value in _structural_values(config, ""):
        items = value if isinstance(value, list) else [value]
        if not items or not all(_positive_int(v) for v in items if isinstance(v, (int, float))):
            raise ConfigError(
                reference,
                f"has `{path}` = {value!r}: layer counts, sizes and head counts must be whole numbers of at least 1",
            )
        if path.rpartition(".")[2] in LAYER_KEYS and any(_positive_int(v) and v > MAX_LAYERS for v in items):
            raise ConfigError(
                reference, f"has `{path}` = {value!r}: more than {MAX_LAYERS:,} layers, past vramplan's bound for one build"
            )


def _structural_values(config: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _structural_values(value, f"{path}.")
        elif key in STRUCTURAL_KEYS and value is not None:
            yield path, value


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def config_warnings(config: Any) -> list[str]:
    """What a built transformers config cannot run: hidden sizes the head count does not divide."""
    found = []
    for path, sub in _configs(config, ""):
        hidden = getattr(sub, "hidden_size", None)
        heads = getattr(sub, "num_attention_heads", None)
        if getattr(sub, "head_dim", None) is not None or not (isinstance(hidden, int) and isinstance(heads, int)):
            continue
        if heads > 0 and hidden % heads:
            found.append(
                f"{path}hidden_size {hidden} is not divisible by {path}num_attention_heads {heads}: transformers "
                f"builds it, but its forward either fails or gives the heads {heads * (hidden // heads)} of {hidden} features"
            )
    return found


def _configs(config: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """The config and its sub-configs (text_config, vision_config, encoder, ...), with their paths."""
    yield prefix, config
    for key, value in vars(config).items():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            yield from _configs(value, f"{prefix}{key}.")


class BuildBudget:
    """Stop a build that creates more than `max_modules` modules or runs past `max_seconds`.

    Entered, it registers torch's global registration hooks, which every `nn.Module` calls as it
    gains a submodule, parameter or buffer; past a bound the hook raises `BuildLimitError` inside
    the building code. Code that catches it does not hide it: `tripped` keeps the error.
    """

    def __init__(self, reference: str, max_modules: int | None = None, max_seconds: float | None = None) -> None:
        self.reference = reference
        self.max_modules = MAX_MODULES if max_modules is None else max_modules
        self.max_seconds = MAX_BUILD_SECONDS if max_seconds is None else max_seconds
        self.modules = 0
        self.tripped: BuildLimitError | None = None
        self._deadline = 0.0
        self._handles: list[Any] = []

    def __enter__(self) -> "BuildBudget":
        from torch.nn.modules import module

        self._deadline = time.monotonic() + self.max_seconds
        self._handles = [
            module.register_module_module_registration_hook(self._on_module),
            module.register_module_parameter_registration_hook(self._on_tensor),
            module.register_module_buffer_registration_hook(self._on_tensor),
        ]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _on_module(self, *_: Any) -> None:
        self.modules += 1
        if self.modules > self.max_modules:
            self._trip(f"it creates more than {self.max_modules:,} modules")
        self._on_tensor()

    def _on_tensor(self, *_: Any) -> None:
        if time.monotonic() > self._deadline:
            self._trip(f"building it takes longer than {self.max_seconds:g} s")

    def _trip(self, what: str) -> None:
        if self.tripped is None:
            self.tripped = BuildLimitError(self.reference, what)
        raise self.tripped
