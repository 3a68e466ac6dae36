"""Resolve one reference into a ModelSpec, trying each source in order."""

from __future__ import annotations

from ..errors import ModelNotFoundError
from ..spec import ModelSpec, SourceOptions
from .catalog import catalog_spec, families, find_entry
from .hub import hub_spec, looks_like_repo_id
from .local import local_spec, looks_like_path

_HINT = (
    "it is not in the bundled catalogue (see `vramplan list`), not a local path and not an `owner/name` Hub id; "
    "pass a catalogued id or alias, a family name, a path to a config.json or a directory holding one, or a Hub id"
)


def expand_references(references: list[str]) -> list[str]:
    """Expand family names (e.g. `dinov3`) into their catalogued ids; keep everything else."""
    out: list[str] = []
    known = families()
    for reference in references:
        family = known.get(reference.strip().lower())
        if family is not None and find_entry(reference) is None:
            out.extend(entry.model_id for entry in family)
        else:
            out.append(reference)
    return out


def resolve_model(reference: str, options: SourceOptions = SourceOptions()) -> ModelSpec:
    """Resolve a reference: catalogue, then a local path, then timm names, then the Hub (cache first).

    Raises:
        ModelNotFoundError: nothing matches.
        ConfigError, HubError: the source exists but cannot be used; the message says why.
    """
    if options.library in (None, "transformers"):
        entry = find_entry(reference)
        if entry is not None:
            return catalog_spec(entry, reference)
    if looks_like_path(reference):
        return local_spec(reference, trust_remote_code=options.trust_remote_code)
    if looks_like_repo_id(reference):
        return hub_spec(reference, options)
    raise ModelNotFoundError(reference, _HINT)
