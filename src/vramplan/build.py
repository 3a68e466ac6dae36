"""ModelSpec -> nn.Module on the meta device, in float32, as accelerate's estimate-memory builds it.

Builds are cached by what they are built from: two catalogue entries with the same config
(DINOv3's lvd1689m and sat493m ViT-L, say) build once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import BuildError, UnknownArchitectureError, one_line
from .spec import ModelSpec

if TYPE_CHECKING:
    import torch.nn as nn

_BUILT: dict[str, "nn.Module"] = {}


def build_model(spec: ModelSpec) -> "nn.Module":
    """Build (or reuse) the meta-device model a spec describes."""
    key = spec.build_key()
    if key not in _BUILT:
        _BUILT[key] = _builder(spec)(spec)
    return _BUILT[key]


def _builder(spec: ModelSpec):
    """The function that builds this spec's library."""
    if spec.library == "transformers":
        return _build_transformers
    if spec.library == "timm":
        from .sources.timm_models import build_timm

        return build_timm
    if spec.library in ("torch.hub", "factory"):
        from .sources.torchhub import build_factory, build_torch_hub

        return build_torch_hub if spec.library == "torch.hub" else build_factory
    raise BuildError(spec.model_id, spec.library, "this library is not supported: use transformers or timm")


def clear_build_cache() -> None:
    """Forget every built model (tests and long-running processes)."""
    _BUILT.clear()


def make_transformers_config(spec: ModelSpec):
    """Turn the spec's config dict into a transformers config object."""
    from transformers import AutoConfig, CONFIG_MAPPING

    config = dict(spec.config)
    model_type = config.get("model_type")
    auto_map = config.get("auto_map")
    if model_type not in CONFIG_MAPPING:
        if auto_map and spec.trust_remote_code and spec.location:
            try:
                return AutoConfig.from_pretrained(spec.location, trust_remote_code=True, revision=spec.revision)
            except Exception as exc:  # transformers raises many types here
                raise BuildError(spec.model_id, "transformers", one_line(exc)) from exc
        raise UnknownArchitectureError(spec.model_id, model_type, remote_code=bool(auto_map))
    config.pop("model_type")
    check_layer_counts(spec.model_id, config)
    try:
        return AutoConfig.for_model(model_type, **config)
    except Exception as exc:  # a config transformers rejects: strict dataclass, wrong types...
        raise BuildError(spec.model_id, "transformers", one_line(exc)) from exc


# Config keys that say how many modules get built. Real models have at most a few hundred layers and experts;
# a count in the millions would build for hours and fill the memory with module objects before any size is known.
LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "num_experts", "n_routed_experts",
              "num_local_experts", "encoder_layers", "decoder_layers", "depth", "depths", "num_stages")
MAX_LAYERS = 4096


def check_layer_counts(reference: str, config: dict, depth: int = 0) -> None:
    """Refuse a config whose layer or expert counts (top level and sub-configs) are beyond any real model."""
    from .errors import ConfigError

    for key, value in config.items():
        if isinstance(value, dict) and depth < 3:
            check_layer_counts(reference, value, depth + 1)
        if key not in LAYER_KEYS:
            continue
        counts = value if isinstance(value, list) else [value]
        total = sum(c for c in counts if isinstance(c, int) and not isinstance(c, bool))
        if total > MAX_LAYERS:
            raise ConfigError(reference, f"has {key}={value if len(str(value)) < 40 else str(value)[:40] + '...'}: "
                              f"more than {MAX_LAYERS} layers or experts, beyond any real model; check the config")


HUGE = 1 << 24  # beyond any real width, vocabulary or context in a config.json


def has_huge_sizes(config: object, depth: int = 0) -> bool:
    """Whether a config holds a whole number beyond HUGE, at any depth up to 4."""
    if isinstance(config, bool):
        return False
    if isinstance(config, int):
        return config > HUGE
    if depth < 4 and isinstance(config, dict):
        return any(has_huge_sizes(v, depth + 1) for v in config.values())
    if depth < 4 and isinstance(config, list):
        return any(has_huge_sizes(v, depth + 1) for v in config[:64])
    return False


def _build_transformers(spec: ModelSpec) -> "nn.Module":
    import torch
    import transformers
    from accelerate import init_empty_weights

    config = make_transformers_config(spec)
    constructor = transformers.AutoModel
    # As accelerate does: remote code may name a specific AutoModelFor* class in its auto_map.
    auto_map = spec.config.get("auto_map")
    if isinstance(auto_map, dict):
        for key in auto_map:
            if key.startswith("AutoModelFor"):
                constructor = getattr(transformers, key)
                break
    build = lambda: constructor.from_config(config, dtype=torch.float32, trust_remote_code=spec.trust_remote_code)  # noqa: E731
    try:
        # Meta as the default device too: a config's huge sizes never allocate (position_ids of a 1e9-token
        # model would be 8 GB of real memory under init_empty_weights alone, which only moves tensors made).
        with init_empty_weights(), _skip_weight_init(), torch.device("meta"):
            return build()
    except Exception as exc:  # an __init__ that needs data (`.item()`, `.tolist()`): build as accelerate does,
        if has_huge_sizes(spec.config):  # unless its sizes would make that fill the memory (LayerNorm ones...)
            raise BuildError(spec.model_id, "transformers", f"{one_line(exc)} (sizes beyond {HUGE:,} are built on "
                             "the meta device only)") from exc
    try:
        with init_empty_weights(), _skip_weight_init():
            return build()
    except Exception as exc:
        raise BuildError(spec.model_id, "transformers", one_line(exc)) from exc


def _skip_weight_init():
    """Skip weight initialisation: on meta it computes nothing, and sizes do not depend on it."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()

