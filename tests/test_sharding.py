"""Per-GPU model states under DDP, FSDP2 and ZeRO: invariants, uneven shards, and DeepSpeed's own estimators.

DeepSpeed's `estimate_zero2_model_states_mem_needs` (deepspeed/runtime/zero/stage_1_and_2.py:4017-4034,
deepspeed 0.19.8) and `estimate_zero3_model_states_mem_needs` (stage3.py:4016-4052) are reproduced below as
the reference, and DeepSpeed's own functions are called too where `deepspeed` imports.
"""

from __future__ import annotations

import math

import pytest

from vramplan.plan.emit import DS_REDUCE_BUCKET
from vramplan.plan.parallel import ParallelPlan
from vramplan.plan.sharding import (
    ModelStates,
    StepActivations,
    Unit,
    model_states,
    plan_sharding,
    zero_model_states,
)

N_BLOCKS, WIDTH = 4, 1024
STEP = StepActivations(forward_bytes=3 * 2**30, backward_bytes=4 * 2**30, optimizer_bytes=2**30)


def _reference_zero2(total_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True, additional_buffer_factor=1.5):
    """stage_1_and_2.py:4017-4034, as DeepSpeed writes it."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def _reference_zero3(total_params, largest_layer_params, num_gpus_per_node=1, num_nodes=1, cpu_offload=True,
                     cpu_offload_params=True, zero_init=True, additional_buffer_factor=1.5):
    """stage3.py:4016-4052, as DeepSpeed writes it (zero_init=True)."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            cpu_mem = total_params * 18 * gpus_factor * additional_buffer_factor
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            cpu_mem = total_params * 16 * gpus_factor * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


def _references():
    """DeepSpeed's functions where deepspeed imports, and always the transcriptions above."""
    refs = [(_reference_zero2, _reference_zero3)]
    try:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    except Exception:  # deepspeed is optional: the transcription is the reference then
        return refs
    return refs + [(estimate_zero2_model_states_mem_needs, estimate_zero3_model_states_mem_needs)]


def _blocks(frozen_blocks: int = 0, width: int = WIDTH) -> ModelStates:
    """A transformer-like stack: per block a (4w, w) and a (w, 4w) matrix; the root an embedding and a head."""
    blocks = tuple(
        Unit(f"block{i}", trainable=() if i < frozen_blocks else ((4 * width, width), (width, 4 * width)),
             frozen=((4 * width, width), (width, 4 * width)) if i < frozen_blocks else ())
        for i in range(N_BLOCKS)
    )
    root = Unit("(root)", trainable=((1000, width),))
    return ModelStates(units=blocks + (root,), weight_bytes=4, compute_bytes=2, optstate_bytes=8.0,
                       largest_layer=4 * width * width)


def _gpu_states(s: dict[str, int]) -> int:
    return sum(v for k, v in s.items() if k != "cpu")


@pytest.mark.parametrize("refs", _references(), ids=lambda r: r[0].__module__.split(".")[0])
@pytest.mark.parametrize("gpus,nodes", [(8, 1), (4, 2), (2, 1)])
def test_zero2_model_states_equal_deepspeeds_estimate(refs, gpus, nodes):
    states = _blocks()
    n = states.trainable
    assert n % (gpus * nodes) == 0  # DeepSpeed's int() and our ceil() agree on an even split
    zero2 = refs[0]
    for offload in ("none", "optimizer"):
        plan = ParallelPlan("zero2", gpus=gpus, nodes=nodes, offload=offload)
        ds_cpu, ds_gpu = zero2(n, num_gpus_per_node=gpus, num_nodes=nodes, cpu_offload=offload != "none")
        ours = zero_model_states(states, plan)
        assert _gpu_states(ours) == ds_gpu
        if offload == "optimizer":
            # DeepSpeed's CPU figure adds copies made while loading (4 bytes x world) and a 1.5 buffer factor;
            # ours is the steady state: fp32 gradient, master weights and Adam's two states of each rank
            assert ours["cpu"] * gpus == 16 * n // nodes
            assert ds_cpu == n * max(4 * gpus * nodes, 16) * 1.5


@pytest.mark.parametrize("refs", _references(), ids=lambda r: r[0].__module__.split(".")[0])
@pytest.mark.parametrize("offload", ["none", "optimizer", "params"])
def test_zero3_model_states_equal_deepspeeds_estimate(refs, offload):
    states = _blocks()
    n, largest = states.trainable, states.largest_layer
    plan = ParallelPlan("zero3", gpus=8, offload=offload)
    _, ds_gpu, ds_largest = refs[1](n, largest, num_gpus_per_node=8, cpu_offload=offload != "none",
                                    cpu_offload_params=offload == "params")
    ours = zero_model_states(states, plan)
    assert ours["gathered16"] == ds_largest
    assert _gpu_states(ours) == ds_gpu


def test_frozen_parameters_hold_only_weights_where_deepspeed_counts_them_trainable():
    """DeepSpeed's estimators take every parameter as trainable; a frozen one keeps only its 16-bit copy."""
    full, half = _blocks(), _blocks(frozen_blocks=2)
    assert full.trainable + full.frozen == half.trainable + half.frozen
    plan = ParallelPlan("zero2", gpus=8)
    _, ds_gpu = _reference_zero2(full.trainable + full.frozen, num_gpus_per_node=8, cpu_offload=False)
    ours = _gpu_states(zero_model_states(half, plan))
    assert ds_gpu - ours == 18 * half.frozen // 8  # exactly the frozen elements' gradient and optimizer states


def test_fsdp_busiest_rank_holds_ceil_rows_of_every_parameter():
    uneven = ModelStates(units=(Unit("b", ((10, 3), (7,))), Unit("(root)", ((5, 2),))), optstate_bytes=8.0)
    peak = plan_sharding(uneven, StepActivations(0, 0), ParallelPlan("fsdp", gpus=4))
    shard = 3 * 3 + 2 + 2 * 2  # ceil(10/4) rows of 3, ceil(7/4), ceil(5/4) rows of 2
    assert peak.parameter_bytes == shard * 4
    assert peak.optimizer_state_bytes == shard * 8


def test_fsdp_gathers_root_and_two_blocks_in_compute_dtype():
    states = _blocks()
    peak = plan_sharding(states, StepActivations(10**9, 0), ParallelPlan("fsdp", gpus=8))
    assert peak.peak_phase == "forward"
    block, root = 8 * WIDTH * WIDTH, 1000 * WIDTH
    assert peak.comm_bytes == (root + 2 * block) * 2
    kept = plan_sharding(states, StepActivations(10**9, 0), ParallelPlan("fsdp", gpus=8, reshard_after_forward=False))
    assert kept.comm_bytes == (root + N_BLOCKS * block) * 2


def test_ddp_buckets_are_a_second_copy_of_gradients():
    states = _blocks()
    copy = plan_sharding(states, STEP, ParallelPlan("ddp", gpus=8))
    view = plan_sharding(states, STEP, ParallelPlan("ddp", gpus=8), ddp_bucket_view=True)
    assert copy.comm_bytes == states.trainable * 4
    assert copy.per_gpu_peak_bytes - view.per_gpu_peak_bytes == states.trainable * 4


def test_zero_buckets_follow_deepspeeds_defaults():
    states = _blocks()
    two = plan_sharding(states, STEP, ParallelPlan("zero2", gpus=8))
    assert two.comm_bytes == DS_REDUCE_BUCKET * 2
    one = plan_sharding(states, STEP, ParallelPlan("zero1", gpus=8))
    assert one.comm_bytes == DS_REDUCE_BUCKET * 4  # ZeRO-1 stages the fp32 accumulator


@pytest.mark.parametrize("strategy,offload", [
    ("ddp", "none"), ("fsdp", "none"), ("fsdp", "params"), ("zero1", "none"), ("zero2", "none"),
    ("zero2", "optimizer"), ("zero3", "none"), ("zero3", "optimizer"), ("zero3", "params"),
])
def test_peak_is_the_sum_of_its_parts_and_at_least_the_activations(strategy, offload):
    peak = plan_sharding(_blocks(), STEP, ParallelPlan(strategy, gpus=8, offload=offload))
    parts = (peak.parameter_bytes + peak.gradient_bytes + peak.optimizer_state_bytes + peak.buffer_bytes
             + peak.comm_bytes + peak.activation_bytes)
    assert peak.per_gpu_peak_bytes == parts
    assert peak.per_gpu_peak_bytes >= STEP.backward_bytes
    assert (peak.cpu_bytes_per_node > 0) == (offload != "none")


def test_more_sharding_never_needs_more_model_state_per_gpu():
    states = _blocks(width=4096)  # large enough that DeepSpeed's fixed buckets do not dominate
    states_of = {s: plan_sharding(states, STEP, ParallelPlan(s, gpus=8)) for s in ("ddp", "zero1", "zero2", "zero3")}
    held = {s: p.parameter_bytes + p.gradient_bytes + p.optimizer_state_bytes for s, p in states_of.items()}
    assert held["ddp"] > held["zero1"] > held["zero2"] > held["zero3"]
    gpu8 = plan_sharding(states, STEP, ParallelPlan("fsdp", gpus=8)).per_gpu_peak_bytes
    gpu2 = plan_sharding(states, STEP, ParallelPlan("fsdp", gpus=2)).per_gpu_peak_bytes
    assert gpu8 < gpu2


def test_model_states_from_a_built_model_wraps_no_split_blocks():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                        vocab_size=500, max_position_embeddings=64)
    with torch.device("meta"):
        model = BertForSequenceClassification(config)
    model.bert.embeddings.requires_grad_(False)
    states = model_states(model, "amp-bf16")
    assert set(model._no_split_modules) == {"BertEmbeddings", "BertLayer"}
    assert [u.name for u in states.units] == ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1",
                                              "bert.encoder.layer.2", "(root)"]
    total = sum(p.numel() for p in model.parameters())
    assert states.trainable + states.frozen == total
    assert states.frozen == sum(p.numel() for p in model.bert.embeddings.parameters())
    assert (states.weight_bytes, states.compute_bytes) == (4, 2)
    assert states.largest_layer == 500 * 64  # the word embeddings


def test_zero3_keeps_small_parameters_whole_on_every_gpu():
    """Parameters under stage3_param_persistence_threshold (1e5 elements) are not partitioned."""
    big = Unit("b", ((1024, 1024),))
    with_bias = ModelStates(units=(big, Unit("(root)", ((1024, 1024), (4096,)))), compute_bytes=2)
    without = ModelStates(units=(big, Unit("(root)", ((1024, 1024),))), compute_bytes=2)
    plan = ParallelPlan("zero3", gpus=8)
    grown = plan_sharding(with_bias, STEP, plan).parameter_bytes - plan_sharding(without, STEP, plan).parameter_bytes
    assert grown == 4096 * 2 + math.ceil(4096 / 8) * 2  # whole on every GPU, besides its partition
