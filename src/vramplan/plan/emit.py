"""Engine configs that start the planned run: accelerate's config YAML, a DeepSpeed JSON, the launch line.

vramplan plans; the engines run. Every file written here is the engine's own format, loaded in the tests
by the engine's own parser (accelerate's `load_config_from_file` and launch validation, DeepSpeed's
`DeepSpeedConfig`). The DeepSpeed JSON states DeepSpeed's default bucket sizes explicitly, because the
per-GPU figures of `sharding.py` assume them: a value changed in the file changes the memory.

Known limitations:
    - The training script is a placeholder (`train.py`): vramplan does not write training code.
    - Multi-node launch lines leave the rendezvous host as `$MASTER_ADDR` for the user to fill in.
    - Pure bf16/fp16 (`--precision bf16|fp16`) has no DeepSpeed spelling of its own: DeepSpeed's bf16/fp16
      modes always keep float32 master weights, and the JSON says so by enabling them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .parallel import ParallelPlan

EMITTERS = ("accelerate", "deepspeed", "torchrun")
SCRIPT = "train.py"
ACCELERATE_FILE = "accelerate_config.yaml"
DEEPSPEED_FILE = "ds_config.json"
LAUNCH_FILE = "launch.sh"

# DeepSpeed's defaults (deepspeed/runtime/zero/config.py, DeepSpeedZeroConfig, deepspeed 0.19.8):
# reduce_bucket_size and allgather_bucket_size 5e8 elements, stage3_prefetch_bucket_size 5e7,
# stage3_param_persistence_threshold 1e5, stage3_max_live_parameters 1e9, contiguous_gradients True.
DS_REDUCE_BUCKET = 500_000_000
DS_ALLGATHER_BUCKET = 500_000_000
DS_PREFETCH_BUCKET = 50_000_000
DS_PERSISTENCE_THRESHOLD = 100_000
DS_MAX_LIVE_PARAMETERS = 1_000_000_000


@dataclass(frozen=True)
class EmittedFile:
    """One file of an emitted plan: its name in the output folder and its text."""

    name: str
    text: str


def emit_plan(plan: ParallelPlan, engine: str) -> tuple[EmittedFile, ...]:
    """The files that start `plan` with `engine`: configs, then the launch line as `launch.sh`."""
    if engine not in EMITTERS:
        raise UsageError(f"--emit `{engine}` is not one of {', '.join(EMITTERS)}")
    if engine == "deepspeed" and not plan.zero_stage:
        raise UsageError(f"--emit deepspeed needs --strategy zero1, zero2 or zero3, not {plan.strategy}")
    files = []
    if plan.zero_stage:
        files.append(EmittedFile(DEEPSPEED_FILE, json.dumps(deepspeed_config(plan), indent=2) + "\n"))
    if engine == "accelerate":
        files.append(EmittedFile(ACCELERATE_FILE, accelerate_yaml(plan)))
    files.append(EmittedFile(LAUNCH_FILE, "#!/bin/sh\n" + launch_command(plan, engine) + "\n"))
    return tuple(files)


def emit_engines(plan: ParallelPlan, engines: tuple[str, ...]) -> tuple[EmittedFile, ...]:
    """The files of `plan` for several engines, in one folder: the configs once, a launch line per engine.

    One engine keeps `launch.sh`; several write `launch-<engine>.sh` each. DeepSpeed's own launcher is
    left out for plans without ZeRO (it runs DeepSpeed engines only); none at all gives no files.
    """
    files: dict[str, EmittedFile] = {}
    for engine in engines:
        if engine == "deepspeed" and not plan.zero_stage:
            continue
        for f in emit_plan(plan, engine):
            name = f"launch-{engine}.sh" if f.name == LAUNCH_FILE and len(engines) > 1 else f.name
            files[name] = EmittedFile(name, f.text)
    return tuple(files.values())


def write_plan(files: tuple[EmittedFile, ...], folder: str | Path) -> list[Path]:
    """Write the files into `folder` (made if missing); returns their paths."""
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in files:
            path = out / f.name
            path.write_text(f.text, encoding="utf-8")
            paths.append(path)
    except OSError as exc:
        raise UsageError(f"Cannot write the plan into `{out}`: {exc.strerror or exc}") from exc
    return paths


def deepspeed_config(plan: ParallelPlan) -> dict:
    """DeepSpeed's JSON for a ZeRO plan; train_batch_size is left for DeepSpeed to derive from the world."""
    zero: dict = {
        "stage": plan.zero_stage,
        "contiguous_gradients": True,
        "overlap_comm": plan.zero_stage == 3,  # DeepSpeed's own default: on for stage 3 only
        "reduce_bucket_size": DS_REDUCE_BUCKET,
        "allgather_bucket_size": DS_ALLGATHER_BUCKET,
    }
    if plan.zero_stage == 3:
        zero.update(stage3_prefetch_bucket_size=DS_PREFETCH_BUCKET,
                    stage3_param_persistence_threshold=DS_PERSISTENCE_THRESHOLD,
                    stage3_max_live_parameters=DS_MAX_LIVE_PARAMETERS)
    if plan.offloads_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if plan.offloads_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict = {
        "train_micro_batch_size_per_gpu": plan.micro_batch,
        "gradient_accumulation_steps": plan.grad_accum,
        "zero_optimization": zero,
    }
    half = _half(plan.precision)
    if half == "bf16":
        config["bf16"] = {"enabled": True}
    elif half == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    if plan.grad_checkpointing:
        config["activation_checkpointing"] = {"partition_activations": False, "contiguous_memory_optimization": False}
    return config


def accelerate_yaml(plan: ParallelPlan) -> str:
    """accelerate's config file, as `accelerate config` writes it, for the plan."""
    lines = [
        "compute_environment: LOCAL_MACHINE",
        "debug: false",
        f"distributed_type: {_distributed_type(plan)}",
        "downcast_bf16: 'no'",
        "machine_rank: 0",
        "main_training_function: main",
        f"num_machines: {plan.nodes}",
        f"num_processes: {plan.world}",
        "rdzv_backend: static",
        "same_network: true",
        "use_cpu: false",
    ]
    if not plan.zero_stage:  # with a DeepSpeed file, precision lives there; accelerate refuses it twice
        lines.insert(6, f"mixed_precision: {_accelerate_mixed_precision(plan.precision)}")
    if plan.nodes > 1:
        lines += ["main_process_ip: 127.0.0.1  # set to the first node's address", "main_process_port: 29500"]
    if plan.strategy == "fsdp":
        lines += ["fsdp_config:", *(f"  {k}: {_yaml_scalar(v)}" for k, v in _fsdp_config(plan).items())]
    elif plan.zero_stage:
        lines += [
            "deepspeed_config:",
            f"  deepspeed_config_file: {DEEPSPEED_FILE}",
            f"  zero3_init_flag: {_yaml_scalar(plan.zero_stage == 3)}",
        ]
    return "\n".join(lines) + "\n"


def launch_command(plan: ParallelPlan, engine: str) -> str:
    """The command line that starts `train.py` on one node of the plan."""
    if engine == "accelerate":
        return f"accelerate launch --config_file {ACCELERATE_FILE} {SCRIPT}"
    if engine == "deepspeed":
        nodes = f" --num_nodes {plan.nodes} --hostfile hostfile" if plan.nodes > 1 else ""
        return f"deepspeed --num_gpus {plan.gpus}{nodes} {SCRIPT} --deepspeed {DEEPSPEED_FILE}"
    rendezvous = (f" --node-rank $NODE_RANK --master-addr $MASTER_ADDR --master-port 29500"
                  if plan.nodes > 1 else " --standalone")
    extra = f" --deepspeed {DEEPSPEED_FILE}" if plan.zero_stage else ""
    return f"torchrun --nnodes {plan.nodes} --nproc-per-node {plan.gpus}{rendezvous} {SCRIPT}{extra}"


def _fsdp_config(plan: ParallelPlan) -> dict:
    """accelerate's FSDP2 settings: wrap each `_no_split_modules` block, then the root."""
    config = {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP" if plan.wrap_classes else "NO_WRAP",
        "fsdp_reshard_after_forward": plan.reshard_after_forward,
        "fsdp_offload_params": plan.offloads_params,
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_activation_checkpointing": plan.grad_checkpointing,
    }
    if plan.wrap_classes:
        config["fsdp_transformer_layer_cls_to_wrap"] = ",".join(plan.wrap_classes)
    return config


def _distributed_type(plan: ParallelPlan) -> str:
    if plan.strategy == "fsdp":
        return "FSDP"
    if plan.zero_stage:
        return "DEEPSPEED"
    return "MULTI_GPU" if plan.world > 1 else "NO"


def _half(precision: str) -> str | None:
    return "bf16" if "bf16" in precision else "fp16" if "fp16" in precision else None


def _accelerate_mixed_precision(precision: str) -> str:
    """amp-* is accelerate's mixed precision; pure bf16/fp16 loads the model in that dtype, so 'no'."""
    return {"amp-bf16": "bf16", "amp-fp16": "fp16"}.get(precision, "'no'")


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
