"""ModelSpec: what a source resolves a reference into, and what build() needs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model reference: enough to build the model on the meta device.

    Attributes:
        reference: what the user typed (an id, alias, path).
        model_id: the canonical name shown in reports (Hub id, catalogue id, or path).
        library: "transformers", "timm" or "torch.hub".
        source: where the description came from ("catalog", "local", "hub", ...).
        config: the transformers config dict (library "transformers"), else library-specific data.
        trust_remote_code: never implied; only what the user passed.
        location: where remote modelling code lives (a directory or Hub id), if the config needs it.
    """

    reference: str
    model_id: str
    library: str
    source: str
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    trust_remote_code: bool = False
    location: str | None = None  # local directory or Hub id holding remote code, when there is any
    revision: str | None = None  # Hub revision asked for (branch, tag or commit)
    config_path: str | None = None  # the config.json read, when it is a file here (local, cache)
    repo_files: tuple[tuple[str, int | None], ...] = field(default=(), compare=False)  # Hub listing: (name, size)

    def cli_args(self) -> tuple[str, ...]:
        """The `vramplan estimate` arguments that name this model again."""
        kwargs = tuple(f"--kwarg={k}={v if isinstance(v, str) else json.dumps(v)}"
                       for k, v in self.config.get("kwargs", {}).items())
        if self.library == "torch.hub":
            return ("--hub-repo", self.config["repo_dir"], "--entrypoint", self.config["entrypoint"], *kwargs)
        if self.library == "factory":
            return ("--factory", self.config["target"], *kwargs)
        words: tuple[str, ...] = (self.reference if self.source == "local" else self.model_id,)
        if self.library == "timm" and not self.model_id.startswith("timm/"):
            words += ("--library", "timm")
        if self.revision:
            words += ("--revision", self.revision)
        if self.trust_remote_code:
            words += ("--trust-remote-code",)
        return words

    def build_key(self) -> str:
        """Return a key that is equal for specs that build the same module."""
        return json.dumps([self.library, self.config, self.trust_remote_code], sort_keys=True, default=str)


@dataclass(frozen=True)
class SourceOptions:
    """How to resolve references: library override, remote code, Hub revision and timeout."""

    library: str | None = None  # None: the source decides (catalogue, Hub metadata)
    trust_remote_code: bool = False  # never implied
    revision: str | None = None
    timeout: float = 10.0  # seconds for any one Hub look-up


@dataclass(frozen=True)
class DeferredSpec:
    """A spec made when the pipeline reaches it, so that making it can fail for this model alone."""

    name: str
    make: Callable[[], ModelSpec]
