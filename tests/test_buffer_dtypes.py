"""Buffers take the dtype from_pretrained(dtype=) builds them in, not the float32 of the meta build."""

from __future__ import annotations

import torch

from vramplan.build import build_model
from vramplan.measure.activations import _buffer_dtypes_built_in
from vramplan.spec import ModelSpec
from vramplan.testing.breadth import ARCHITECTURES, case_config


def _meta(name: str, size: int = 64):
    config = case_config(name, size)
    return build_model(ModelSpec(reference=name, model_id=name, library="transformers", source="test", config=config))


def test_buffers_made_in_the_default_dtype_follow_the_case_dtype():
    swinv2 = _meta("swinv2")
    built = _buffer_dtypes_built_in(swinv2, torch.bfloat16)
    tables = {name: dtype for name, dtype in built.items() if name.endswith("relative_coords_table")}
    assert tables and set(tables.values()) == {torch.bfloat16}  # "same dtype as mlp weight"
    # the simulation of this case against the real allocator: tests/test_breadth.py, swinv2-128-bfloat16


def test_buffers_made_in_float32_on_purpose_stay_float32():
    llama = _meta("llama")
    assert ARCHITECTURES["llama"]["model_type"] == "llama"
    assert set(_buffer_dtypes_built_in(llama, torch.bfloat16).values()) == {torch.float32}  # RoPE inv_freq
    assert _buffer_dtypes_built_in(llama, torch.float32) == {}  # nothing to rebuild
