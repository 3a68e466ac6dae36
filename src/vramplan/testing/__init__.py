"""Test helpers that ship with vramplan: a loopback Hugging Face Hub and fake safetensors files.

See ``vramplan.testing.hub`` for how to point huggingface_hub at the hub, in-process and in subprocesses.
"""

from __future__ import annotations

from . import hub
from .hub import *  # noqa: F403  (the names hub.__all__ lists)

__all__ = list(hub.__all__)
