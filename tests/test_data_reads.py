"""`measure/data_reads.py`: a boolean read is answered True, a number read is refused naming the model and why.

Written for its mutation run (docs/testing.md): `return False` and the message's model and reason survived."""

from __future__ import annotations

import pytest
import torch

from vramplan.errors import SimulationError
from vramplan.measure.data_reads import answer_scalar_read


def test_a_boolean_read_is_answered_true():
    assert answer_scalar_read(torch.empty((), dtype=torch.bool, device="meta"), "m") is True


def test_a_number_read_is_refused_naming_the_model_and_the_reason():
    with pytest.raises(SimulationError) as caught:
        answer_scalar_read(torch.empty((), dtype=torch.float32, device="meta"), "org/model-x")
    text = str(caught.value)
    assert "org/model-x" in text
    assert text.endswith("reads a torch.float32 tensor's value (`.item()`), which can decide a tensor's size; "
                         "it cannot be simulated without data")
