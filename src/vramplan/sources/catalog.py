"""The bundled catalogue: config.json files shipped as package data, under their Hub ids."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ..spec import ModelSpec


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogued model: its Hub id, short alias, family and bundled config file."""

    model_id: str
    alias: str
    family: str
    config_file: str

    def load_config(self) -> dict[str, Any]:
        """Read the bundled config.json."""
        text = resources.files("vramplan.catalog").joinpath(self.config_file).read_text(encoding="utf-8")
        return json.loads(text)


@lru_cache(maxsize=1)
def _index() -> dict[str, Any]:
    return json.loads(resources.files("vramplan.catalog").joinpath("index.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def catalog_entries() -> tuple[CatalogEntry, ...]:
    """Return every catalogued model, sorted by id."""
    entries = (CatalogEntry(e["id"], e["alias"], e["family"], e["config"]) for e in _index()["models"])
    return tuple(sorted(entries, key=lambda e: e.model_id))


def families() -> dict[str, tuple[CatalogEntry, ...]]:
    """Map each family name to its entries."""
    out: dict[str, list[CatalogEntry]] = {}
    for entry in catalog_entries():
        out.setdefault(entry.family, []).append(entry)
    return {name: tuple(entries) for name, entries in out.items()}


def family_title(name: str) -> str | None:
    """The display title of a family (`dinov3` -> `DINOv3`), None if unknown."""
    family = _index().get("families", {}).get(name.strip().lower())
    return family["title"] if family else None


def find_entry(reference: str) -> CatalogEntry | None:
    """Find a catalogued model by Hub id or alias (ids are matched case-insensitively, as the Hub does)."""
    wanted = reference.strip().lower()
    for entry in catalog_entries():
        if wanted in (entry.model_id.lower(), entry.alias.lower()):
            return entry
    return None


def catalog_spec(entry: CatalogEntry, reference: str) -> ModelSpec:
    """Turn a catalogue entry into a spec."""
    return ModelSpec(
        reference=reference,
        model_id=entry.model_id,
        library="transformers",
        source="catalog",
        config=entry.load_config(),
    )
