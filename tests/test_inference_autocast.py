"""Inference under `--autocast`: float32 weights, the forward under torch.autocast, against the CPU allocator.

The real forward runs under `torch.no_grad()` and CPU autocast: autocast's weight-cast cache
holds a lower-precision copy of each weight until the context exits, and the simulation counts
it. Under `torch.inference_mode()` torch does not use the cache: that run peaks lower, and the
simulation errs high for it by at most the copies.
"""

from __future__ import annotations

import pytest
import torch
from vramplan.build import build_model
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.spec import ModelSpec
from vramplan.testing.allocator import cpu_peak_above_baseline, random_weight_model

SMALL_VIT = {  # weights (5.4 MB) and activations of the same order, so both the cache and the casts show
    "model_type": "dinov3_vit", "hidden_size": 192, "intermediate_size": 768, "num_attention_heads": 3,
    "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16,
}


def _meta(config: dict):
    return build_model(ModelSpec(reference="tiny", model_id="tiny", library="transformers", source="test", config=config))


@pytest.mark.parametrize("attn,size,batch", [("sdpa", 224, 2), ("eager", 224, 1)])
def test_cpu_autocast_bfloat16_matches_the_allocator(attn, size, batch):
    case = InferenceCase(batch_size=batch, dtype="float32", attn=attn, device="cpu", image_size=(size, size),
                         autocast="bfloat16")
    m = measure_inference(_meta(SMALL_VIT), case, reference="tiny")
    pixels = torch.zeros(batch, 3, size, size)
    model = random_weight_model(SMALL_VIT, "float32", attn)
    real = cpu_peak_above_baseline(model, {"pixel_values": pixels}, autocast="bfloat16", no_grad=True)
    simulated = m.peak_allocated_bytes - m.parameter_bytes - m.buffer_bytes - pixels.numel() * 4
    assert abs(simulated - real) <= 0.02 * real, f"simulated {simulated} vs allocator {real} bytes"
    uncached = cpu_peak_above_baseline(model, {"pixel_values": pixels}, autocast="bfloat16")  # inference_mode
    copies = m.parameter_bytes // 2  # every weight in bfloat16
    assert uncached <= simulated <= uncached + copies * 1.02
    plain = measure_inference(_meta(SMALL_VIT), InferenceCase(batch_size=batch, dtype="float32", attn=attn,
                                                              device="cpu", image_size=(size, size)), reference="t")
    assert m.peak_allocated_bytes != plain.peak_allocated_bytes  # the casts and the cache are simulated


def test_autocast_through_the_cli(run_cli, write_config):
    """JSON carries `autocast` beside float32 weights; the case label says amp-bf16; the cast copies are counted."""
    import json

    model = str(write_config("small-vit", SMALL_VIT))
    args = ("estimate", model, "--mode", "inference", "--image-size", "224", "--device", "cpu", "--format")
    done = run_cli(*args, "json", "--autocast", "bfloat16")
    assert done.code == 0, done.err
    (case,) = json.loads(done.out)["models"][0]["inference"]
    assert (case["dtype"], case["autocast"]) == ("float32", "bfloat16")
    plain = json.loads(run_cli(*args, "json", "--dtype", "float32").out)["models"][0]["inference"][0]
    assert "autocast" not in plain
    # float32 weights stay; each weight's bfloat16 copy is held to the end of the forward.
    assert case["parameter_bytes"] == plain["parameter_bytes"]
    assert case["activation_bytes"] >= plain["parameter_bytes"] // 2
    md = run_cli(*args, "markdown", "--autocast", "bfloat16", "--batch-size", "1,2").out
    assert "| 224px | 1 | amp-bf16 |" in md and "--autocast bfloat16" in md
    rows = run_cli(*args, "csv", "--autocast", "bfloat16").out.splitlines()
    assert rows[0].endswith(",autocast") and rows[1].endswith(",bfloat16")
    assert ",float32," in rows[1]  # the weights' dtype
    assert "autocast" not in run_cli(*args, "csv").out.splitlines()[0]


@pytest.mark.parametrize("args,message", [
    (("--mode", "train", "--autocast", "bfloat16"), "--autocast needs --mode inference"),
    (("--mode", "inference", "--autocast", "float16", "--dtype", "bfloat16"), "--autocast runs float32 weights"),
])
def test_autocast_bad_combinations_say_why(run_cli, write_config, args, message):
    done = run_cli("estimate", str(write_config("small-vit", SMALL_VIT)), *args)
    assert done.code != 0 and message in done.err and "Traceback" not in done.err
