"""Emitted plans load in the engines' own parsers: accelerate's config loader and launch validation,
accelerate's FSDP and DeepSpeed plugins built from the launcher's environment, DeepSpeed's config class."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from vramplan.errors import UsageError
from vramplan.plan.emit import emit_plan, write_plan
from vramplan.plan.parallel import ParallelPlan


def _write(plan: ParallelPlan, engine: str, tmp_path: Path) -> dict[str, Path]:
    return {p.name: p for p in write_plan(emit_plan(plan, engine), tmp_path)}


def _launcher_env(config: Path, monkeypatch) -> tuple:
    """What `accelerate launch --config_file FILE train.py` validates and exports to the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    monkeypatch.chdir(config.parent)  # the YAML names ds_config.json relative to where launch runs
    args = launch_command_parser().parse_args(["--config_file", str(config), "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate's launch_command does before deepspeed_launcher (commands/launch.py)
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, defaults, {k: v for k, v in env.items() if k.startswith(("ACCELERATE", "FSDP"))}


def test_fsdp2_config_loads_and_builds_accelerates_plugin(tmp_path, monkeypatch):
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.commands.config.config_args import load_config_from_file

    plan = ParallelPlan("fsdp", gpus=8, nodes=2, precision="amp-bf16", micro_batch=4,
                        wrap_classes=("DINOv3ViTLayer",), offload="params")
    files = _write(plan, "accelerate", tmp_path)
    loaded = load_config_from_file(str(files["accelerate_config.yaml"]))
    assert (loaded.distributed_type, loaded.num_processes, loaded.num_machines) == ("FSDP", 16, 2)
    assert loaded.mixed_precision == "bf16"
    args, _, env = _launcher_env(files["accelerate_config.yaml"], monkeypatch)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert plugin.transformer_cls_names_to_wrap == ["DINOv3ViTLayer"]
    assert plugin.cpu_offload.__class__.__name__ == "CPUOffloadPolicy"
    assert shlex.split(files["launch.sh"].read_text().splitlines()[1]) == [
        "accelerate", "launch", "--config_file", "accelerate_config.yaml", "train.py"]


def test_ddp_config_is_multi_gpu(tmp_path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file

    files = _write(ParallelPlan("ddp", gpus=4, precision="amp-fp16"), "accelerate", tmp_path)
    loaded = load_config_from_file(str(files["accelerate_config.yaml"]))
    assert (loaded.distributed_type, loaded.num_processes, loaded.mixed_precision) == ("MULTI_GPU", 4, "fp16")
    args, _, env = _launcher_env(files["accelerate_config.yaml"], monkeypatch)
    assert args.multi_gpu and args.num_processes == 4
    assert env["ACCELERATE_MIXED_PRECISION"] == "fp16"


@pytest.mark.parametrize("stage,offload", [(1, "none"), (2, "optimizer"), (3, "params"), (3, "none")])
def test_zero_config_builds_accelerates_deepspeed_plugin(stage, offload, tmp_path, monkeypatch):
    from accelerate import DeepSpeedPlugin

    plan = ParallelPlan(f"zero{stage}", gpus=8, precision="amp-bf16", micro_batch=4, grad_accum=2, offload=offload)
    files = _write(plan, "accelerate", tmp_path)
    args, defaults, env = _launcher_env(files["accelerate_config.yaml"], monkeypatch)
    assert args.use_deepspeed and args.num_processes == 8
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    assert plugin.gradient_accumulation_steps == 2
    assert plugin.offload_optimizer_device == ("cpu" if offload != "none" else "none")
    assert plugin.offload_param_device == ("cpu" if offload == "params" else "none")
    assert plugin.deepspeed_config["bf16"] == {"enabled": True}
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 4


def test_deepspeed_json_loads_in_deepspeeds_config_class(tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    plan = ParallelPlan("zero3", gpus=8, precision="amp-fp16", micro_batch=3, grad_accum=4, offload="params")
    files = _write(plan, "deepspeed", tmp_path)
    config = DeepSpeedConfig(str(files["ds_config.json"]))  # world size 1 without a process group
    zero = config.zero_config
    assert (config.train_micro_batch_size_per_gpu, config.gradient_accumulation_steps) == (3, 4)
    assert config.train_batch_size == 12
    assert config.float16_config.enabled and not config.bfloat16_config.enabled
    assert zero.stage == 3
    assert zero.offload_param.device == "cpu" and zero.offload_optimizer.device == "cpu"
    assert (zero.reduce_bucket_size, zero.prefetch_bucket_size) == (500_000_000, 50_000_000)
    assert files["launch.sh"].read_text().splitlines()[1] == (
        "deepspeed --num_gpus 8 train.py --deepspeed ds_config.json")


def test_deepspeed_json_states_deepspeeds_own_defaults(tmp_path):
    """The buckets written are DeepSpeed's defaults, so the plan's memory is DeepSpeed's memory."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    written = json.loads(emit_plan(ParallelPlan("zero3", gpus=2), "deepspeed")[0].text)["zero_optimization"]
    default = DeepSpeedZeroConfig(stage=3)
    assert written["reduce_bucket_size"] == default.reduce_bucket_size
    assert written["allgather_bucket_size"] == default.allgather_bucket_size
    assert written["stage3_prefetch_bucket_size"] == default.prefetch_bucket_size
    assert written["stage3_param_persistence_threshold"] == default.param_persistence_threshold
    assert written["stage3_max_live_parameters"] == default.max_live_parameters
    assert written["overlap_comm"] == default.overlap_comm
    assert written["contiguous_gradients"] == default.contiguous_gradients


def test_torchrun_lines(tmp_path):
    one = emit_plan(ParallelPlan("fsdp", gpus=8), "torchrun")
    assert [f.name for f in one] == ["launch.sh"]
    assert one[0].text.splitlines()[1] == "torchrun --nnodes 1 --nproc-per-node 8 --standalone train.py"
    two = emit_plan(ParallelPlan("zero2", gpus=4, nodes=2), "torchrun")
    assert [f.name for f in two] == ["ds_config.json", "launch.sh"]
    assert "--nnodes 2 --nproc-per-node 4" in two[1].text and "--deepspeed ds_config.json" in two[1].text


@pytest.mark.parametrize("strategy,offload,engine", [
    ("ddp", "none", "deepspeed"), ("ddp", "optimizer", "accelerate"), ("fsdp", "optimizer", "accelerate"),
    ("zero2", "params", "deepspeed"),
])
def test_plans_the_engines_do_not_offer_are_refused(strategy, offload, engine):
    with pytest.raises(UsageError):
        emit_plan(ParallelPlan(strategy, gpus=2, offload=offload), engine)


def test_unwritable_folder_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError):
        write_plan(emit_plan(ParallelPlan("ddp", gpus=2), "torchrun"), blocker / "sub")
