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
