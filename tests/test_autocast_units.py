"""`measure/autocast.py` and `measure/inference_autocast.py` unit by unit: the target's op lists and the
weight-cast cache (`cached_cast` in aten/src/ATen/autocast_mode.cpp).

Written for their mutation run (docs/testing.md, "Third scoring"): the CUDA lists (every simulation test
runs on the CPU target) and the cache's hit path (no tested forward uses a weight twice) survived.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vramplan.measure.autocast import AutocastCaster, policy
from vramplan.measure.inference_autocast import _WeightCaster


@pytest.mark.parametrize("name, cuda, cpu", [
    ("addmv", "lower", ""),        # AT_FORALL_LOWER_PRECISION_FP only
    ("linear", "lower", "lower"),
    ("layer_norm", "fp32", ""),    # AT_FORALL_FP32 only
    ("avg_pool3d", "", "fp32"),    # the CPU block's fp32 list only
    ("softmax", "fp32_opt", ""),   # AT_FORALL_FP32_SET_OPT_DTYPE, CUDA only
    ("cat", "promote", "promote"),
    ("relu", "", ""),
])
def test_policy_follows_the_targets_op_lists(name, cuda, cpu):
    assert (policy(name, "cuda"), policy(name, "cpu")) == (cuda, cpu)


def _linear_args(weight):
    return (torch.empty((2, 4), device="meta"), weight)


def test_a_trained_weight_is_cast_once_and_held_until_the_cache_is_cleared():
    weight = torch.nn.Parameter(torch.empty((3, 4), device="meta"))
    caster = AutocastCaster("cuda")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (x1, w1), _ = caster.cast(F.linear, _linear_args(weight), {})
        (x2, w2), _ = caster.cast(F.linear, _linear_args(weight), {})
        assert w1.dtype == torch.bfloat16 and w2 is w1  # one copy, reused
        assert x1.dtype == torch.bfloat16 and x2 is not x1  # activations are cast at each use
        caster.clear_cache()
        (_, w3), _ = caster.cast(F.linear, _linear_args(weight), {})
    assert w3 is not w1 and w3.dtype == torch.bfloat16


def test_a_frozen_weight_is_cast_at_each_use_unless_the_inference_caster_knows_it():
    """`cached_cast` caches leaves that require grad; the inference caster counts the model's weights in."""
    module = torch.nn.Linear(4, 3, device="meta").requires_grad_(False)
    plain, weights = AutocastCaster("cuda"), _WeightCaster("cuda", module)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = [c.cast(F.linear, _linear_args(module.weight), {})[0][1] for c in (plain, plain)]
        held = [c.cast(F.linear, _linear_args(module.weight), {})[0][1] for c in (weights, weights)]
    assert first[0] is not first[1]
    assert held[0] is held[1]


def test_the_inference_caster_casts_for_its_target():
    """softmax runs in float32 under CUDA autocast (a dtype added), untouched under CPU autocast."""
    module = torch.nn.Linear(4, 3, device="meta")
    x = torch.empty((2, 4), dtype=torch.bfloat16, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, cuda_kwargs = _WeightCaster("cuda", module).cast(F.softmax, (x, -1), {})
        _, cpu_kwargs = _WeightCaster("cpu", module).cast(F.softmax, (x, -1), {})
    assert cuda_kwargs == {"dtype": torch.float32}
    assert cpu_kwargs == {}


def test_each_rule_casts_as_cuda_autocast_does():
    """bfloat16 autocast on the CUDA target: fp32 ops get float32 inputs, promote ops the widest dtype,
    fp32_opt ops a float32 dtype unless one is given or every input is already float32 (or not floating);
    with autocast off nothing is cast."""
    caster = AutocastCaster("cuda")
    half = torch.empty((2, 4), dtype=torch.bfloat16, device="meta")
    full = torch.empty((2, 4), device="meta")
    ints = torch.empty((2, 4), dtype=torch.int64, device="meta")
    (x, _), _ = caster.cast(F.layer_norm, (half, (4,)), {})
    assert x.dtype == torch.bfloat16  # autocast off
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (x, _), _ = caster.cast(F.layer_norm, (half, (4,)), {})
        assert x.dtype == torch.float32
        (parts,), _ = caster.cast(torch.cat, ([half, full],), {})
        assert [p.dtype for p in parts] == [torch.float32, torch.float32]
        assert caster.cast(torch.softmax, (half, -1), {"dtype": torch.float16})[1] == {"dtype": torch.float16}
        assert caster.cast(torch.cumsum, (ints, 0), {})[1] == {}
        assert caster.cast(torch.cumsum, (full, 0), {})[1] == {}
