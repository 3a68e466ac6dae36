"""The simulated CPU peak against the real CPU allocator, on small random-weight models.

The same forward runs for real under torch.profiler (profile_memory=True), whose memory events
are the CPU allocator's stream of allocations and frees; their running sum's maximum is the
peak above what existed before the forward (weights, buffers, the input). The simulation's
peak minus those same bytes must agree within 2%.
"""

from __future__ import annotations

import pytest
import torch
from vramplan.build import build_model
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.spec import ModelSpec
from vramplan.testing.allocator import cpu_peak_above_baseline, random_weight_model

TOLERANCE = 0.02

TINY_VIT = {
    "model_type": "dinov3_vit",
    "hidden_size": 192,
    "intermediate_size": 768,
    "num_attention_heads": 3,
    "num_hidden_layers": 2,
    "num_register_tokens": 4,
    "patch_size": 16,
}
TINY_GATED_VIT = {**TINY_VIT, "hidden_size": 128, "num_attention_heads": 2, "use_gated_mlp": True}
TINY_CONVNEXT = {"model_type": "dinov3_convnext", "depths": [1, 1, 2, 1], "hidden_sizes": [16, 32, 64, 128]}
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 500,
    "max_position_embeddings": 256,
}


def _simulated_peak_above_baseline(config: dict, case: InferenceCase, input_bytes: int) -> int:
    meta = build_model(ModelSpec(reference="tiny", model_id="tiny", library="transformers", source="test", config=config))
    m = measure_inference(meta, case, reference="tiny")
    return m.peak_allocated_bytes - m.parameter_bytes - m.buffer_bytes - input_bytes


def _check(config: dict, case: InferenceCase, inputs: dict) -> None:
    real = cpu_peak_above_baseline(random_weight_model(config, case.dtype, case.attn), inputs)
    input_bytes = sum(t.numel() * t.element_size() for t in inputs.values())
    simulated = _simulated_peak_above_baseline(config, case, input_bytes)
    assert abs(simulated - real) <= TOLERANCE * real, f"simulated {simulated} vs allocator {real} bytes"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("size", [224, 320])
@pytest.mark.parametrize("batch", [1, 2])
def test_vit_matches_the_cpu_allocator(dtype, attn, size, batch):
    case = InferenceCase(batch_size=batch, dtype=dtype, attn=attn, device="cpu", image_size=(size, size))
    pixels = torch.randn(batch, 3, size, size, dtype=getattr(torch, dtype))
    _check(TINY_VIT, case, {"pixel_values": pixels})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gated_vit_at_a_non_square_size(dtype):
    case = InferenceCase(batch_size=2, dtype=dtype, attn="sdpa", device="cpu", image_size=(192, 384))
    _check(TINY_GATED_VIT, case, {"pixel_values": torch.randn(2, 3, 192, 384, dtype=getattr(torch, dtype))})


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("size", [224, 320])
def test_convnext_matches_the_cpu_allocator(dtype, size):
    # ConvNeXt has no attention; transformers accepts only "eager" for it.
    case = InferenceCase(batch_size=2, dtype=dtype, attn="eager", device="cpu", image_size=(size, size))
    _check(TINY_CONVNEXT, case, {"pixel_values": torch.randn(2, 3, size, size, dtype=getattr(torch, dtype))})


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("seq_len", [64, 200])
def test_text_model_matches_the_cpu_allocator(attn, seq_len):
    case = InferenceCase(batch_size=2, dtype="float32", attn=attn, device="cpu", seq_len=seq_len)
    _check(TINY_BERT, case, {"input_ids": torch.randint(0, 500, (2, seq_len))})
