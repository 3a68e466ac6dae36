"""Refusals of the training simulation name the model and say why (mutation survivors of measure/training.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vramplan.build import build_model
from vramplan.errors import SimulationError
from vramplan.measure.training import TrainingCase, measure_training
from vramplan.spec import ModelSpec


class _ReadsAFloatWhileTraining(nn.Module):
    """A patch embedding whose training forward reads a value (`float(tensor)`); the probe's sizing forward,
    under no_grad, does not."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return tokens * (float(tokens.mean()) if torch.is_grad_enabled() else 1.0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_value_read_in_the_training_forward_is_refused_naming_the_model():
    with torch.device("meta"):
        model = _ReadsAFloatWhileTraining()
    case = TrainingCase(batch_size=2, precision="fp32", device="cpu", image_size=(32, 32), num_labels=4)
    with pytest.raises(SimulationError) as exc:
        measure_training(model, case, reference="reads-a-float")
    assert str(exc.value) == (
        "Could not simulate the forward pass of `reads-a-float`: the forward reads a torch.float32 tensor's value "
        "(`.item()`), which can decide a tensor's size; it cannot be simulated without data")


def test_the_linear_probe_of_a_text_backbone_is_refused_with_the_task_class_to_use():
    config = {"model_type": "bert", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
              "num_hidden_layers": 1, "vocab_size": 100, "max_position_embeddings": 64}
    model = build_model(ModelSpec(reference="tiny-bert", model_id="tiny-bert", library="transformers",
                                  source="test", config=config))
    with pytest.raises(SimulationError) as exc:
        measure_training(model, TrainingCase(batch_size=1, device="cpu", seq_len=16), reference="tiny-bert")
    assert str(exc.value) == (
        "Could not simulate the forward pass of `tiny-bert`: the linear probe is for vision backbones: a text model "
        "needs a task class (architectures[0] such as BertForSequenceClassification)")


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x, *, scale):  # a keyword argument the block cannot do without
        return torch.relu(self.fc(x)) * scale


class _KeywordBlocks(nn.Module):
    """A plain (torch.hub-style) backbone whose blocks take a keyword argument."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 64, 4, stride=4)
        self.blocks = nn.ModuleList(_Block() for _ in range(3))

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens, scale=0.5)
        return tokens


def test_checkpointed_blocks_of_a_plain_module_keep_their_keyword_arguments():
    with torch.device("meta"):
        model = _KeywordBlocks()
    case = dict(batch_size=64, precision="fp32", device="cpu", image_size=(64, 64), num_labels=4)
    plain = measure_training(model, TrainingCase(**case), reference="keyword-blocks")
    with torch.device("meta"):
        model = _KeywordBlocks()
    checkpointed = measure_training(model, TrainingCase(**case, grad_checkpointing=True), reference="keyword-blocks")
    assert checkpointed.activation_bytes < plain.activation_bytes  # the blocks ran, checkpointed, with `scale`


class _MaskedAttention(nn.Module):
    """Patch tokens through SDPA with a boolean mask (the CPU flash kernel takes it as an additive float mask)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 8, stride=8)
        self.qkv = nn.Linear(32, 96)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).unflatten(-1, (3, 2, 16)).permute(2, 0, 3, 1, 4)
        keep = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool, device=x.device).tril()
        return tokens + nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).flatten(2)


def test_a_boolean_attention_mask_in_a_training_forward_is_simulated():
    with torch.device("meta"):
        model = _MaskedAttention()
    case = TrainingCase(batch_size=2, precision="fp32", device="cpu", image_size=(64, 64), num_labels=4)
    measured = measure_training(model, case, reference="masked-attention")
    assert measured.peak_allocated_bytes > measured.parameter_bytes * 4  # weights, gradients, two AdamW states


def test_a_frozen_task_model_trains_only_what_is_outside_its_base_model():
    config = {"model_type": "vit", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
              "num_hidden_layers": 1, "image_size": 32, "patch_size": 16, "num_labels": 10,
              "architectures": ["ViTForImageClassification"]}
    model = build_model(ModelSpec(reference="tiny-vit", model_id="tiny-vit", library="transformers", source="test",
                                  config=config))
    case = TrainingCase(batch_size=1, precision="fp32", device="cpu", image_size=(32, 32), freeze="backbone",
                        num_labels=10)
    measured = measure_training(model, case, reference="tiny-vit")
    assert measured.trainable_parameters == 32 * 10 + 10  # the classifier; `vit.` is the base model
    assert measured.optimizer_state_bytes == 2 * 330 * 4 + 2 * 4  # AdamW's two states and a step per tensor


class _Tokens(nn.Module):
    pass


def _with(**attributes) -> nn.Module:
    module = _Tokens()
    for name, value in attributes.items():
        setattr(module, name, value)
    return module


@pytest.mark.parametrize("attributes, prefix", [
    ({}, 1),                                       # a plain backbone: the class token only
    ({"num_prefix_tokens": 5}, 5),                 # timm counts the class token in
    ({"n_storage_tokens": 4}, 5),                  # DINOv3 on torch.hub: class token + 4 registers
    ({"config": type("C", (), {"num_register_tokens": 4})()}, 5),  # DINOv3 in transformers
])
def test_the_probe_averages_the_tokens_after_the_class_token_and_registers(attributes, prefix):
    from vramplan.measure.training import count_prefix_tokens

    assert count_prefix_tokens(_with(**attributes)) == prefix


@pytest.mark.parametrize("q_shape, k_heads, dropout, kernel", [
    ((2, 4, 16, 8), 4, 0.0, "cpu-flash"),
    ((2, 4, 16, 8), 4, 0.1, "math"),   # the CPU flash kernel has no dropout
    ((2, 4, 16, 8), 2, 0.0, "math"),   # grouped-query attention
    ((4, 16, 8), 4, 0.0, "math"),      # not 4-D
])
def test_a_training_forward_falls_back_to_the_math_kernel_where_cpu_flash_cannot_run(q_shape, k_heads, dropout,
                                                                                      kernel):
    from vramplan.measure.training import training_sdpa_kernel

    q = torch.empty(q_shape, device="meta")
    k = torch.empty((*q_shape[:-3], k_heads, *q_shape[-2:]), device="meta")
    case = TrainingCase(batch_size=2, precision="fp32", device="cpu", image_size=(32, 32))
    assert training_sdpa_kernel(case, q, k, k, None, dropout) == kernel


def test_an_unknown_precision_is_named_in_the_refusal():
    from vramplan.errors import UsageError

    with pytest.raises(UsageError) as exc:
        TrainingCase(batch_size=1, precision="fp8", image_size=(32, 32))
    assert exc.value.args[0] == "precision `fp8` is not one of fp32, amp-bf16, amp-fp16, bf16, fp16"


class _FailsWhileTraining(nn.Module):
    """A backbone whose training forward raises (the probe's sizing forward, under no_grad, does not)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)

    def forward(self, x):
        if torch.is_grad_enabled():
            raise RuntimeError("no kernel for this")
        return self.embed(x).flatten(2).transpose(1, 2)


def test_a_failure_in_the_training_step_names_the_model_and_the_exception():
    with torch.device("meta"):
        model = _FailsWhileTraining()
    case = TrainingCase(batch_size=2, precision="fp32", device="cpu", image_size=(32, 32), num_labels=4)
    with pytest.raises(SimulationError) as exc:
        measure_training(model, case, reference="fails-while-training")
    assert str(exc.value) == ("Could not simulate the forward pass of `fails-while-training`: "
                              "RuntimeError: no kernel for this")


def test_a_model_that_cannot_be_prepared_says_why_with_the_exceptions_type():
    """LoRA on module names the model does not have: peft's own error, named by its type."""
    config = {"model_type": "vit", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
              "num_hidden_layers": 1, "image_size": 32, "patch_size": 16, "num_labels": 10,
              "architectures": ["ViTForImageClassification"]}
    model = build_model(ModelSpec(reference="tiny-vit", model_id="tiny-vit", library="transformers", source="test",
                                  config=config))
    case = TrainingCase(batch_size=1, precision="fp32", device="cpu", image_size=(32, 32), lora_rank=4,
                        lora_targets=("no_such_module",), num_labels=10)
    with pytest.raises(SimulationError) as exc:
        measure_training(model, case, reference="tiny-vit")
    assert exc.value.reason.startswith("could not prepare the model for training: NoMatchingPeftModuleError: "
                                       "No modules were targeted for adaptation")


def test_the_second_step_peaks_on_a_card_and_its_overheads_are_named():
    """AdamW's state, made in the first step, lives through the second: the reported peak is step 2's; on the
    CUDA target the card's share beyond the tensors is the context and the allocator cache, by those names."""
    config = {"model_type": "vit", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
              "num_hidden_layers": 1, "image_size": 32, "patch_size": 16, "num_labels": 10,
              "architectures": ["ViTForImageClassification"]}
    model = build_model(ModelSpec(reference="tiny-vit", model_id="tiny-vit", library="transformers", source="test",
                                  config=config))
    measured = measure_training(model, TrainingCase(batch_size=1, precision="fp32", image_size=(32, 32),
                                                    num_labels=10), reference="tiny-vit")
    assert measured.peak_step == 2
    overheads = dict(measured.overheads)
    assert list(overheads) == ["CUDA context", "allocator cache (reserved - allocated)"]
    assert measured.peak_device_bytes == measured.peak_allocated_bytes + sum(overheads.values())


def test_a_rank_below_zero_or_no_labels_is_refused():
    from vramplan.errors import UsageError

    for fields in ({"lora_rank": -1}, {"num_labels": 0}):
        with pytest.raises(UsageError) as exc:
            TrainingCase(batch_size=1, image_size=(32, 32), **fields)
        assert exc.value.args[0] == "the LoRA rank must be 0 or more and the number of labels at least 1"


def test_a_task_model_from_a_bfloat16_config_trains_float32_weights_under_amp():
    """amp keeps float32 weights whatever dtype the checkpoint's config states."""
    config = {"model_type": "vit", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
              "num_hidden_layers": 1, "image_size": 32, "patch_size": 16, "num_labels": 10,
              "architectures": ["ViTForImageClassification"], "torch_dtype": "bfloat16"}
    model = build_model(ModelSpec(reference="bf16-vit", model_id="bf16-vit", library="transformers", source="test",
                                  config=config))
    measured = measure_training(model, TrainingCase(batch_size=1, precision="amp-bf16", device="cpu",
                                                    image_size=(32, 32), num_labels=10), reference="bf16-vit")
    assert measured.parameter_bytes == measured.total_parameters * 4
