"""timm models: `timm/<name>` Hub ids and bare architecture names -> ModelSpec -> meta-device model.

`accelerate estimate-memory timm/resnet50.a1_in1k --library_name timm` creates the model as
`timm.create_model("hf-hub:timm/resnet50.a1_in1k", pretrained=False)` under `init_empty_weights`,
which downloads the repo's config.json. Every repo of the `timm` organisation is named after a
pretrained tag that timm ships locally (`resnet50.a1_in1k`: architecture `resnet50`, tag `a1_in1k`),
and the tag's config gives the same head size (`num_classes`) as the Hub's. So vramplan strips
`timm/` and builds from timm's own registry: nothing is fetched, and the sizes are the ones
accelerate prints. Repos outside the `timm` organisation carry their architecture in config.json:
whoever fetched that file passes it to `timm_spec_from_config`.

timm is imported only when a timm model is asked for: importing it (and torchvision) takes seconds.

Known limitations:
    - A pretrained tag newer than the installed timm is reported as unknown: upgrade timm.
    - Models are built under `torch.device("meta")`, not accelerate's `init_empty_weights`: ~60 timm
      architectures (SwinV2-CR, hybrid ViTs, RoPE-mixed ViTs, ViTamin) compute on their parameters or
      buffers while being built and fail with only the parameters on meta. Sizes are the same either
      way, as parameters and buffers have the same shapes and dtypes.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BuildError, ConfigError, ModelNotFoundError, one_line
from ..spec import ModelSpec

if TYPE_CHECKING:
    import torch.nn as nn

LIBRARY = "timm"
HUB_ORG = "timm/"
_HF_HUB_PREFIX = "hf-hub:"
# timm names are lower-case words joined by underscores, with an optional `.tag`: `resnet50.a1_in1k`.
_TIMM_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)?$")
_FIND_NAMES = "list them with `python -c \"import timm; print(timm.list_models('*vit*'))\"`"
_INSTALL = "install timm as the README's 'timm' section shows"


def is_timm_reference(ref: str, library: str | None) -> bool:
    """Say whether `ref` names a timm model.

    `--library timm` and `timm/<name>` always do. A bare name (`resnet50.a1_in1k`) does when timm
    is installed and knows its architecture: deciding that imports timm, so call this after the
    catalogue and local paths have had their turn.
    """
    if library is not None:
        return library == LIBRARY
    name = _strip_hub_prefix(ref)
    if name.startswith(HUB_ORG):
        return True
    if not _TIMM_NAME.match(name) or importlib.util.find_spec("timm") is None:
        return False
    try:
        timm = _import_timm(ref)
    except BuildError:  # a broken timm must not stop `gpt2` from resolving elsewhere
        return False
    return timm.is_model(name)


def resolve_timm(ref: str, library: str | None = None) -> ModelSpec:
    """Resolve a `timm/<name>` Hub id or a timm model name, offline, into a spec.

    `library` is taken for a uniform call from the resolver: a timm name resolves the same with it.

    Raises:
        ModelNotFoundError: timm knows no such architecture or pretrained tag.
        BuildError: timm (or the torchvision it imports) cannot be imported.
    """
    name = _strip_hub_prefix(ref)
    if name.startswith(HUB_ORG):
        name = name[len(HUB_ORG) :]
    elif "/" in name:
        raise ModelNotFoundError(
            ref,
            "vramplan resolves `timm/<name>` ids offline from timm's registry; a timm model in another "
            f"Hub organisation needs its config.json (see the README's 'timm' section); {_FIND_NAMES}",
        )
    timm = _import_timm(ref)
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        raise ModelNotFoundError(ref, f"timm {timm.__version__} has no architecture `{arch}`; {_FIND_NAMES}")
    if tag and name not in timm.models.get_arch_pretrained_cfgs(arch):
        raise ModelNotFoundError(
            ref,
            f"timm {timm.__version__} has no pretrained tag `{tag}` for `{arch}`; list its tags with "
            f"`python -c \"import timm; print(timm.list_pretrained('{arch}.*'))\"`, or upgrade timm",
        )
    return ModelSpec(reference=ref, model_id=ref, library=LIBRARY, source="timm", config={"architecture": name})


def timm_spec_from_config(ref: str, config: dict[str, Any]) -> ModelSpec:
    """Make a spec from a timm config.json (a Hub repo outside the `timm` organisation, a local dir).

    Raises:
        ConfigError: the config names no `architecture`, so it is not timm's.
    """
    if "architecture" not in config:
        raise ConfigError(ref, "has no `architecture`, so it is not a timm config.json")
    return ModelSpec(
        reference=ref,
        model_id=ref,
        library=LIBRARY,
        source="timm",
        config={"architecture": config["architecture"], "timm_config": config},
    )


def build_timm(spec: ModelSpec) -> "nn.Module":
    """Build the spec's timm model, float32, with parameters and buffers on the meta device."""
    import torch

    timm = _import_timm(spec.model_id)
    try:
        with torch.device("meta"):
            if "timm_config" in spec.config:
                return _create_from_config(timm, spec.config["timm_config"])
            return timm.create_model(spec.config["architecture"], pretrained=False)
    except Exception as exc:  # timm's model code raises anything; the user needs one line
        raise BuildError(spec.model_id, LIBRARY, one_line(exc)) from exc


def _create_from_config(timm, config: dict[str, Any]) -> "nn.Module":
    # timm's `local-dir:` source reads config.json exactly as its `hf-hub:` source does, minus the download.
    with tempfile.TemporaryDirectory(prefix="vramplan-timm-") as folder:
        Path(folder, "config.json").write_text(json.dumps(config))
        return timm.create_model(f"local-dir:{folder}", pretrained=False)


def _import_timm(ref: str):
    """Import timm on first use, or say how to install it."""
    try:
        with warnings.catch_warnings():
            # torchvision warns at import when its image codecs cannot load; vramplan decodes no images.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.io\.image")
            import timm
    except ImportError as exc:
        raise BuildError(ref, LIBRARY, f"timm is not installed ({one_line(exc)}); {_INSTALL}") from exc
    except Exception as exc:  # a torchvision whose compiled ops do not match torch fails with RuntimeError
        raise BuildError(ref, LIBRARY, f"timm cannot be imported ({one_line(exc)}); {_INSTALL}") from exc
    return timm


def _strip_hub_prefix(ref: str) -> str:
    return ref[len(_HF_HUB_PREFIX) :] if ref.startswith(_HF_HUB_PREFIX) else ref

