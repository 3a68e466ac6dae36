"""Inference split over cards with accelerate's own balanced device map, each card keeping the simulated
forward's non-weight peak."""

from __future__ import annotations

import pytest

from vramplan.build import build_model
from vramplan.errors import UsageError
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.plan.inference_split import H100_BYTES, card_memory, split_inference
from vramplan.sources.resolve import resolve_model
from vramplan.spec import SourceOptions

MiB = 2**20


@pytest.fixture(scope="module")
def vitl():
    model = build_model(resolve_model("dinov3-vitl16", SourceOptions()))
    case = InferenceCase(batch_size=1, dtype="bfloat16", attn="sdpa", image_size=(224, 224))
    return model, measure_inference(model, case, reference="dinov3-vitl16")


def test_split_places_every_weight_once_and_balances(vitl):
    model, measured = vitl
    weights = measured.parameter_bytes + measured.buffer_bytes
    card = measured.peak_device_bytes - weights + 400 * MiB  # room for about two thirds of the weights
    split = split_inference(model, measured, 2, card)
    assert split.fits
    assert abs(sum(split.per_gpu_weight_bytes) - weights) < 2 * 2**20  # one allocator per card
    assert all(w > 0.4 * weights for w in split.per_gpu_weight_bytes)  # balanced, as device_map="auto"
    assert split.per_gpu_peak_bytes == tuple(w + split.reserve_bytes for w in split.per_gpu_weight_bytes)
    assert all(p <= card for p in split.per_gpu_peak_bytes)
    assert split.busiest_allocated_bytes == max(split.per_gpu_weight_bytes) + measured.peak_allocated_bytes - weights
    assert set(split.device_map.values()) == {0, 1}
    assert next(iter(split.device_map)) == "embeddings"  # accelerate's order: the model's own


def test_split_that_does_not_fit_says_how_much_goes_to_the_cpu(vitl):
    model, measured = vitl
    weights = measured.parameter_bytes + measured.buffer_bytes
    card = measured.peak_device_bytes - weights + 200 * MiB
    split = split_inference(model, measured, 2, card)
    assert not split.fits
    assert split.cpu_weight_bytes > weights - 2 * 200 * MiB
    assert "cpu" in split.device_map.values()
    assert split.as_json()["offload"] == "cpu"


def test_card_smaller_than_the_forward_holds_nothing(vitl):
    model, measured = vitl
    split = split_inference(model, measured, 4, measured.peak_device_bytes - measured.parameter_bytes - 1)
    assert not split.fits and split.per_gpu_weight_bytes == (0, 0, 0, 0)


def test_one_card_peak_is_the_single_card_simulation(vitl):
    model, measured = vitl
    split = split_inference(model, measured, 1, H100_BYTES)
    assert split.per_gpu_peak_bytes == (measured.peak_device_bytes,)
    assert split.per_gpu_allocated_bytes == (measured.peak_allocated_bytes,)


@pytest.mark.parametrize("text,value", [("80GiB", 80 * 2**30), ("81559MiB", H100_BYTES), ("24GB", 24 * 10**9),
                                        ("1.5GiB", 3 * 2**29), ("1000", 1000), (None, H100_BYTES)])
def test_card_memory_parses_sizes(text, value):
    assert card_memory(text) == value


@pytest.mark.parametrize("text", ["eighty", "80XB", "0GiB", "-1GB"])
def test_card_memory_refuses_nonsense(text):
    with pytest.raises(UsageError):
        card_memory(text)


def test_cli_json_gains_the_multi_gpu_fields(capsys):
    import json

    from vramplan.cli import main

    code = main(["estimate", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--gpus", "2",
                 "--memory", "80GiB", "--format", "json"])
    assert code == 0
    entry = json.loads(capsys.readouterr().out)["models"][0]["inference"][0]
    assert (entry["gpus"], entry["nodes"], entry["strategy"], entry["offload"]) == (2, 1, "device_map", "none")
    assert entry["cpu_bytes_per_node"] == 0 and entry["fits"]
    # each card replays its own allocator: the blocks add up to the one-card weights within a segment's slack
    assert abs(sum(entry["per_gpu_weight_bytes"]) - entry["parameter_bytes"] - entry["buffer_bytes"]) < 2 * 2**20
    working = entry["peak_allocated_bytes"] - entry["parameter_bytes"] - entry["buffer_bytes"]
    assert entry["per_gpu_peak_bytes"] == max(entry["per_gpu_weight_bytes"]) + working
    assert entry["card_bytes"] == 80 * 2**30


def test_cli_text_shows_each_card(capsys):
    from vramplan.cli import main

    assert main(["estimate", "dinov3-vits16", "--mode", "inference", "--gpus", "2", "--dtypes", "float32"]) == 0
    out = capsys.readouterr().out
    assert "over 2 GPUs (device_map='auto')" in out
    assert "│224px│  1  │bfloat16│ 0 │" in out and "│224px│  1  │bfloat16│ 1 │" in out


@pytest.mark.parametrize("argv,message", [
    (["--gpus", "2"], "--gpus needs --mode inference"),
    (["--mode", "inference", "--gpus", "0"], "must be at least 1"),
])
def test_cli_refuses_gpus_without_inference(argv, message, capsys):
    from vramplan.cli import main

    assert main(["estimate", "dinov3-vits16", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
