"""The optimizers and the gradient scaler of the training step, beyond torch's AdamW and SGD.

Each is the real class, run on the meta parameters by the training simulation and on real
ones by the CPU check (`vramplan.testing.training`), except bitsandbytes' 8-bit AdamW, which is
modelled (bitsandbytes is not installable here):

- `adamw-fused`: `torch.optim.AdamW(fused=True)`. Its state is made by `Adam._init_group`
  (torch/optim/adam.py): `step` on the parameter's device (float32, not a host tensor as for the
  for-loop and foreach paths), `exp_avg` and `exp_avg_sq`; the update is one in-place kernel
  (`torch._fused_adamw_`, ATen's FusedAdamWKernel: multi_tensor_apply with its metadata in the
  kernel arguments, so no intermediates). torch refuses `fused=True` for meta tensors
  (`_device_dtype_check_for_fused`); the simulation lets meta stand for the target there.
- `adafactor`: transformers' `Adafactor` with its defaults (relative step, parameter scaling,
  no first moment): factored row and column second moments for matrices, a full one for
  vectors, and its per-parameter temporaries. Its `max(eps, RMS)` compares a tensor: a boolean
  read, answered True (`data_reads`: the weights' RMS exceeds 1e-3 for trained weights; the
  branch only decides whether the learning rate is a scalar tensor or a float).
- `adamw-8bit`: `AdamW8bitStates`, a torch optimizer whose `step` allocates what bitsandbytes'
  `AdamW8bit` allocates (below) and updates in place, as its blockwise kernel does.
- amp-fp16: `torch.amp.GradScaler` (real class): its `_scale` and `_growth_tracker`, the
  per-device `found_inf`, `unscale_`'s inverse scale. Its `.item()` of the summed `found_inf`
  (may the step run?) is answered 0.0, no inf found, so the step runs, as in a healthy run.

Known limitations:
    - adamw-8bit is modelled from bitsandbytes' source, not run: its CUDA kernels' own buffers
      (none in the blockwise 8-bit update) and paged optimizers (`is_paged`) are not covered.
    - GradScaler's steps skipped for an inf/NaN gradient are not simulated (they allocate less).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from . import data_reads

if TYPE_CHECKING:
    import torch

# bitsandbytes-foundation/bitsandbytes @ 95f9af309d4d5793847169c39288dcd3fcbdf564:
# bitsandbytes/optim/adamw.py 62-122 (AdamW8bit: Optimizer2State "adam", 8 bits, min_8bit_size=4096,
# max_unorm 0 by default so no `unorm_vec`); bitsandbytes/optim/optimizer.py 492-532
# (Optimizer2State.init_state: a parameter under min_8bit_size keeps two float32 states; else two
# uint8 states of the parameter's shape (get_state_buffer, 374-384: zeros_like), the shared
# signed/unsigned quantisation maps `qmap1`/`qmap2` moved to the device once, and two float32
# `absmax` vectors of ceil(numel / 256) blocks, blocksize 256), `step` a Python int;
# bitsandbytes/functional.py 296 (create_dynamic_map: 256 float32 values per map).
BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCKSIZE = 256
BNB_QMAP_VALUES = 256


def make_optimizer(params: list, case: Any):
    """The optimizer `case.optimizer` names, for the optimizers beyond AdamW and SGD."""
    import torch

    if case.optimizer == "adamw-fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if case.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=None, relative_step=True, scale_parameter=True, warmup_init=False)
    if case.optimizer == "adamw-8bit":
        return AdamW8bitStates(params, lr=1e-4)
    raise ValueError(f"no optimizer {case.optimizer!r} here")


def _optimizer_base():
    import torch

    return torch.optim.Optimizer


class AdamW8bitStates(_optimizer_base()):  # type: ignore[misc]
    """bitsandbytes' AdamW8bit as memory: its states allocated as its `init_state` does, updated in place.

    Modelled, not bitsandbytes' code: the values are not those of 8-bit Adam (no quantisation is
    done); what is allocated, when, and on which device is.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._qmaps: dict[Any, tuple] = {}

    def _qmap(self, device) -> tuple:
        import torch

        if device not in self._qmaps:  # fill_qmap on the host, then moved to the device once
            host = (torch.zeros(BNB_QMAP_VALUES), torch.zeros(BNB_QMAP_VALUES))
            self._qmaps[device] = tuple(t.to(device) for t in host)
        return self._qmaps[device]

    def step(self, closure=None):  # noqa: D102 - torch.optim.Optimizer.step
        import torch

        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state[p]
                    if not state:
                        self._init_state(p, state)
                    state["step"] += 1
                    if state["state1"].dtype == torch.float32:  # the 32-bit update, in place
                        state["state1"].mul_(group["betas"][0])
                    p.mul_(1 - group["lr"] * group["weight_decay"])  # the update is in place
        return None

    def _init_state(self, p, state: dict) -> None:
        import torch

        state["step"] = 0
        n = p.numel()
        if n < BNB_MIN_8BIT_SIZE:
            state["state1"] = torch.zeros_like(p, dtype=torch.float32)
            state["state2"] = torch.zeros_like(p, dtype=torch.float32)
            return
        state["qmap1"], state["qmap2"] = self._qmap(p.device)
        state["state1"] = torch.zeros_like(p, dtype=torch.uint8)
        state["state2"] = torch.zeros_like(p, dtype=torch.uint8)
        blocks = -(-n // BNB_BLOCKSIZE)
        state["absmax1"] = torch.zeros((blocks,), dtype=torch.float32, device=p.device)
        state["absmax2"] = torch.zeros((blocks,), dtype=torch.float32, device=p.device)


def grad_scaler(case: Any, init_scale: float = 2.0**16):
    """`torch.amp.GradScaler` for amp-fp16, else None; its tensors follow the loss's device.

    `init_scale` changes no size: the CPU check starts at 1.0, where a small model's float16
    gradients stay finite, so its real steps run as the simulated ones do.
    """
    if case.precision != "amp-fp16":
        return None
    import torch

    # "cpu": a CPU-only torch disables a "cuda" scaler; the scale lives where the loss is (meta here).
    return torch.amp.GradScaler("cpu", init_scale=init_scale)


@contextlib.contextmanager
def meta_stands_for_target():
    """Let `fused=True` accept meta parameters: torch's device check for fused kernels counts meta in."""
    import torch.optim.optimizer as torch_optimizer

    original = torch_optimizer._get_fused_kernels_supported_devices

    def supported() -> list[str]:
        return [*original(), "meta"]

    torch_optimizer._get_fused_kernels_supported_devices = supported
    try:
        yield
    finally:
        torch_optimizer._get_fused_kernels_supported_devices = original


def answer_read(tensor: "torch.Tensor", phase: str, reference: str) -> Any:
    """A value read of a meta tensor in the training step: booleans True; in the step, floats 0.0.

    The float read in the optimizer step is GradScaler's "was any gradient inf?" (`found_inf`
    summed, `.item()`): answered 0.0, so the step runs. Any other number is refused (`data_reads`).
    """
    if tensor.dtype.is_floating_point and phase == "optimizer step" and tensor.numel() == 1:
        return 0.0
    return data_reads.answer_scalar_read(tensor, reference)
