"""`measure/inputs.py` on hand-made modules: --input-shape parsing, the plan read from a model, and the tensors a
forward is fed (shapes, dtypes, refusals), each value worked out from the module's docstring rules (for its
mutation run: docs/testing.md, "Third scoring"). Small modules built on the meta device: no transformers model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from vramplan.errors import SimulationError, UsageError
from vramplan.measure.activations import InferenceCase
from vramplan.measure.inputs import (
    InputPlan, InputShape, fit_image_size, make_inputs, parse_input_shapes, plan_inputs,
)


def _case(**kw) -> InferenceCase:
    return InferenceCase(**{"batch_size": 2, "dtype": "float16", "attn": "sdpa", "device": "cpu", **kw})


def _reason(exc) -> str:
    """A refusal's reason, after checking it names the model (the one-line message starts with it)."""
    assert exc.value.reference == "m"
    return exc.value.reason


def test_input_shape_text_is_the_flag_spelling():
    assert InputShape("input_ids", (1, 128), "int64").text() == "input_ids:1x128:int64"
    assert InputShape(None, (2, 3, 4)).text() == "2x3x4"


@pytest.mark.parametrize("flag, shape", [
    ("1x16", InputShape(None, (1, 16))),
    (" input_ids:1X128:int64 ", InputShape("input_ids", (1, 128), "int64")),
    ("1x16:float16", InputShape(None, (1, 16), "float16")),
    ("mask:4x8", InputShape("mask", (4, 8))),
])
def test_parse_input_shapes(flag, shape):
    assert parse_input_shapes([flag]) == (shape,)


@pytest.mark.parametrize("flag", ["float16", "1x2:3x4:5x6", "bad-name:1x2", "0x2", "input_ids:", "1x2:int4", "x"])
def test_parse_input_shapes_refuses_with_the_grammar(flag):
    with pytest.raises(UsageError) as exc:
        parse_input_shapes([flag])
    assert exc.value.args[0] == (
        f"--input-shape `{flag}` is not [NAME:]DIMS[:DTYPE], e.g. 1x16 or input_ids:1x128:int64 (dtypes: float32, "
        "float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool)")


@pytest.mark.parametrize("plan, kind, unit, length", [
    (InputPlan("input_ids", True, 3, max_positions=128), "text", None, 128),  # the position table's 128
    (InputPlan("input_ids", True, 3), "text", None, 512),
    (InputPlan("input_values", True, 1), "audio", "samples", 480_000),  # 30 s at 16 kHz
    (InputPlan("input_features", True, 1), "audio", "frames", 3000),  # 30 s at 100 frames/s
    (InputPlan("input_features", True, 1, exact_frames=1500), "audio", "frames", 1500),
    (InputPlan("pixel_values", True, 3), "image", None, 512),
    (InputPlan("inputs_embeds", False, 3), "image", None, 512),  # a plain module: fed an image positionally
    (InputPlan("inputs_embeds", True, 3), "other", None, 512),
])
def test_plan_kind_unit_and_default_length(plan, kind, unit, length):
    assert (plan.kind, plan.seq_unit, plan.default_seq_len(512)) == (kind, unit, length)


class _Vision(nn.Module):
    main_input_name = "pixel_values"

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(num_channels=1, image_size=[32, 48])

    def forward(self, pixel_values, interpolate_pos_encoding=False):
        return pixel_values


class _Text(nn.Module):
    main_input_name = "input_ids"

    def __init__(self, encoder_decoder=False):
        super().__init__()
        self.config = SimpleNamespace(is_encoder_decoder=encoder_decoder, image_size=224)
        self.position_embeddings = nn.Embedding(514, 8, padding_idx=1, device="meta")  # RoBERTa: 514 - 2 = 512
        self.decoder = nn.Module()
        self.decoder.wpe = nn.Embedding(1026, 8, device="meta")
        self.decoder.wpe.offset = 2  # BART's offset: 1024
        self.tokens = nn.Embedding(100, 8, device="meta")  # not a position table

    def forward(self, input_ids, decoder_input_ids=None):
        return input_ids


class _Whisper(nn.Module):
    main_input_name = "input_features"

    def __init__(self, mel=True):
        super().__init__()
        self.config = SimpleNamespace(is_encoder_decoder=True, max_target_positions=448, max_source_positions=1500,
                                      num_mel_bins=80 if mel else None, input_feat_per_channel=40, input_channels=2)
        self.encoder = nn.Module()
        self.encoder.conv1 = nn.Conv1d(80, 8, 3, stride=1, device="meta")
        self.encoder.conv2 = nn.Conv1d(8, 8, 3, stride=2, device="meta")

    def forward(self, input_features, decoder_input_ids=None):
        return input_features


class _Plain(nn.Module):
    in_chans = 4

    def forward(self, x):
        return x


def test_plan_of_a_vision_model():
    assert plan_inputs(_Vision()) == InputPlan("pixel_values", True, 1, native_image_size=(32, 48),
                                               interpolate_pos_encoding=True)


def test_plan_of_a_text_model_takes_the_shortest_position_table():
    plan = plan_inputs(_Text())
    assert plan == InputPlan("input_ids", True, 3, native_image_size=(224, 224), max_positions=512,
                             position_table="position_embeddings")
    assert plan_inputs(_Text(encoder_decoder=True)).decoder_tokens == 0  # as many decoder tokens as encoder ones
    marian = _Text(encoder_decoder=True)
    marian.config.max_target_positions = 448  # a fixed decoder length is Whisper's (audio) alone
    assert plan_inputs(marian).decoder_tokens == 0


def test_a_decoder_input_without_an_encoder_decoder_config_is_not_fed():
    model = _Text(encoder_decoder=True)
    del model.config.is_encoder_decoder  # the forward takes decoder_input_ids, the config does not say
    assert plan_inputs(model).decoder_tokens is None


def test_plan_of_whisper_and_speech2text():
    assert plan_inputs(_Whisper()) == InputPlan("input_features", True, 3, decoder_tokens=448, mel_bins=80,
                                                exact_frames=3000)  # 1500 positions x strides 1 and 2
    speech = plan_inputs(_Whisper(mel=False))
    assert (speech.mel_bins, speech.features_per_frame, speech.exact_frames) == (None, 80, None)  # 40 x 2 channels


def test_whisper_without_its_two_convolutions_has_no_exact_length():
    model = _Whisper()
    del model.encoder.conv1
    assert plan_inputs(model).exact_frames is None
    model = _Whisper()
    del model.encoder.conv2
    assert plan_inputs(model).exact_frames is None


def test_plan_of_a_plain_module():
    assert plan_inputs(_Plain()) == InputPlan("pixel_values", False, 4)


def _shapes(inputs):
    args, kwargs = inputs
    return [(tuple(t.shape), t.dtype) for t in args], {k: (tuple(v.shape), v.dtype) if torch.is_tensor(v) else v
                                                       for k, v in kwargs.items()}


def test_images_at_another_size_ask_for_interpolated_positions():
    plan = plan_inputs(_Vision())
    assert _shapes(make_inputs(plan, _case(image_size=(64, 64)), "m")) == (
        [], {"pixel_values": ((2, 1, 64, 64), torch.float16), "interpolate_pos_encoding": True})
    assert _shapes(make_inputs(plan, _case(image_size=(32, 48)), "m")) == (
        [], {"pixel_values": ((2, 1, 32, 48), torch.float16)})
    assert _shapes(make_inputs(plan_inputs(_Plain()), _case(image_size=(8, 8)), "m")) == (
        [((2, 4, 8, 8), torch.float16)], {})


def test_text_inputs_and_the_position_limit():
    plan = plan_inputs(_Text(encoder_decoder=True))
    assert _shapes(make_inputs(plan, _case(seq_len=512), "m")) == (
        [], {"input_ids": ((2, 512), torch.int64), "decoder_input_ids": ((2, 512), torch.int64)})
    with pytest.raises(SimulationError) as exc:
        make_inputs(plan, _case(seq_len=513), "m")
    assert _reason(exc) == ("--seq-len 513 is longer than the model's 512 positions (its learned position table "
                                "`position_embeddings`): a real run raises; use --seq-len 512 or less")


def test_audio_inputs():
    whisper = plan_inputs(_Whisper())
    assert _shapes(make_inputs(whisper, _case(seq_len=3000), "m")) == (
        [], {"input_features": ((2, 80, 3000), torch.float16), "decoder_input_ids": ((2, 448), torch.int64)})
    with pytest.raises(SimulationError) as exc:
        make_inputs(whisper, _case(seq_len=1000), "m")
    assert _reason(exc) == ("--seq-len counts mel frames for this model, and its encoder takes exactly 3000 (30 s "
                                "at 100 frames/s; shorter audio is padded): give --seq-len 3000 or leave it out")
    speech = plan_inputs(_Whisper(mel=False))
    assert _shapes(make_inputs(speech, _case(seq_len=7), "m"))[1]["input_features"] == ((2, 7, 80), torch.float16)
    wav = InputPlan("input_values", True, 1)
    assert _shapes(make_inputs(wav, _case(seq_len=16000), "m")) == ([], {"input_values": ((2, 16000), torch.float16)})
    with pytest.raises(SimulationError) as exc:
        make_inputs(InputPlan("input_features", True, 1), _case(seq_len=10), "m")
    assert _reason(exc) == ("vramplan cannot tell the layout of this model's `input_features`: "
                                "state it with --input-shape")


@pytest.mark.parametrize("plan, counts", [
    (InputPlan("input_values", True, 1), "audio samples at 16 kHz"),
    (InputPlan("input_features", True, 1), "mel frames, 100 per second"),
    (InputPlan("input_ids", True, 1), "tokens"),
])
def test_an_image_size_for_a_sequence_model_says_what_seq_len_counts(plan, counts):
    with pytest.raises(SimulationError) as exc:
        make_inputs(plan, _case(image_size=(8, 8)), "m")
    assert _reason(exc) == (f"the model takes `{plan.name}`, not images: give a sequence length (--seq-len, "
                                f"{counts}) or --input-shape")


def test_refusals_of_images_by_length_and_of_unknown_inputs():
    with pytest.raises(SimulationError) as exc:
        make_inputs(plan_inputs(_Vision()), _case(seq_len=8), "m")
    assert _reason(exc) == "the model takes images: give an image size (--image-size) or --input-shape, not --seq-len"
    with pytest.raises(SimulationError) as exc:
        make_inputs(InputPlan("inputs_embeds", True, 3), _case(seq_len=8), "m")
    assert _reason(exc) == "vramplan cannot make this model's `inputs_embeds`: state it with --input-shape"


def test_stated_input_shapes_take_the_batch_and_the_case_dtype():
    shapes = (InputShape(None, (1, 3, 8, 8)), InputShape("mask", (1, 8), "bool"), InputShape("ids", (5, 4), "int64"))
    args, kwargs = make_inputs(InputPlan("inputs_embeds", True, 3), _case(inputs=shapes, batch_size=3), "m")
    assert [(tuple(t.shape), t.dtype) for t in args] == [((3, 3, 8, 8), torch.float16)]
    assert {k: (tuple(v.shape), v.dtype) for k, v in kwargs.items()} == {
        "mask": ((3, 8), torch.bool), "ids": ((3, 4), torch.int64)}
    assert not kwargs["mask"].any() and not kwargs["ids"].any()  # integer and boolean inputs are zeros


class _Timm(nn.Module):
    pretrained_cfg = {}

    def __init__(self, fail=False):
        super().__init__()
        self.sizes, self.fail = [], fail

    def set_input_size(self, img_size):
        if self.fail:
            raise ValueError("odd size")
        self.sizes.append(img_size)


def test_fit_image_size_sets_timm_models_to_the_case_size():
    timm = _Timm()
    fit_image_size(timm, _case(image_size=(64, 32)), "m")
    fit_image_size(timm, _case(seq_len=4), "m")  # no image: nothing to set
    assert timm.sizes == [(64, 32)]
    bare = _Timm()
    bare.pretrained_cfg = None  # not built by timm: left alone
    fit_image_size(bare, _case(image_size=(64, 32)), "m")
    assert bare.sizes == []

    class Sized(nn.Module):  # a set_input_size, no pretrained_cfg at all
        def set_input_size(self, img_size):
            raise AssertionError("not a timm model: not called")

    fit_image_size(Sized(), _case(image_size=(64, 32)), "m")
    with pytest.raises(SimulationError) as exc:
        fit_image_size(_Timm(fail=True), _case(image_size=(64, 32)), "m")
    assert _reason(exc) == "timm could not set the input size to (64, 32): ValueError: odd size"
