"""Resolve one reference into a ModelSpec, trying each source in order."""

from __future__ import annotations

from ..errors import ModelNotFoundError
from ..spec import ModelSpec
from .catalog import catalog_spec, families, find_entry
from .local import local_spec, looks_like_path

_HINT = (
    "it is neither in the bundled catalogue (see `vramplan list`) nor a local path; "
    "pass a catalogued id or alias, a family name, or a path to a config.json or a directory holding one"
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


def resolve_model(reference: str, *, trust_remote_code: bool = False) -> ModelSpec:
    """Resolve a reference: bundled catalogue first, then a local path.

    Raises:
        ModelNotFoundError: nothing matches.
        ConfigError: a local config exists but is unreadable.
    """
    entry = find_entry(reference)
    if entry is not None:
        return catalog_spec(entry, reference)
    if looks_like_path(reference):
        return local_spec(reference, trust_remote_code=trust_remote_code)
    raise ModelNotFoundError(reference, _HINT)
