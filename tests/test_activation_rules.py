"""Rules of activations.py that the mutation sample found unpinned, each against a value worked by hand.

The operator cache must remember in-place and `out=` operators as the kernel returns them; matmul's
fold of a >=3-D operand by a matrix copies an operand it cannot view (checked against the CPU
allocator); FlashAttention's split heuristic and key blocks at their edges; and the math path's
copies of keys and values repeated for grouped-query attention.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

from vramplan.measure import activations
from vramplan.measure.activations import InferenceCase, measure_inference
from vramplan.measure.inputs import InputShape
from vramplan.testing.allocator import cpu_peak_above_baseline

aten = torch.ops.aten


def _remembered(func, args, kwargs):
    key = (func, torch.get_default_dtype(), activations._meta_key(args), activations._meta_key(kwargs))
    return activations._OP_CACHE.get(key)


def test_in_place_and_out_operators_are_remembered_as_their_arguments():
    x = torch.empty(2, 3, device="meta")
    for _ in range(2):  # the first call records, the second answers from the record
        assert activations._run_meta(aten.add_.Tensor, (x, x), {}) is x
        assert activations._run_meta(aten._foreach_mul_.Scalar, ([x, x], 2.0), {}) is None
        values, indices = torch.empty(2, device="meta"), torch.empty(2, dtype=torch.int64, device="meta")
        kwargs = {"max": values, "max_values": indices}
        out = activations._run_meta(aten.max.dim_max, (x, 1), kwargs)
        assert type(out) is tuple and out[0] is values and out[1] is indices
    # what is remembered: the kind of result and the positions of the arguments it returns
    assert _remembered(aten.add_.Tensor, (x, x), {}) == (activations._IN_PLACE, (None, (0,)))
    assert _remembered(aten._foreach_mul_.Scalar, ([x, x], 2.0), {}) == (activations._IN_PLACE, (type(None), ()))
    assert _remembered(aten.max.dim_max, (x, 1), kwargs) == (activations._IN_PLACE, (tuple, (1, 2)))


def test_matmul_folds_a_batched_operand_by_a_matrix_copying_it_when_it_cannot_view():
    meta = dict(device="meta")
    w = torch.empty(16, 8, **meta)
    assert activations._matmul_temps(torch.empty(4, 5, 16, **meta), w) == []
    assert activations._matmul_temps(torch.empty(5, 4, 16, **meta).transpose(0, 1), w) == [4 * 5 * 16 * 4]
    assert activations._matmul_temps(torch.empty(5, 16, **meta), w) == []


class _FoldedProduct(nn.Module):
    """A (length, batch, features) input taken batch-first times a matrix: matmul copies it to fold it."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(256, 16))

    def forward(self, x):
        return x.transpose(0, 1) @ self.weight


def test_matmul_fold_copy_matches_the_cpu_allocator():
    with torch.device("meta"):
        meta = _FoldedProduct()
    case = InferenceCase(batch_size=64, dtype="float32", attn="sdpa", device="cpu",
                         inputs=(InputShape("x", (64, 32, 256)),))
    m = measure_inference(meta, case, reference="fold")
    x = torch.randn(64, 32, 256)
    real = cpu_peak_above_baseline(_FoldedProduct().eval(), {"x": x})
    simulated = m.peak_allocated_bytes - m.parameter_bytes - m.buffer_bytes - x.numel() * 4
    assert simulated == real
    assert m.temp_bytes == 64 * 32 * 256 * 4  # the copy, 16 times the output


@pytest.mark.parametrize("mblocks, sms, n_blocks, max_splits, splits", [
    # 7 splits (the cap) are not eligible (ceil(8/7) == ceil(8/6)); the best eligible efficiency is
    # 4 x 12 / 264 and 4 is the first within 85% of it (an ineligible 7 must not raise the bar)
    (12, 264, 8, 7, 4),
    # 3 splits: 1.7 waves, efficiency 0.85 exactly; 30 splits fill 17 waves (1.0): 3 is within 85%
    (17, 30, 30, 128, 3),
])
def test_num_splits_at_the_edges(mblocks, sms, n_blocks, max_splits, splits):
    assert activations._num_splits(mblocks, sms, n_blocks, max_splits) == splits


def test_flash_attention_key_blocks_of_a_head_above_128():
    """Head 129 (padded to 136 by SDPA): key blocks of 64, 16 of them for 1024 keys; 16 splits on 264 slots.

    The accumulator's head is 136 rounded to 32: 160.
    """
    q, k = torch.empty(1, 1, 64, 129, device="meta"), torch.empty(1, 1, 1024, 129, device="meta")
    assert activations._cuda_flash_temps(q, k, 132) == [64 * 4, 16 * 64 * 4, 16 * 64 * 160 * 4]


def test_math_attention_repeats_keys_and_values_for_grouped_query_attention():
    """4 query heads on 2 key heads; value head 16 unlike the key's 8: k and v repeated to 4 heads."""
    q, k, v = (torch.empty(*shape, device="meta") for shape in ((1, 4, 5, 8), (1, 2, 7, 8), (1, 2, 7, 16)))
    repeated = [4 * 7 * 8 * 4, 4 * 7 * 16 * 4]
    scores = 4 * 5 * 7
    assert activations._math_temps(q, k, v) == [*repeated, 4 * 5 * 8 * 4, 4 * 7 * 8 * 4, scores * 4, scores * 4,
                                                scores, 4 * 5]


def _cuda_case(gpu: str, dtype: str = "float16") -> InferenceCase:
    from vramplan.plan.gpus import find_gpu

    return InferenceCase(batch_size=1, dtype=dtype, attn="sdpa", device="cuda", image_size=(8, 8), gpu=find_gpu(gpu))


def test_flash_attention_splits_on_the_cases_card():
    """160 query blocks: under 80% of an H100's 264 slots (3 splits), over 80% of an A10G's 160 (none)."""
    q, k = torch.empty(1, 40, 256, 64, dtype=torch.float16, device="meta"), \
        torch.empty(1, 40, 4096, 64, dtype=torch.float16, device="meta")
    assert activations._sdpa_kernel_memory(_cuda_case("a10g"), q, k, k, None) == ("flash", [40 * 256 * 4])
    kernel, temps = activations._sdpa_kernel_memory(_cuda_case("h100"), q, k, k, None)
    assert (kernel, len(temps)) == ("flash", 3)


@pytest.mark.parametrize("dtype, head, kernel", [
    ("float16", 256, "flash"),  # flash takes head dims up to 256
    ("float16", 264, "efficient"),  # over 256, aligned to 8
    ("float32", 6, "math"),  # float32: no flash; 6 is not aligned to 4
])
def test_cuda_attention_kernel_choice_at_the_edges(dtype, head, kernel):
    q = torch.empty(1, 2, 16, head, dtype=getattr(torch, dtype), device="meta")
    assert activations._sdpa_backend(_cuda_case("h100", dtype), q, q, q, None) == kernel


def test_a_rebuilt_output_keeps_its_offset_and_storage():
    t = activations._rebuild(((2, 3), (3, 1), 4, torch.float32, 64))
    assert (t.shape, t.stride(), t.storage_offset(), t.untyped_storage().nbytes()) == ((2, 3), (3, 1), 4, 64)


class _Refuses(nn.Module):
    def forward(self, x):
        raise ValueError("no such\nshape")


def test_a_forward_that_raises_is_named_with_its_error():
    from vramplan.errors import SimulationError

    with torch.device("meta"):
        model = _Refuses()
    case = InferenceCase(batch_size=1, dtype="float32", attn="sdpa", device="cpu", inputs=(InputShape("x", (1, 4)),))
    with pytest.raises(SimulationError) as err:
        measure_inference(model, case, reference="refuses")
    assert (err.value.reference, err.value.reason) == ("refuses", "ValueError: no such shape")


def test_an_attention_the_model_lacks_is_refused_by_name():
    from transformers import BertConfig, BertModel

    from vramplan.errors import SimulationError

    with torch.device("meta"):
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(SimulationError) as err:
        activations._set_attention(model, "flash_attention_2", "tiny-bert")
    assert err.value.reference == "tiny-bert"
    assert err.value.reason.startswith("flash_attention_2 attention is not available: ")


class _ClassCached(nn.Module):
    """A cache held by a staticmethod of the model's class, as BEiT's relative position index is."""

    @staticmethod
    @functools.lru_cache
    def grid(n):
        return torch.arange(n)

    def forward(self, x):
        return x + self.grid(x.shape[-1])


def test_a_class_level_cache_is_cleared_with_the_models_caches():
    clears = activations._model_caches(_ClassCached())
    assert _ClassCached.__dict__["grid"].__func__.cache_clear in clears


class _Uncopyable(nn.Module):
    def forward(self, x):
        return x * 2

    def __deepcopy__(self, memo):
        raise TypeError("cannot copy this")


def test_a_model_that_cannot_be_prepared_is_named_with_its_error():
    from vramplan.errors import SimulationError

    with torch.device("meta"):
        model = _Uncopyable()
    case = InferenceCase(batch_size=1, dtype="float32", attn="sdpa", device="cpu", inputs=(InputShape("x", (1, 4)),))
    with pytest.raises(SimulationError) as err:
        measure_inference(model, case, reference="uncopyable")
    assert (err.value.reference, err.value.reason) == (
        "uncopyable", "could not prepare the model: TypeError: cannot copy this")


def test_the_simulated_model_takes_the_buffer_dtypes_from_pretrained_builds():
    """SwinV2's coordinate tables are made in the default dtype (bfloat16 under from_pretrained(dtype=));
    batch-norm statistics follow the dtype, its step counter stays int64."""
    from vramplan.build import build_model
    from vramplan.spec import ModelSpec
    from vramplan.testing.breadth import case_config

    swinv2 = build_model(ModelSpec(reference="swinv2", model_id="swinv2", library="transformers", source="test",
                                   config=case_config("swinv2", 64)))
    sim = activations._build_sim_model(swinv2, "bfloat16", "sdpa", "swinv2").module
    tables = {b.dtype for name, b in sim.named_buffers() if name.endswith("relative_coords_table")}
    assert tables == {torch.bfloat16}
    with torch.device("meta"):
        norm = nn.Sequential(nn.BatchNorm2d(4))
    buffers = dict(activations._build_sim_model(norm, "bfloat16", "eager", "bn").module.named_buffers())
    assert {name: b.dtype for name, b in buffers.items()} == {
        "0.running_mean": torch.bfloat16, "0.running_var": torch.bfloat16, "0.num_batches_tracked": torch.int64}


def test_a_model_that_picks_its_attention_class_at_construction_is_rebuilt():
    """Falcon picks its attention class from `FALCON_ATTENTION_CLASSES` in `__init__`: it is built again."""
    from transformers import FalconConfig, FalconModel

    config = FalconConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=100)
    with torch.device("meta"):
        model = FalconModel(config)
    other = "sdpa" if model.config._attn_implementation == "eager" else "eager"
    rebuilt = activations._rebuilt_with(model, other)
    assert rebuilt is not None and rebuilt.config._attn_implementation == other
    assert activations._rebuilt_with(rebuilt, other) is None  # already built so
