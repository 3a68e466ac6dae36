"""ModelSpec -> nn.Module on the meta device, in float32, as accelerate's estimate-memory builds it.

transformers models are built inside `torch.device("meta")` as well as accelerate's
`init_empty_weights()`: the latter alone moves each parameter to meta only after it was made on
the CPU, so one fused expert tensor of DeepSeek-V3 (30 GB) would be allocated first. The sizes are
the same either way. Every build runs under the bounds of `build_checks` (configs with
non-positive counts refused, module count and wall time bounded).

Builds are cached by what they are built from: two catalogue entries with the same config
(DINOv3's lvd1689m and sat493m ViT-L, say) build once.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

from .build_checks import BuildBudget, check_config, config_warnings
from .errors import BuildError, UnknownArchitectureError, VramplanError, one_line
from .spec import ModelSpec

if TYPE_CHECKING:
    import torch.nn as nn

_BUILT: dict[str, "nn.Module"] = {}


def clear_build_cache() -> None:
    """Forget every built model (long-running processes: the fuzzer's thousands of cases)."""
    _BUILT.clear()


def build_model(spec: ModelSpec) -> "nn.Module":
    """Build (or reuse) the meta-device model a spec describes."""
    key = spec.build_key()
    if key not in _BUILT:
        if spec.library == "transformers":
            check_config(spec.config, spec.model_id)
        budget = BuildBudget(spec.model_id)
        try:
            # Code the user named (hubconf, factories, remote code) may print: keep stdout for our output.
            with budget, contextlib.redirect_stdout(sys.stderr):
                _BUILT[key] = _builder(spec)(spec)
        except Exception:
            if budget.tripped is not None:  # whoever caught it and wrapped it, say why the build stopped
                raise budget.tripped from None
            raise
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
    try:
        return AutoConfig.for_model(model_type, **config)
    except Exception as exc:  # a config transformers rejects: strict dataclass, wrong types...
        raise BuildError(spec.model_id, "transformers", one_line(exc)) from exc


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
    for warning in config_warnings(config):
        print(f"vramplan: warning: {spec.model_id}: {warning}", file=sys.stderr)
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
        with torch.device("meta"), init_empty_weights(), _skip_weight_init():
            return build()
    except VramplanError:
        raise
    except Exception as exc:  # an __init__ that needs data (`.item()`, `.tolist()`): build as accelerate does,
        if has_huge_sizes(spec.config):  # unless its sizes would make that fill the memory (LayerNorm ones...)
            raise BuildError(spec.model_id, "transformers", f"{one_line(exc)} (sizes beyond {HUGE:,} are built on "
                             "the meta device only)") from exc
    try:
        with init_empty_weights(), _skip_weight_init():
            return build()
    except VramplanError:
        raise
    except Exception as exc:
        raise BuildError(spec.model_id, "transformers", one_line(exc)) from exc


def _skip_weight_init():
    """Skip weight initialisation: on meta it computes nothing, and sizes do not depend on it."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()

