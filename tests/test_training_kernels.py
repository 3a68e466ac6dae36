"""The training path's modelled kernel buffers, against hand-worked literals.

The CPU comparisons of these kernels (`tests/test_training_cpu.py`) run in fresh interpreters, which mutmut's
record of "which tests call this function" cannot see: its run of `measure/training.py` left these formulas
unguarded (docs/testing.md, "Fourth scoring"). Each value below is worked from the kernel's source as cited in
the function's docstring.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vramplan.errors import SimulationError
from vramplan.measure import training


def _meta(*shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


@pytest.mark.parametrize("q_len, kv_len, dtype, expected", [
    # q_split: 64 for 192 <= q_len < 768; kv_split: 512 for kv_len >= 512; float32 accumulators: 4 bytes;
    # 3 threads x (attn + grad_attn) = 3 * 2 * 64 * 512 * 4.
    (200, 1000, torch.float32, [3 * 2 * 64 * 512 * 4]),
    (800, 100, torch.float32, [3 * 2 * 256 * 100 * 4]),   # q_split 256 from 768; kv_split is kv_len below 512
    (100, 600, torch.float32, [3 * 2 * 32 * 512 * 4]),    # q_split 32 below 192
    (20, 600, torch.float64, [3 * 2 * 20 * 512 * 8]),     # q_split is q_len below 32; float64 accumulates in 8
    # bfloat16 adds the reduced-precision copy of the block: 3 * 64 * 512 * 2.
    (200, 1000, torch.bfloat16, [3 * 2 * 64 * 512 * 4, 3 * 64 * 512 * 2]),
])
def test_cpu_flash_attention_backward_buffers_per_thread(monkeypatch, q_len, kv_len, dtype, expected):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    q, k = _meta(1, 2, q_len, 64, dtype=dtype), _meta(1, 2, kv_len, 64, dtype=dtype)
    assert training._cpu_flash_backward_temps(q, k, k) == expected


def test_cuda_flash_attention_backward_accumulators():
    """dq_accum: batch x rows (200 -> 256) x heads x head dim (72 -> 96) in float32; softmax_d: batch x heads x rows."""
    q = _meta(2, 3, 200, 72, dtype=torch.bfloat16)
    assert training._cuda_flash_backward_temps(q) == [2 * 256 * 3 * 96 * 4, 2 * 3 * 256 * 4]


def _conv_args(x, weight, stride=(1, 1), padding=(0, 0)):
    """aten.convolution's arguments: input, weight, bias, stride, padding, dilation, transposed, output_padding,
    groups."""
    return (x, weight, None, stride, padding, (1, 1), False, (0, 0), 1)


def test_cpu_convolution_columns_forward():
    x = _meta(2, 3, 10, 8)
    # A 2x1 kernel, stride 1, no padding: output 9 x 8; columns = batch x C_in x kh x kw x out_h x out_w x 4 B.
    assert training._cpu_conv_columns(False, _conv_args(x, _meta(5, 3, 2, 1))) == [2 * 3 * 2 * 1 * 9 * 8 * 4]
    # A 3x3 kernel, stride 2, padding 1: output 5 x 4.
    assert training._cpu_conv_columns(False, _conv_args(x, _meta(5, 3, 3, 3), (2, 2), (1, 1))) == \
        [2 * 3 * 3 * 3 * 5 * 4 * 4]
    # 1x1, stride 1, no padding: the input is its own column matrix.
    assert training._cpu_conv_columns(False, _conv_args(x, _meta(5, 3, 1, 1))) == []


def test_cpu_convolution_columns_backward():
    """columns for the weight gradient and grad_columns for the input's, each only when that gradient is asked
    for, and a contiguous copy of a non-contiguous grad_output."""
    x, weight = _meta(2, 3, 10, 8), _meta(5, 3, 3, 3)
    grad = _meta(2, 5, 8, 6)  # a 3x3 kernel, no padding: 8 x 6
    size = 2 * 3 * 3 * 3 * 8 * 6 * 4

    def args(g, mask):
        return (g, x, weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, mask)

    assert training._cpu_conv_columns(True, args(grad, (True, True, False))) == [size, size]
    assert training._cpu_conv_columns(True, args(grad, (False, True, False))) == [size]
    strided = _meta(2, 5, 6, 8).transpose(-1, -2)
    assert training._cpu_conv_columns(True, args(strided, (True, False, False))) == [2 * 5 * 8 * 6 * 4, size]


def test_checkpointing_a_model_without_a_block_list_is_refused_naming_it():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(SimulationError) as exc:
        training._enable_checkpointing(model, "no-blocks")
    assert str(exc.value) == ("Could not simulate the forward pass of `no-blocks`: gradient checkpointing: the model "
                              "has no list of blocks to checkpoint")


def _tracker(gpu: str | None = None):
    from vramplan.plan.gpus import find_gpu

    case = training.TrainingCase(batch_size=1, precision="amp-bf16", image_size=(32, 32),
                                 gpu=find_gpu(gpu) if gpu else None)
    return training._TrainTracker(case)


def _bf16(*shape):
    return _meta(*shape, dtype=torch.bfloat16)


def test_the_flash_backward_kernel_sizes_its_accumulators_by_the_query():
    """Cross-attention, 8 queries over 1000 keys: dq_accum and softmax_d follow the queries, not the keys."""
    tracker = _tracker()
    q, k = _bf16(2, 3, 8, 64), _bf16(2, 3, 1000, 64)
    seed = torch.empty((), dtype=torch.int64, device="meta")
    args = (q.clone(), q, k, k, q.clone(), _meta(2, 3, 8), None, None, 8, 1000, 0.0, False, seed, seed)
    tracker._kernel_memory(torch.ops.aten._scaled_dot_product_flash_attention_backward.default, args, {})
    assert tracker.peak_total == 2 * 128 * 3 * 64 * 4 + 2 * 3 * 128 * 4  # rows 8 -> 128, head 64


@pytest.mark.parametrize("gpu, sm_count", [(None, 132), ("a10g", 80)])
def test_the_flash_forward_kernel_splits_by_the_training_cards_sms(gpu, sm_count):
    """The forward's split buffers follow the card the training case names (activations._cuda_flash_temps): 160
    query blocks fill under 80% of an H100's 132 SMs x 2 (split in 3, float32 partial results), over 80% of an
    A10G's 80 x 2 (no split, nothing beyond the logsumexp output)."""
    from vramplan.measure.activations import _cuda_flash_temps

    tracker = _tracker(gpu)
    q, k = _bf16(1, 40, 256, 64), _bf16(1, 40, 4096, 64)
    tracker._kernel_memory(torch.ops.aten._scaled_dot_product_flash_attention.default, (q, k, k, 0.0, False), {})
    expected = _cuda_flash_temps(q, k, sm_count)[1:]
    assert tracker.peak_total == sum(expected)
    assert (tracker.peak_total > 0) == (gpu is None)


class _OwnAutocast(nn.Module):
    """A block that opens `torch.autocast("cuda", bfloat16)` itself, as DINOv3's depth head does."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 64, 8, stride=8)
        self.fc = nn.Linear(64, 4096)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.fc(tokens).float()


class _ExplicitCasts(_OwnAutocast):
    """The same block with the casts bfloat16 autocast makes for a Linear written out."""

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        half = torch.bfloat16
        return nn.functional.linear(tokens.to(half), self.fc.weight.to(half), self.fc.bias.to(half)).float()


def test_a_models_own_cuda_autocast_is_simulated_as_the_casts_it_makes():
    """fp32 training on the CUDA target: a model that opens `torch.autocast("cuda", bfloat16)` itself holds what
    the same model with those casts written out holds (its Activation at the peak)."""
    case = training.TrainingCase(batch_size=4, precision="fp32", image_size=(64, 64), num_labels=4)
    with torch.device("meta"):
        own, explicit = _OwnAutocast(), _ExplicitCasts()
    by_autocast = training.measure_training(own, case, reference="own-autocast")
    written_out = training.measure_training(explicit, case, reference="explicit-casts")
    assert by_autocast.activation_bytes == written_out.activation_bytes
    assert by_autocast.peak_allocated_bytes == written_out.peak_allocated_bytes
    assert by_autocast.peak_phase == written_out.peak_phase == "backward"


def test_the_probe_reads_tokens_maps_and_vectors_from_any_output():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    tokens, maps, vectors = _meta(2, 5, 8), _meta(2, 8, 3, 3), _meta(2, 8)
    assert training.probe_features(tokens, 1).shape == (2, 16)  # class token ++ mean of the 4 patches
    assert training.probe_features((tokens, vectors), 1).shape == (2, 16)  # a tuple: its first element
    assert training.probe_features(BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=vectors),
                                   1).shape == (2, 16)
    assert training.probe_features(BaseModelOutputWithPooling(pooler_output=vectors), 1).shape == (2, 8)
    assert training.probe_features(maps, 1).shape == (2, 8)  # feature maps: averaged over space
    assert training.probe_features(vectors, 1).shape == (2, 8)
