"""A multi-GPU layout as the user asks for it: strategy, GPUs per node, nodes, offload, precision."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError

STRATEGIES = ("ddp", "fsdp", "zero1", "zero2", "zero3")
OFFLOADS = ("none", "optimizer", "params")
PRECISIONS = ("fp32", "amp-bf16", "amp-fp16", "bf16", "fp16")

# What each strategy can move to the CPU. FSDP2's CPUOffloadPolicy moves parameters, gradients and the
# optimizer step together (torch/distributed/fsdp/_fully_shard/_fsdp_api.py), so "params" is its only
# offload; DeepSpeed offloads the optimizer from stage 1 and parameters only in stage 3
# (deepspeed/runtime/zero/config.py, `offload_param`: "Valid only with stage 3").
_OFFLOADS_FOR = {
    "ddp": ("none",),
    "fsdp": ("none", "params"),
    "zero1": ("none", "optimizer"),
    "zero2": ("none", "optimizer"),
    "zero3": ("none", "optimizer", "params"),
}


@dataclass(frozen=True)
class ParallelPlan:
    """One way to spread a training step over GPUs.

    `gpus` counts GPUs per node (torchrun's --nproc-per-node, DeepSpeed's num_gpus_per_node); the world is
    gpus x nodes. `micro_batch` is the batch each GPU runs per step (vramplan's --batch-size).
    """

    strategy: str
    gpus: int = 1
    nodes: int = 1
    offload: str = "none"
    precision: str = "amp-bf16"
    micro_batch: int = 1
    grad_accum: int = 1
    wrap_classes: tuple[str, ...] = ()
    grad_checkpointing: bool = False
    reshard_after_forward: bool = True

    def __post_init__(self) -> None:
        check_plan(self.strategy, self.offload, self.precision)
        if self.gpus < 1 or self.nodes < 1 or self.micro_batch < 1 or self.grad_accum < 1:
            raise UsageError("--gpus, --nodes, --batch-size and gradient accumulation must be at least 1")

    @property
    def world(self) -> int:
        return self.gpus * self.nodes

    @property
    def zero_stage(self) -> int:
        return int(self.strategy[-1]) if self.strategy.startswith("zero") else 0

    @property
    def offloads_optimizer(self) -> bool:
        """The optimizer step runs on the CPU (ZeRO-Offload, or FSDP2's CPU offload, which moves it too)."""
        return self.offload == "optimizer" or self.offload == "params"

    @property
    def offloads_params(self) -> bool:
        return self.offload == "params"


def check_plan(strategy: str, offload: str, precision: str) -> None:
    """Refuse combinations the engines do not offer, in one line naming what they do offer."""
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy `{strategy}` is not one of {', '.join(STRATEGIES)}")
    if offload not in OFFLOADS:
        raise UsageError(f"--offload `{offload}` is not one of {', '.join(OFFLOADS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision `{precision}` is not one of {', '.join(PRECISIONS)}")
    if offload not in _OFFLOADS_FOR[strategy]:
        allowed = " or ".join(_OFFLOADS_FOR[strategy])
        raise UsageError(f"--offload {offload} is not offered by {strategy}: use --offload {allowed}")
