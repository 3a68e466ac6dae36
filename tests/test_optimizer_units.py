"""`measure/optimizers.py` unit by unit: the read answers of the training step and the 8-bit AdamW model.

Written for its mutation run (docs/testing.md, "Third scoring"): `answer_read`'s `and` -> `or`, the
`absmax` vectors and quantisation maps made off the parameter's device, the step counter and the
defaults survived the simulation tests, whose meta default device hides where a tensor is made.
"""

from __future__ import annotations

import pytest
import torch

from vramplan.errors import SimulationError
from vramplan.measure.optimizers import AdamW8bitStates, answer_read


def _meta(dtype: torch.dtype, numel: int = 1) -> torch.Tensor:
    return torch.empty((numel,), dtype=dtype, device="meta")


def test_the_step_float_read_is_answered_zero():
    """GradScaler's summed `found_inf` (one float) read in the step: 0.0, no inf found, the step runs."""
    answer = answer_read(_meta(torch.float32), "optimizer step", "m")
    assert answer == 0.0 and isinstance(answer, float)


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_a_float_read_outside_the_step_is_refused(phase):
    with pytest.raises(SimulationError, match="reads a torch.float32 tensor's value") as caught:
        answer_read(_meta(torch.float32), phase, "org/model-x")
    assert "org/model-x" in str(caught.value)  # the refusal names the model


def test_a_float_read_of_many_values_in_the_step_is_refused():
    with pytest.raises(SimulationError, match="reads a torch.float32 tensor's value"):
        answer_read(_meta(torch.float32, numel=2), "optimizer step", "m")


@pytest.mark.parametrize("phase", ["forward", "optimizer step"])
def test_a_one_element_boolean_read_is_true_not_zero(phase):
    """`0.0` would be falsy: the check's other branch would run."""
    assert answer_read(_meta(torch.bool), phase, "m") is True


def _stepped(numel: int, device: str, steps: int = 1):
    p = torch.nn.Parameter(torch.zeros((numel,), device=device))
    p.grad = torch.zeros_like(p)
    opt = AdamW8bitStates([p])
    for _ in range(steps):
        opt.step()
    return opt, opt.state[p]


def test_8bit_states_of_a_meta_parameter_stay_on_its_device():
    """Outside the simulation the default device is the CPU: every state must still follow the parameter.

    4096 elements (bitsandbytes' min_8bit_size): two uint8 states of 4096, two float32 absmax of
    4096 / 256 = 16 blocks, the two 256-value float32 quantisation maps.
    """
    opt, state = _stepped(4096, "meta", steps=2)
    assert state["step"] == 2
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    assert sorted(tensors) == ["absmax1", "absmax2", "qmap1", "qmap2", "state1", "state2"]  # bitsandbytes' keys
    assert {k: (t.device.type, t.dtype, tuple(t.shape)) for k, t in tensors.items()} == {
        "state1": ("meta", torch.uint8, (4096,)), "state2": ("meta", torch.uint8, (4096,)),
        "absmax1": ("meta", torch.float32, (16,)), "absmax2": ("meta", torch.float32, (16,)),
        "qmap1": ("meta", torch.float32, (256,)), "qmap2": ("meta", torch.float32, (256,)),
    }
    assert list(opt._qmaps) == [torch.device("meta")]


def test_8bit_small_parameter_keeps_two_float32_states():
    """4095 elements (under min_8bit_size): two float32 states, no maps, no absmax."""
    opt, state = _stepped(4095, "meta")
    assert state["step"] == 1
    assert {k: (v.device.type, v.dtype, tuple(v.shape)) for k, v in state.items() if k != "step"} == {
        "state1": ("meta", torch.float32, (4095,)), "state2": ("meta", torch.float32, (4095,)),
    }
    assert opt._qmaps == {}


def test_8bit_defaults_are_bitsandbytes_adamw8bit_defaults():
    """bitsandbytes/optim/adamw.py AdamW8bit: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2."""
    opt = AdamW8bitStates([torch.nn.Parameter(torch.zeros(2))])
    assert opt.defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}


def test_8bit_step_decays_the_weights_in_place():
    """Decoupled weight decay, p *= 1 - lr * wd, in place: 1 - 1e-4 * 1e-2 after one step from ones."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.zeros_like(p)
    before = p.data_ptr()
    AdamW8bitStates([p], lr=1e-4).step()
    assert p.data_ptr() == before
    assert torch.equal(p.detach(), torch.full((3,), 1 - 1e-6))


def test_8bit_step_runs_on_real_cpu_parameters():
    """The 32-bit update touches only float32 states: a uint8 state multiplied in place by a float
    is refused on real tensors (meta tensors let it pass, so the simulation cannot tell)."""
    _, state = _stepped(4096, "cpu", steps=2)
    assert state["step"] == 2 and state["state1"].dtype == torch.uint8
    _, small = _stepped(8, "cpu")
    assert small["state1"].dtype == torch.float32


@pytest.mark.parametrize("precision", ["amp-fp16", "amp-bf16", "fp32", "bf16"])
def test_only_amp_fp16_gets_an_enabled_cpu_grad_scaler(precision):
    """The CPU check runs the same `grad_scaler`, so only a direct test sees it missing or disabled."""
    from vramplan.measure.optimizers import grad_scaler
    from vramplan.measure.training import TrainingCase

    case = TrainingCase(batch_size=1, precision=precision, optimizer="adamw", device="cpu", image_size=(64, 64))
    scaler = grad_scaler(case)
    if precision != "amp-fp16":
        assert scaler is None
        return
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert scaler._device == "cpu" and scaler.get_scale() == 2.0**16


def test_an_unknown_optimizer_is_named_in_the_refusal():
    from types import SimpleNamespace

    from vramplan.measure.optimizers import make_optimizer

    with pytest.raises(ValueError, match="no optimizer 'lion' here"):
        make_optimizer([torch.nn.Parameter(torch.zeros(2))], SimpleNamespace(optimizer="lion"))
