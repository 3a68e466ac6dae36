"""The CUDA caching-allocator replay against hand-worked examples, with literal expected values.

Each expected number below was worked out by hand from the rules of
c10/cuda/CUDACachingAllocator.cpp (quoted in measure/overheads.py), not read back from the module's
constants, so a change of a constant or a rule (rounding, segment sizes, splitting, merging,
best fit, the two pools, the cuBLAS workspaces, the context estimate) fails here.
"""

from __future__ import annotations

import itertools

import pytest

import torch
import torch.nn as nn

from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.measure.overheads import CachingAllocatorModel

KiB = 1024
MiB = 1024 * 1024


def test_requests_round_up_to_512_bytes():
    alloc = CachingAllocatorModel()
    sizes = [alloc.malloc(n).size for n in (1, 511, 512, 513, 1000, 1024, 1025)]
    assert sizes == [512, 512, 512, 1024, 1024, 1024, 1536]
    assert alloc.allocated == 6144
    assert alloc.reserved == 2097152  # all in one 2 MiB small-pool segment
    assert alloc.malloc(0) is None and alloc.allocated == 6144


def test_segment_sizes_by_request():
    def reserved_for(nbytes: int) -> int:
        alloc = CachingAllocatorModel()
        alloc.malloc(nbytes)
        return alloc.reserved

    assert reserved_for(1 * MiB) == 2 * MiB  # <= 1 MiB: small pool, 2 MiB segments
    assert reserved_for(1 * MiB + 1) == 20 * MiB  # (1 MiB, 10 MiB): 20 MiB segments
    assert reserved_for(10 * MiB - 512) == 20 * MiB
    assert reserved_for(10 * MiB) == 10 * MiB  # >= 10 MiB: the request rounded up to 2 MiB
    assert reserved_for(10 * MiB + 1) == 12 * MiB
    assert reserved_for(21 * MiB) == 22 * MiB
    assert reserved_for(32 * MiB) == 32 * MiB


def test_a_large_block_splits_only_when_more_than_1_mib_is_left():
    alloc = CachingAllocatorModel()
    a = alloc.malloc(5 * MiB)  # 20 MiB segment: 5 MiB block, 15 MiB left free (split)
    assert (a.size, alloc.allocated, alloc.reserved) == (5 * MiB, 5 * MiB, 20 * MiB)
    b = alloc.malloc(14 * MiB)  # takes the 15 MiB block; 1 MiB left is not > 1 MiB: not split
    assert b.size == 15 * MiB
    assert (alloc.allocated, alloc.reserved) == (20 * MiB, 20 * MiB)
    c = alloc.malloc(11 * MiB)  # a 12 MiB segment; its 1 MiB rest stays in the block
    assert c.size == 12 * MiB
    assert (alloc.allocated, alloc.reserved) == (32 * MiB, 32 * MiB)


def test_a_small_block_splits_when_512_bytes_or_more_are_left():
    alloc = CachingAllocatorModel()
    a = alloc.malloc(2 * MiB - 512)  # > 1 MiB: a large request, though it would fit a small segment
    assert (a.size, alloc.reserved) == (2 * MiB - 512, 20 * MiB)
    small = CachingAllocatorModel()
    x = small.malloc(1 * MiB)  # small pool: the 2 MiB segment splits, 1 MiB left
    y = small.malloc(1 * MiB - 512)  # fits the 1 MiB rest; 512 bytes left is split off
    z = small.malloc(512)  # exactly the 512 bytes left
    assert (x.size, y.size, z.size) == (1 * MiB, 1 * MiB - 512, 512)
    assert (small.allocated, small.reserved) == (2 * MiB, 2 * MiB)
    small.malloc(1)  # the segment is full: a second one
    assert small.reserved == 4 * MiB


def test_freed_neighbours_merge_into_one_block():
    alloc = CachingAllocatorModel()
    a, b, c = (alloc.malloc(4 * MiB) for _ in range(3))  # one 20 MiB segment, 8 MiB left
    alloc.free(a)
    alloc.free(c)  # merges with the 8 MiB rest: 12 MiB
    alloc.free(b)  # merges with both: the whole 20 MiB again
    assert (alloc.allocated, alloc.peak_allocated) == (0, 12 * MiB)
    d = alloc.malloc(18 * MiB)  # fits only the merged block: no new segment
    assert (d.addr, d.size, alloc.reserved) == (0, 18 * MiB, 20 * MiB)


def test_best_fit_takes_the_smallest_free_block_that_fits():
    alloc = CachingAllocatorModel()
    big = alloc.malloc(16 * MiB)  # a 16 MiB segment at address 0
    mid = alloc.malloc(12 * MiB)  # a 12 MiB segment at 16 MiB
    alloc.free(big)
    alloc.free(mid)
    x = alloc.malloc(11 * MiB)  # best fit: the 12 MiB block, not the first or the largest
    assert (x.addr, x.size) == (16 * MiB, 12 * MiB)
    y = alloc.malloc(15 * MiB)  # the 16 MiB block is still there for this one
    assert (y.addr, y.size) == (0, 16 * MiB)
    assert (alloc.allocated, alloc.reserved, alloc.peak_reserved) == (28 * MiB, 28 * MiB, 28 * MiB)


def test_equal_free_blocks_go_lowest_address_first():
    alloc = CachingAllocatorModel()
    blocks = [alloc.malloc(12 * MiB) for _ in range(3)]  # segments at 0, 12 and 24 MiB
    alloc.free(blocks[2])
    alloc.free(blocks[1])
    assert alloc.malloc(12 * MiB).addr == 12 * MiB


def test_small_and_large_pools_do_not_share_blocks():
    alloc = CachingAllocatorModel()
    large = alloc.malloc(4 * MiB)  # 20 MiB segment, 16 MiB free in the large pool
    alloc.malloc(1000)  # small request: a 2 MiB small segment, not the free large block
    assert alloc.reserved == 22 * MiB
    alloc.free(large)
    small = CachingAllocatorModel()
    s = small.malloc(1 * MiB)
    small.free(s)  # 2 MiB free in the small pool
    small.malloc(1 * MiB + 512)  # large request: a new 20 MiB segment
    assert (small.reserved, small.allocated) == (22 * MiB, 1 * MiB + 512)


def test_peaks_are_kept_after_frees():
    alloc = CachingAllocatorModel()
    a = alloc.malloc(30 * MiB)
    b = alloc.malloc(3 * MiB)
    alloc.free(a)
    alloc.free(b)
    assert (alloc.allocated, alloc.reserved) == (0, 50 * MiB)
    assert (alloc.peak_allocated, alloc.peak_reserved) == (33 * MiB, 50 * MiB)


# --- one forward, worked out by hand -----------------------------------------------------------

class _Linear(nn.Module):
    """The image's last dimension through one Linear layer: one GEMM, with or without a bias."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(100, 10, bias=bias)

    def forward(self, pixel_values):
        return self.fc(pixel_values)


def _cuda(bias: bool):
    with torch.device("meta"):
        model = _Linear(bias)
    case = InferenceCase(batch_size=1, dtype="float32", attn="sdpa", device="cuda", image_size=(4, 100))
    return measure_inference(model, case, reference="linear")


def test_a_linear_forward_on_the_simulated_h100():
    m = _cuda(bias=True)
    # Blocks: weight 10x100x4 = 4000 -> 4096; bias 40 -> 512; input 1x3x4x100x4 = 4800 -> 5120;
    # output 1x3x4x10x4 = 480 -> 512; cuBLAS workspace 4096x8 KiB = 32 MiB (sm90 default);
    # cuBLASLt workspace (a GEMM with a bias) 1 MiB.
    assert (m.parameter_bytes, m.buffer_bytes) == (4608, 0)
    assert m.activation_bytes == 5632
    assert m.temp_bytes == 33554432 + 1048576
    assert m.peak_allocated_bytes == 34613248
    # Segments: one 2 MiB small segment (weights, input, output and the 1 MiB cuBLASLt block) and
    # one 32 MiB large one; the context is the 500 MiB estimate.
    assert dict(m.overheads) == {
        "CUDA context": 524288000,
        "allocator cache (reserved - allocated)": 35651584 - 34613248,
    }
    assert m.peak_device_bytes == 35651584 + 524288000


def test_a_gemm_without_a_bias_takes_no_cublaslt_workspace():
    m = _cuda(bias=False)
    assert m.temp_bytes == 33554432
    assert m.peak_allocated_bytes == 4096 + 5120 + 512 + 33554432


# --- the block list: found by mutation testing (docs/testing.md) ------------------------------

def test_a_fresh_allocator_has_no_peaks():
    alloc = CachingAllocatorModel()
    assert (alloc.allocated, alloc.reserved, alloc.peak_allocated, alloc.peak_reserved) == (0, 0, 0, 0)


def test_segments_lie_one_after_another():
    alloc = CachingAllocatorModel()
    assert [alloc.malloc(12 * MiB).addr for _ in range(3)] == [0, 12 * MiB, 24 * MiB]


def test_a_free_block_of_exactly_the_size_asked_is_reused_at_address_0():
    alloc = CachingAllocatorModel()
    alloc.free(alloc.malloc(12 * MiB))
    again = alloc.malloc(12 * MiB)
    assert (again.addr, alloc.reserved) == (0, 12 * MiB)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_any_order_of_frees_gives_the_whole_segment_back(order):
    alloc = CachingAllocatorModel()
    blocks = [alloc.malloc(4 * MiB) for _ in range(3)]  # 0, 4, 8 MiB; 8 MiB left free at 12
    for i in order:
        alloc.free(blocks[i])
    whole = alloc.malloc(20 * MiB)
    assert (whole.addr, whole.size, alloc.reserved) == (0, 20 * MiB, 20 * MiB)


def test_a_split_free_block_still_merges_with_what_follows():
    alloc = CachingAllocatorModel()
    a, b, c = (alloc.malloc(4 * MiB) for _ in range(3))  # 8 MiB left free at 12 MiB
    alloc.free(b)
    alloc.free(a)  # a and b: 8 MiB free at 0, before c
    x = alloc.malloc(5 * MiB)  # the lowest of the two 8 MiB blocks, split: 3 MiB left at 5 MiB
    assert (x.addr, x.size) == (0, 5 * MiB)
    alloc.free(c)  # merges with the 3 MiB before it and the 8 MiB after it: 15 MiB at 5 MiB
    y = alloc.malloc(15 * MiB)
    assert (y.addr, alloc.reserved) == (5 * MiB, 20 * MiB)
