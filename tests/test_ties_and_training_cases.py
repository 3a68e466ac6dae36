"""`measure/ties.py` and `measure/training_cases.py` on small hand-made modules: which parameters are tied and when
a tied copy is made, and the order and fields of the training cases a request expands to (for their mutation run:
docs/testing.md, "Third scoring")."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.nn as nn

from vramplan.errors import UsageError
from vramplan.measure.ties import shared_parameters, tie_in_place, tied_copy
from vramplan.measure.training import TrainingCase
from vramplan.measure.training_cases import TrainingRequest, training_cases_for


class _Tiable(nn.Module):
    """An embedding and a head that `tie_weights` shares, as transformers' language models do."""

    _tied_weights_keys = ["head.weight"]

    def __init__(self, fail: bool = False):
        super().__init__()
        self.embed = nn.Embedding(10, 4, device="meta")
        self.head = nn.Linear(4, 10, bias=False, device="meta")
        self.fail = fail

    def tie_weights(self):
        if self.fail:
            raise ValueError("needs more than the config")
        self.head.weight = self.embed.weight


def test_shared_parameters_name_each_second_name_once():
    model = _Tiable()
    assert shared_parameters(model) == ()
    model.tie_weights()
    model.extra = nn.Module()
    model.extra.w = model.embed.weight
    assert shared_parameters(model) == (("head.weight", "embed.weight"), ("extra.w", "embed.weight"))


def test_tie_in_place_ties_or_leaves_the_model_untied():
    model = _Tiable()
    assert tie_in_place(model) == (("head.weight", "embed.weight"),)
    assert model.head.weight is model.embed.weight
    failing = _Tiable(fail=True)
    assert tie_in_place(failing) == () and failing.head.weight is not failing.embed.weight
    assert tie_in_place(nn.Linear(2, 2, device="meta")) == ()  # no tie_weights at all


def test_tied_copy_ties_a_copy_and_keeps_the_model_as_built():
    model = _Tiable()
    copy, pairs = tied_copy(model)
    assert copy is not model and pairs == (("head.weight", "embed.weight"),)
    assert copy.head.weight is copy.embed.weight and model.head.weight is not model.embed.weight
    assert sum(p.numel() for p in copy.parameters()) == 40 and sum(p.numel() for p in model.parameters()) == 80


def test_tied_copy_returns_the_model_when_nothing_new_is_shared():
    undeclared = _Tiable()
    undeclared._tied_weights_keys = None
    assert tied_copy(undeclared) == (undeclared, ())
    declared_elsewhere = _Tiable()
    declared_elsewhere._tied_weights_keys = None
    declared_elsewhere.all_tied_weights_keys = {"head.weight": "embed.weight"}  # transformers 5 names them here
    copy, pairs = tied_copy(declared_elsewhere)
    assert copy is not declared_elsewhere and pairs == (("head.weight", "embed.weight"),)
    already = _Tiable()
    already.tie_weights()
    assert tied_copy(already) == (already, (("head.weight", "embed.weight"),))  # tying again changes nothing
    failing = _Tiable(fail=True)
    assert tied_copy(failing) == (failing, ())
    no_method = _Tiable()
    no_method.tie_weights = None
    assert tied_copy(no_method) == (no_method, ())

    class Declared(nn.Module):  # tied keys declared, no tie_weights at all
        _tied_weights_keys = ["head.weight"]

    bare = Declared()
    assert tied_copy(bare) == (bare, ())


class _Vision(nn.Module):
    def forward(self, pixel_values):
        return pixel_values


class _Text(nn.Module):
    main_input_name = "input_ids"

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(max_position_embeddings=256)

    def forward(self, input_ids):
        return input_ids


def test_training_cases_in_order_size_trains_batch_precision_optimizer_attention():
    request = TrainingRequest(image_sizes=((224, 224), (512, 256)), batch_sizes=(1, 8), precisions=("fp32", "bf16"),
                              optimizers=("sgd",), attns=("sdpa", "eager"), trains=("full", "probe", "lora"),
                              grad_checkpointing=True, lora_rank=8, lora_targets=("qkv",), num_labels=10, device="cpu")
    cases = training_cases_for(_Vision(), request, "v")
    assert len(cases) == 2 * 3 * 2 * 2 * 1 * 2

    def expect(size, batch, precision, attn, freeze="none", rank=0, targets=()):
        return TrainingCase(batch_size=batch, precision=precision, optimizer="sgd", attn=attn, device="cpu",
                            image_size=size, grad_checkpointing=True, freeze=freeze, lora_rank=rank,
                            lora_targets=targets, num_labels=10)

    assert cases[0] == expect((224, 224), 1, "fp32", "sdpa")
    assert cases[1] == expect((224, 224), 1, "fp32", "eager")
    assert cases[2] == expect((224, 224), 1, "bf16", "sdpa")
    assert cases[4] == expect((224, 224), 8, "fp32", "sdpa")
    assert cases[8] == expect((224, 224), 1, "fp32", "sdpa", freeze="backbone")  # probe: no LoRA
    assert cases[16] == expect((224, 224), 1, "fp32", "sdpa", rank=8, targets=("qkv",))
    assert cases[-1] == expect((512, 256), 8, "bf16", "eager", rank=8, targets=("qkv",))


def test_training_cases_take_sizes_as_inference_picks_them():
    (text,) = training_cases_for(_Text(), TrainingRequest(), "t")  # the model's 256 positions, under 512
    assert text == TrainingCase(batch_size=1, seq_len=256)
    (vision,) = training_cases_for(_Vision(), TrainingRequest(seq_lens=(), device="cuda"), "v")
    assert vision == TrainingCase(batch_size=1, image_size=(224, 224))
    with pytest.raises(UsageError) as exc:
        training_cases_for(_Text(), TrainingRequest(image_sizes=((224, 224),)), "t")
    assert exc.value.args[0] == "`t` is a text model: give --seq-len (tokens), not --image-size"
    lengths = training_cases_for(_Text(), TrainingRequest(seq_lens=(64, 128), lora_rank=4), "t")
    assert [(c.seq_len, c.lora_rank, c.lora_targets) for c in lengths] == [(64, 0, ()), (128, 0, ())]
