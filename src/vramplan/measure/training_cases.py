"""Which training cases to simulate for a model: sizes x batches x precisions x optimizers x what trains."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cases import InferenceRequest, cases_for

if TYPE_CHECKING:
    import torch.nn as nn

    from .training import TrainingCase

PRECISIONS = ("fp32", "amp-bf16", "amp-fp16", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adamw-fused", "sgd", "adafactor", "adamw-8bit")


@dataclass(frozen=True)
class TrainingRequest:
    """What the user asked to train; a `"probe"` in `trains` is `--freeze backbone`, `"lora"` a LoRA run.

    `trains` lists what trains in each case, in order: "full", "probe" (only the head), "lora".
    """

    image_sizes: tuple[tuple[int, int], ...] = ()
    seq_lens: tuple[int, ...] = ()
    batch_sizes: tuple[int, ...] = (1,)
    precisions: tuple[str, ...] = ("amp-bf16",)
    optimizers: tuple[str, ...] = ("adamw",)
    attns: tuple[str, ...] = ("sdpa",)
    device: str = "cuda"
    trains: tuple[str, ...] = ("full",)
    grad_checkpointing: bool = False
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = ()
    num_labels: int = 1000
    gpu: Any = None  # plan.gpus.GpuSpec of the CUDA target; None: the default H100 SXM


def training_cases_for(model: "nn.Module", request: TrainingRequest, reference: str) -> list["TrainingCase"]:
    """Expand a request into cases: input sizes as inference picks them, then the training settings."""
    from .training import TrainingCase

    sizes = cases_for(model, InferenceRequest(image_sizes=request.image_sizes, seq_lens=request.seq_lens,
                                              device=request.device), reference)
    cases = []
    for size, trains, batch, precision, optimizer, attn in itertools.product(
        sizes, request.trains, request.batch_sizes, request.precisions, request.optimizers, request.attns
    ):
        cases.append(TrainingCase(
            batch_size=batch, precision=precision, optimizer=optimizer, attn=attn, device=request.device,
            image_size=size.image_size, seq_len=size.seq_len, grad_checkpointing=request.grad_checkpointing,
            freeze="backbone" if trains == "probe" else "none",
            lora_rank=request.lora_rank if trains == "lora" else 0,
            lora_targets=request.lora_targets if trains == "lora" else (), num_labels=request.num_labels,
            gpu=request.gpu,
        ))
    return cases
