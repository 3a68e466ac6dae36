"""Resolve one reference into a ModelSpec, trying each source in order."""

from __future__ import annotations

from dataclasses import replace

from ..errors import ModelNotFoundError
from ..spec import ModelSpec, SourceOptions
from .catalog import catalog_spec, families, find_entry
from .hub import hub_spec, looks_like_repo_id
from .local import local_spec, looks_like_path
from .timm_models import is_timm_reference, resolve_timm, timm_spec_from_config

_HINT = (
    "it is not in the bundled catalogue (see `vramplan list`), not a local path and not an `owner/name` Hub id; "
    "pass a catalogued id or alias, a family name, a path to a config.json or a directory holding one, or a Hub id"
)


def expand_references(references: list) -> list:
    """Expand family names (e.g. `dinov3`) into their catalogued ids; keep everything else."""
    out: list = []
    known = families()
    for reference in references:
        family = known.get(reference.strip().lower()) if isinstance(reference, str) else None
        if family is not None and find_entry(reference) is None:
            out.extend(entry.model_id for entry in family)
        else:
            out.append(reference)
    return out


def resolve_model(reference: str, options: SourceOptions = SourceOptions()) -> ModelSpec:
    """Resolve a reference: catalogue, local path, timm name (`timm/<name>`, or any with --library timm),
    then a Hub id (cache first).

    Raises:
        ModelNotFoundError: nothing matches.
        ConfigError, HubError: the source exists but cannot be used; the message says why.
    """
    if options.library in (None, "transformers"):
        entry = find_entry(reference)
        if entry is not None:
            return catalog_spec(entry, reference)
    if looks_like_path(reference):
        spec = local_spec(reference, trust_remote_code=options.trust_remote_code)
        return as_timm_if_timm_config(spec, options.library)
    if is_timm_reference(reference, options.library):
        return resolve_timm(reference, options.library)
    if looks_like_repo_id(reference):
        return hub_spec(reference, options)
    raise ModelNotFoundError(reference, _HINT)


def as_timm_if_timm_config(spec: ModelSpec, library: str | None) -> ModelSpec:
    """A config.json with an `architecture` and no `model_type` (or --library timm) is timm's."""
    is_timm = library == "timm" or ("architecture" in spec.config and "model_type" not in spec.config)
    if not is_timm:
        return spec
    return replace(timm_spec_from_config(spec.reference, spec.config), config_path=spec.config_path)
