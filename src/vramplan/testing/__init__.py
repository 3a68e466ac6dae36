"""Test helpers that ship with vramplan: a loopback Hugging Face Hub and fake safetensors files.

See ``vramplan.testing.hub`` for how to point huggingface_hub at the hub, in-process and in subprocesses.
"""

from __future__ import annotations

from .hub import (
    Fault,
    HubRequest,
    LoopbackHub,
    SparseFile,
    safetensors_bytes,
    sparse_safetensors,
    use_loopback_hub,
)

__all__ = [
    "Fault",
    "HubRequest",
    "LoopbackHub",
    "SparseFile",
    "safetensors_bytes",
    "sparse_safetensors",
    "use_loopback_hub",
]
