"""The inputs a model really takes: sizes other than the native one, position limits, encoder-decoder
and audio models, and --input-shape for code that takes neither images nor token ids.

Where a size now simulates that did not before, the simulated peak is checked against the real CPU
allocator running the same forward on the same inputs (vramplan.testing.allocator), within 2%.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings

import pytest
import torch

from vramplan.build import build_model
from vramplan.errors import SimulationError, UsageError
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.measure.inputs import InputShape, make_inputs, parse_input_shapes, plan_inputs
from vramplan.spec import ModelSpec
from vramplan.testing.allocator import cpu_peak_above_baseline, random_weight_model

TOLERANCE = 0.02

TINY_VIT = {"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 128, "image_size": 224, "patch_size": 16}
TINY_CLIP_VISION = {**TINY_VIT, "model_type": "clip_vision_model"}
TINY_BERT = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 128, "vocab_size": 500, "max_position_embeddings": 128}
TINY_GPT2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "vocab_size": 500, "n_positions": 256,
             "bos_token_id": 0, "eos_token_id": 0}
TINY_ROBERTA = {**TINY_BERT, "model_type": "roberta", "max_position_embeddings": 130, "pad_token_id": 1}
TINY_T5 = {"model_type": "t5", "d_model": 64, "num_layers": 2, "num_heads": 2, "d_ff": 128, "d_kv": 32,
           "vocab_size": 500}
TINY_WHISPER = {"model_type": "whisper", "d_model": 64, "encoder_layers": 2, "decoder_layers": 2,
                "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 128,
                "decoder_ffn_dim": 128, "vocab_size": 500, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
                "decoder_start_token_id": 3, "num_mel_bins": 80, "max_source_positions": 1500,
                "max_target_positions": 448}
TINY_WAV2VEC2 = {"model_type": "wav2vec2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 128, "vocab_size": 32, "conv_dim": [32] * 7,
                 "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}


def _model(config: dict):
    return build_model(ModelSpec(reference="tiny", model_id="tiny", library="transformers", source="test", config=config))


def _case(**kw) -> InferenceCase:
    return InferenceCase(**{"batch_size": 1, "dtype": "float32", "attn": "sdpa", "device": "cpu", **kw})


def _check_against_cpu_allocator(config: dict, case: InferenceCase) -> None:
    """Simulated peak above weights and inputs == the real CPU allocator's, within 2%."""
    meta = _model(config)
    simulated = measure_inference(meta, case, reference="tiny")
    real_model = random_weight_model(config, case.dtype, case.attn)
    args, inputs = make_inputs(plan_inputs(real_model), case, "tiny")  # outside meta: real CPU tensors
    assert not args
    input_bytes = sum(t.numel() * t.element_size() for t in inputs.values() if isinstance(t, torch.Tensor))
    real = cpu_peak_above_baseline(real_model, inputs)
    sim = simulated.peak_allocated_bytes - simulated.parameter_bytes - simulated.buffer_bytes - input_bytes
    assert abs(sim - real) <= TOLERANCE * real, f"simulated {sim} vs allocator {real} bytes"


@pytest.mark.parametrize("config", [TINY_VIT, TINY_CLIP_VISION], ids=["vit", "clip-vision"])
def test_vision_transformers_at_another_size_match_the_cpu_allocator(config):
    _check_against_cpu_allocator(config, _case(image_size=(384, 384)))


def test_interpolation_is_asked_for_only_away_from_the_native_size():
    plan = plan_inputs(_model(TINY_VIT))
    assert plan.interpolate_pos_encoding and plan.native_image_size == (224, 224)
    with torch.device("meta"):
        assert make_inputs(plan, _case(image_size=(384, 384)), "v")[1]["interpolate_pos_encoding"] is True
        assert "interpolate_pos_encoding" not in make_inputs(plan, _case(image_size=(224, 224)), "v")[1]


def test_vit_at_384_from_the_cli(run_cli, write_config):
    path = write_config("vit", TINY_VIT)
    result = run_cli("estimate", str(path), "--mode", "inference", "--image-size", "224,384", "--format", "json")
    assert result.code == 0, result.err
    small, large = result.json()["models"][0]["inference"]
    assert large["activation_bytes"] > 2 * small["activation_bytes"]  # (384/224)^2 = 2.9x the tokens


@pytest.mark.parametrize("config, limit, table", [
    (TINY_BERT, 128, "embeddings.position_embeddings"),
    (TINY_GPT2, 256, "wpe"),
    (TINY_ROBERTA, 128, "embeddings.position_embeddings"),  # 130 rows, counted from padding_idx + 1
])
def test_over_long_sequences_name_the_limit(config, limit, table):
    model = _model(config)
    assert plan_inputs(model).max_positions == limit
    measure_inference(model, _case(seq_len=limit), reference="m")
    with pytest.raises(SimulationError, match=f"--seq-len {limit + 1} is longer than the model's {limit} positions "
                                              f".*`{table}`.*use --seq-len {limit} or less"):
        measure_inference(model, _case(seq_len=limit + 1), reference="m")


def test_roberta_limit_is_what_a_real_forward_takes():
    model = random_weight_model(TINY_ROBERTA, "float32", "sdpa")
    model(input_ids=torch.zeros((1, 128), dtype=torch.int64))
    with pytest.raises(Exception):
        model(input_ids=torch.zeros((1, 129), dtype=torch.int64))


def test_over_long_sequence_from_the_cli(run_cli, write_config):
    path = write_config("gpt2", TINY_GPT2)
    result = run_cli("estimate", str(path), "--mode", "inference", "--seq-len", "256,100000", "--format", "json")
    assert result.code == 1
    ok, too_long = result.json()["models"][0]["inference"]
    assert ok["peak_allocated_bytes"] > 0
    assert "--seq-len 100000 is longer than the model's 256 positions" in too_long["error"]
    assert "Traceback" not in result.err


def test_rotary_positions_have_no_limit():
    llama = _model({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64})
    assert plan_inputs(llama).max_positions is None
    measure_inference(llama, _case(seq_len=100), reference="llama")


def test_t5_gets_decoder_inputs_and_matches_the_cpu_allocator():
    plan = plan_inputs(_model(TINY_T5))
    assert plan.decoder_tokens == 0  # as many as the encoder's
    _check_against_cpu_allocator(TINY_T5, _case(seq_len=64))


def test_whisper_takes_its_frames_and_a_full_decoder():
    plan = plan_inputs(_model(TINY_WHISPER))
    assert (plan.kind, plan.seq_unit, plan.exact_frames, plan.decoder_tokens) == ("audio", "frames", 3000, 448)
    _check_against_cpu_allocator(TINY_WHISPER, _case(seq_len=3000))
    with pytest.raises(SimulationError, match="takes exactly 3000 .*give --seq-len 3000 or leave it out"):
        measure_inference(_model(TINY_WHISPER), _case(seq_len=1000), reference="w")


@pytest.mark.parametrize("samples", [16_000, 48_000])
def test_wav2vec2_takes_samples(samples):
    model = _model(TINY_WAV2VEC2)
    plan = plan_inputs(model)
    assert (plan.kind, plan.seq_unit, plan.decoder_tokens) == ("audio", "samples", None)
    with torch.device("meta"):
        _, inputs = make_inputs(plan, _case(seq_len=samples, batch_size=2), "w")
    assert inputs["input_values"].shape == (2, samples) and inputs["input_values"].dtype == torch.float32
    one, three = (measure_inference(model, _case(seq_len=n), reference="w") for n in (samples, 3 * samples))
    assert three.activation_bytes > 2.5 * one.activation_bytes  # activations follow the audio's length


@pytest.mark.parametrize("batch", [1, 2])
def test_wav2vec2_matches_the_cpu_allocator(batch):  # conv1d's copies: cpu_kernels.conv_copies
    _check_against_cpu_allocator(TINY_WAV2VEC2, _case(seq_len=16_000, batch_size=batch))


def test_audio_from_the_cli(run_cli, write_config):
    wav2vec2, whisper = write_config("w2v", TINY_WAV2VEC2), write_config("whisper", TINY_WHISPER)
    result = run_cli("estimate", str(wav2vec2), str(whisper), "--mode", "inference", "--format", "json")
    assert result.code == 0, result.err
    [w2v], [wh] = (m["inference"] for m in result.json()["models"])
    assert (w2v["seq_len"], w2v["seq_unit"]) == (480_000, "samples")  # 30 s at 16 kHz
    assert (wh["seq_len"], wh["seq_unit"]) == (3000, "frames")
    table = run_cli("estimate", str(wav2vec2), "--mode", "inference", "--seq-len", "16000").out
    assert "16000 samples" in table
    report = run_cli("report", str(wav2vec2), str(whisper), "--mode", "inference", "--device", "cpu").out
    markdown = run_cli("report", str(wav2vec2), str(whisper), "--mode", "inference", "--device", "cpu",
                       "--format", "markdown").out
    assert "| mixed inputs b1 |" in markdown  # one column, 480000 samples for one model and 3000 frames for the other
    assert "480000 samples" in report and "3000 frames" in report
    wrong = run_cli("estimate", str(whisper), "--mode", "inference", "--image-size", "224")
    assert wrong.code == 1 and "is an audio model: give --seq-len (frames of audio)" in wrong.err


FACTORY = '''
import torch.nn as nn


class Encoder(nn.Module):
    def __init__(self, vocab=100, width=32):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.proj = nn.Linear(width, width)

    def forward(self, input_ids, scale=None):
        return self.proj(self.embed(input_ids)) * (1 if scale is None else scale.sum())


def encoder():
    return Encoder()


def mlp():
    return nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
'''


def test_factory_with_input_shape(run_cli, tmp_path):
    (tmp_path / "nets.py").write_text(FACTORY)
    mlp = f"{tmp_path / 'nets.py'}:mlp"
    result = run_cli("estimate", "--factory", mlp, "--mode", "inference", "--input-shape", "4x16",
                     "--dtype", "float32", "--device", "cpu", "--format", "json")
    assert result.code == 0, result.err
    [case] = result.json()["models"][0]["inference"]
    assert case["inputs"] == [{"name": None, "shape": [4, 16], "dtype": "float32"}]
    # at the peak, in float32: the 4x16 input, the first Linear's 4x64 output and GELU's 4x64 output
    assert case["activation_bytes"] == (4 * 16 + 2 * 4 * 64) * 4
    swept = run_cli("estimate", "--factory", mlp, "--mode", "inference", "--input-shape", "4x16",
                    "--batch-size", "1,8", "--format", "json")
    assert [c["inputs"][0]["shape"] for c in swept.json()["models"][0]["inference"]] == [[1, 16], [8, 16]]


def test_named_integer_inputs_go_by_keyword(run_cli, tmp_path):
    (tmp_path / "nets.py").write_text(FACTORY)
    result = run_cli("estimate", "--factory", f"{tmp_path / 'nets.py'}:encoder", "--mode", "inference",
                     "--input-shape", "input_ids:2x128:int64", "--input-shape", "scale:1x4", "--format", "table")
    assert result.code == 0, result.err
    assert "input_ids[128],scale[4]" in result.out


def test_image_default_for_a_module_that_takes_token_ids_says_what_to_give(run_cli, tmp_path):
    (tmp_path / "nets.py").write_text(FACTORY)
    result = run_cli("estimate", "--factory", f"{tmp_path / 'nets.py'}:mlp", "--mode", "inference",
                     "--image-size", "32", "--format", "json")
    assert result.code == 1  # a 3-channel image cannot go through Linear(16, ...): the error is the model's own
    assert result.json()["models"][0]["inference"][0]["error"]


@pytest.mark.parametrize("text, expected", [
    ("1x16", InputShape(None, (1, 16))),
    ("input_ids:1x128:int64", InputShape("input_ids", (1, 128), "int64")),
    ("2X3X4:bfloat16", InputShape(None, (2, 3, 4), "bfloat16")),
    ("pixel_values:1x3x64x64", InputShape("pixel_values", (1, 3, 64, 64))),
])
def test_parse_input_shapes(text, expected):
    assert parse_input_shapes([text]) == (expected,)
    assert parse_input_shapes([expected.text()]) == (expected,)


@pytest.mark.parametrize("text", ["", "1x0", "ids:1xa", "1-2:int64", "a:b:1x2", "1x2:int65"])
def test_bad_input_shapes_are_usage_errors(text, run_cli):
    with pytest.raises(UsageError):
        parse_input_shapes([text])


def test_input_shape_needs_inference_mode_and_excludes_sizes(run_cli):
    assert run_cli("estimate", "dinov3-vits16", "--input-shape", "1x16").code == 2
    assert run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--input-shape", "1x16",
                   "--seq-len", "8").code == 2


@pytest.fixture(scope="module")
def timm():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.io\.image")
        if os.environ.get("VRAMPLAN_REQUIRE_TIMM") == "1":
            return importlib.import_module("timm")
        return pytest.importorskip("timm", reason="timm is not installed: see the README's 'timm' section")


@pytest.mark.timm
def test_timm_vit_at_384_is_built_for_that_size(timm):
    from vramplan.sources.timm_models import resolve_timm

    model = build_model(resolve_timm("vit_tiny_patch16_224"))
    at_224 = measure_inference(model, _case(image_size=(224, 224)), reference="t")
    at_384 = measure_inference(model, _case(image_size=(384, 384)), reference="t")
    # timm.create_model(..., img_size=384) resamples the position embedding: (1 + 24*24) tokens, not 1 + 14*14
    assert at_384.parameter_bytes - at_224.parameter_bytes == (24 * 24 - 14 * 14) * 192 * 4
    real = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=384).eval()
    x = torch.zeros(1, 3, 384, 384)
    sim = at_384.peak_allocated_bytes - at_384.parameter_bytes - at_384.buffer_bytes - x.numel() * 4
    real_peak = cpu_peak_above_baseline(real, {"x": x})
    assert abs(sim - real_peak) <= TOLERANCE * real_peak, (sim, real_peak)
    assert sum(p.numel() for p in real.parameters()) * 4 == at_384.parameter_bytes


def test_a_main_input_that_cannot_be_made_says_to_state_it():
    from vramplan.measure.inputs import InputPlan

    plan = InputPlan(name="input_points", by_keyword=True, num_channels=3)
    assert plan.kind == "other"
    with pytest.raises(SimulationError, match="cannot make this model's `input_points`: state it with --input-shape"):
        make_inputs(plan, _case(image_size=(64, 64)), "sam")
