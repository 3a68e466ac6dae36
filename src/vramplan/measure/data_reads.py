"""Reads of tensor values during a simulated forward: the checks that can be answered without data.

A meta tensor holds no values, so `.item()`, `bool(tensor)` and `x in tensor` (which reach
`aten::item`, `aten::is_nonzero` or `aten::_local_scalar_dense`) cannot run. transformers reads values in checks that do not change
what is allocated: the padding warning (`PreTrainedModel.warn_if_padding_and_no_attention_mask`,
`pad_token_id in input_ids[:, [-1, 0]]`), `torch.isfinite(hidden_states).all()` before a float16
clamp, mask checks such as "is every position attended". Each of these reads a *boolean*: the
answer is a branch, never a size.

Policy (`answer_scalar_read`):

- A boolean read is answered `True`. For the inputs vramplan feeds (zero token ids, no padding,
  finite activations) that is what the real checks find: every position is attended, every
  activation is finite, and a zero `pad_token_id` is present.
- A number read (`int(t)`, `t.item()` of an integer or float tensor) may become a size
  (`arange(lengths.max().item())`), so it is refused with a `SimulationError` that says so, as
  are the operators whose output shape depends on data (`nonzero`, `unique`, `masked_select`:
  their meta kernels raise) and MoE routing, which reads expert counts as numbers.

Known limitations:
    - A boolean check whose answer for real inputs would be `False` and whose other branch
      allocates differently is simulated on its `True` branch. Of the 44 architectures of the
      breadth suite (`vramplan.testing.breadth`) none does.
"""

from __future__ import annotations

from typing import Any

from ..errors import SimulationError


def is_scalar_read(func: Any) -> bool:
    """Say whether `func` copies a tensor's value into Python (`item`, `is_nonzero`, `_local_scalar_dense`)."""
    import torch

    aten = torch.ops.aten
    return func in (aten._local_scalar_dense.default, aten.item.default, aten.is_nonzero.default)


def answer_scalar_read(tensor: "Any", reference: str) -> bool:
    """Answer a boolean check as the real inputs would; refuse a number that could become a size."""
    import torch

    if tensor.dtype == torch.bool:
        return True
    raise SimulationError(
        reference,
        f"the forward reads a {tensor.dtype} tensor's value (`.item()`), which can decide a tensor's size; "
        "it cannot be simulated without data",
    )

