"""The CUDA attention kernels' own allocations, against values worked out by hand from their source.

FlashAttention-2's `mha_fwd` (flash_api.cpp: logsumexp, and with split-KV one float32 accumulator of the
logsumexp and one of the output per split, `num_splits_heuristic`) and the memory-efficient kernel
(attention.cu: a float32 output accumulator for half inputs, the mask padded to 16 columns). No GPU runs
them here, so each expected value below is the arithmetic of that source, written out: mutmut found that
no test pinned these functions (a split count or block size could change unnoticed).
"""

from __future__ import annotations

import pytest
import torch

from vramplan.measure.activations import _cuda_efficient_temps, _cuda_flash_temps, _num_splits

H100_SMS = 132


@pytest.mark.parametrize("mblocks, sms, n_blocks, max_splits, splits", [
    # 12 blocks on 264 slots: splits 1..8 of 8 key blocks; 5, 6 and 7 split no finer than 4 (ceil(8/s) == 2),
    # so they are skipped; efficiency s*12/264 grows with s: 8 is the first within 85% of the best.
    (12, 264, 8, 128, 8),
    # 79 of 100 (under 80%): efficiency 0.79 for s = 1..4 (one wave, not full), 3.95/4 = 0.9875 at s = 5.
    (79, 100, 64, 128, 5),
    (80, 100, 64, 128, 1),  # 80% of the SMs busy already: no split
    (1, 100, 64, 3, 3),  # capped by max_splits
    (1, 100, 3, 128, 3),  # capped by the key blocks
    (1, 4, 64, 128, 4),  # capped by the SMs: s/4 waves, 4 is one full wave
])
def test_num_splits_worked_by_hand(mblocks, sms, n_blocks, max_splits, splits):
    assert _num_splits(mblocks, sms, n_blocks, max_splits) == splits


def _meta(*shape, dtype=torch.bfloat16):
    return torch.empty(shape, dtype=dtype, device="meta")


@pytest.mark.parametrize("q, kv_len, temps", [
    # 8 heads x 1024 queries, head 64: 128 query blocks of 64; 4 key blocks of 256 (head <= 64); on 264 slots
    # splits 1, 2, 4 are eligible (3 splits no finer than 2), efficiency 0.485, 0.970, 0.970: 2 splits.
    ((1, 8, 1024, 64), 1024, [8 * 1024 * 4, 2 * 8 * 1024 * 4, 2 * 8 * 1024 * 64 * 4]),
    # head 80 rounds to 96 (to 8, then to 32); key blocks of 128 (head <= 128): 16; 4 query blocks: 16 splits.
    ((1, 4, 64, 80), 2048, [4 * 64 * 4, 16 * 4 * 64 * 4, 16 * 4 * 64 * 96 * 4]),
    # head 128: key blocks of 128, 8 of them; 2 query blocks: splits 1, 2, 3, 4, 8 eligible, 8 the first at 85%.
    ((1, 2, 64, 128), 1024, [2 * 64 * 4, 8 * 2 * 64 * 4, 8 * 2 * 64 * 128 * 4]),
    # head 192: key blocks of 64, 16 of them; 65 queries are 2 blocks of 64: splits 16 (9 to 15 split no finer).
    ((1, 1, 65, 192), 1024, [65 * 4, 16 * 65 * 4, 16 * 65 * 192 * 4]),
    # head 192, 4160 keys: 65 blocks of 64, one query block; 33 and 65 are the eligible splits past 32: 65.
    ((1, 1, 64, 192), 4160, [64 * 4, 65 * 64 * 4, 65 * 64 * 192 * 4]),
    # batch 2: as the head-80 case with twice the query blocks (8): 16 splits still.
    ((2, 4, 64, 80), 2048, [2 * 4 * 64 * 4, 16 * 2 * 4 * 64 * 4, 16 * 2 * 4 * 64 * 96 * 4]),
    # 8 x 32 heads x 16 query blocks = 4096 >= 80% of 264: one split, the logsumexp only.
    ((8, 32, 1024, 64), 1024, [8 * 32 * 1024 * 4]),
])
def test_flash_attention_temps_worked_by_hand(q, kv_len, temps):
    batch, heads, _, head = q
    assert _cuda_flash_temps(_meta(*q), _meta(batch, heads, kv_len, head), H100_SMS) == temps


def test_flash_attention_splits_follow_the_card():
    """An A10G (80 SMs) and an H100 (132) split the same small attention differently."""
    q, k = _meta(1, 2, 64, 128), _meta(1, 2, 1024, 128)
    assert _cuda_flash_temps(q, k, 80)[1:] == _cuda_flash_temps(q, k, H100_SMS)[1:]  # 8 key blocks cap both
    wide_q = _meta(1, 40, 256, 64)  # 160 query blocks: under 80% of 264 slots, over 80% of 160
    assert len(_cuda_flash_temps(wide_q, _meta(1, 40, 4096, 64), 80)) == 1
    assert len(_cuda_flash_temps(wide_q, _meta(1, 40, 4096, 64), H100_SMS)) == 3


@pytest.mark.parametrize("dtype, mask_shape, mask_dtype, temps", [
    (torch.float32, None, None, []),  # float32 accumulates in its output
    (torch.bfloat16, None, None, [2 * 3 * 10 * 16 * 4]),  # a float32 accumulator of the output
    (torch.float16, (2, 1, 10, 20), torch.float16, [2 * 3 * 10 * 16 * 4, 2 * 1 * 10 * 32 * 2]),  # 20 -> 32 columns
    (torch.float32, (2, 3, 10, 20), torch.float32, [2 * 3 * 10 * 32 * 4]),
    (torch.float32, (2, 1, 10, 32), torch.float32, []),  # a multiple of 16 needs no padded copy
])
def test_efficient_attention_temps_worked_by_hand(dtype, mask_shape, mask_dtype, temps):
    q, v = _meta(2, 3, 10, 8, dtype=dtype), _meta(2, 3, 20, 16, dtype=dtype)
    mask = _meta(*mask_shape, dtype=mask_dtype) if mask_shape else None
    assert _cuda_efficient_temps(q, v, mask) == temps


def test_case_json_names_input_dtypes_and_the_card_of_a_cuda_case_only():
    from vramplan.measure.activations import InferenceCase
    from vramplan.measure.inputs import InputShape
    from vramplan.plan.gpus import find_gpu

    shapes = (InputShape("input_ids", (1, 128), "int64"), InputShape(None, (1, 3, 8, 8)))
    h200 = find_gpu("h200")
    case = InferenceCase(batch_size=4, dtype="float16", attn="sdpa", device="cuda", inputs=shapes, gpu=h200)
    assert case.as_json() == {
        "inputs": [{"name": "input_ids", "shape": [4, 128], "dtype": "int64"},
                   {"name": None, "shape": [4, 3, 8, 8], "dtype": "float16"}],
        "batch_size": 4, "dtype": "float16", "attn": "sdpa", "device": "cuda", "gpu": h200.name}
    cpu = InferenceCase(batch_size=1, dtype="float32", attn="eager", device="cpu", seq_len=16, gpu=h200)
    assert cpu.as_json() == {"seq_len": 16, "batch_size": 1, "dtype": "float32", "attn": "eager", "device": "cpu"}


@pytest.mark.parametrize("dtype, q_len, q_split, accum", [
    (torch.float32, 768, 256, 4), (torch.float32, 767, 64, 4), (torch.float64, 768, 256, 8),
])
def test_cpu_flash_attention_temps_worked_by_hand(dtype, q_len, q_split, accum):
    """FlashAttentionKernel.cpp: q blocks of 256 from 768 queries (64 from 192), kv blocks of 512, per thread."""
    from vramplan.measure.activations import _cpu_flash_temps

    q, k = _meta(1, 2, q_len, 64, dtype=dtype), _meta(1, 2, 512, 64, dtype=dtype)
    per_thread = q_split * 512 + 2 * q_split + q_split * 64
    assert _cpu_flash_temps(q, k, k) == [q_len * 2 * accum, torch.get_num_threads() * per_thread * accum]


@pytest.mark.parametrize("dtype, upcast", [(torch.float32, []), (torch.bfloat16, [240 * 4, 336 * 4, 336 * 4])])
def test_math_attention_temps_worked_by_hand(dtype, upcast):
    """Batch 2, 3 heads, 5 queries, 7 keys, head 8: upcast q, k, v (half types), scaled q and k, scores and
    softmax (2 x 3 x 5 x 7 = 210 values), the boolean mask of the scores and one per row (30)."""
    from vramplan.measure.activations import _math_temps

    q, k = _meta(2, 3, 5, 8, dtype=dtype), _meta(2, 3, 7, 8, dtype=dtype)
    assert _math_temps(q, k, k) == [*upcast, 240 * 4, 336 * 4, 210 * 4, 210 * 4, 210, 30]
