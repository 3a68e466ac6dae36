"""A local directory's checkpoint, read from its safetensors headers (found weak by mutation testing)."""

from __future__ import annotations

import json

import pytest

from vramplan.measure.checkpoint import (
    CheckpointInfo,
    explain_checkpoint,
    read_local_checkpoint,
    unreadable_checkpoint,
)
from vramplan.testing import safetensors_bytes

TENSORS = {"a.weight": ("BF16", (4, 8)), "b.weight": ("F32", (3,))}


def test_single_file_with_a_pickle_beside_it(tmp_path):
    data = safetensors_bytes(TENSORS)
    (tmp_path / "model.safetensors").write_bytes(data)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04 never unpickled")
    info = read_local_checkpoint(tmp_path)
    assert info.where == "local" and info.files == ("model.safetensors",)
    assert info.parameters == 35 and dict(info.dtypes) == {"BF16": 32, "F32": 3}
    assert info.stored_bytes == 32 * 2 + 3 * 4
    assert info.download_bytes == len(data)
    assert info.unread == ("pytorch_model.bin",)


def test_sharded_checkpoint_through_its_index(tmp_path):
    shards = {"model-00001-of-00002.safetensors": {"a.weight": ("BF16", (4, 8))},
              "model-00002-of-00002.safetensors": {"b.weight": ("F32", (3,))}}
    weight_map = {}
    for name, tensors in shards.items():
        (tmp_path / name).write_bytes(safetensors_bytes(tensors))
        weight_map.update(dict.fromkeys(tensors, name))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    info = read_local_checkpoint(tmp_path)
    assert sorted(info.files) == sorted(shards) and info.parameters == 35
    assert info.download_bytes == sum((tmp_path / n).stat().st_size for n in shards)


@pytest.mark.parametrize("files, expected", [((), None), (("model.pt", "extra.bin"), ("extra.bin", "model.pt"))])
def test_without_safetensors(tmp_path, files, expected):
    for name in files:
        (tmp_path / name).write_bytes(b"\x80\x04")
    info = read_local_checkpoint(tmp_path)
    if expected is None:
        assert info is None
        return
    note = "only pickle-based weights (extra.bin, model.pt): not opened, so nothing is known of them"
    assert info == CheckpointInfo("local", (), 0, (), 0, None, expected, (note,))


def test_unreadable_checkpoint_keeps_the_reason():
    info = unreadable_checkpoint("hub", "HTTP 500")
    assert info == CheckpointInfo("hub", (), 0, (), 0, None, (), ("checkpoint headers not read: HTTP 500",))


# --- how the stored checkpoint differs from the model built (explain_checkpoint) ----------------------------------


def _tied_model():
    """48 parameter values (embedding 40 tied to the head, LayerNorm 8), 3 persistent buffer values, 5 not."""
    import torch
    import torch.nn as nn

    model = nn.Module()
    model.emb, model.head, model.norm = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False), nn.LayerNorm(4)
    model.head.weight = model.emb.weight
    model.register_buffer("pos", torch.zeros(3))
    model.register_buffer("scratch", torch.zeros(5), persistent=False)
    return model


def _stored(parameters, dtypes=(("F32", 1),), notes=()):
    return CheckpointInfo("local", ("model.safetensors",), parameters, dtypes, 4 * parameters, None, (), notes)


@pytest.mark.parametrize("parameters, note", [
    (51, "the checkpoint holds exactly the values of the model vramplan builds"),
    (52, "the checkpoint stores 1 more values than the model vramplan builds: extra heads or modules (a task head, "
         "say) that the base architecture does not include"),
    (60, "the checkpoint stores 9 more values than the model vramplan builds: extra heads or modules (a task head, "
         "say) that the base architecture does not include"),
    (47, "the checkpoint stores 4 fewer values than the model vramplan builds: tied weights (40 values shared, "
         "stored once); buffers (3 values) that may not be saved; or modules missing from this checkpoint"),
])
def test_explained_against_parameters_counted_once_and_persistent_buffers(parameters, note):
    explained = explain_checkpoint(_stored(parameters), _tied_model(), None, {})
    assert explained.notes == (note,)
    assert explained.parameters == parameters and explained.files == ("model.safetensors",)


def test_fewer_values_without_ties_or_buffers_names_missing_modules_only():
    import torch.nn as nn

    explained = explain_checkpoint(_stored(10), nn.Linear(4, 3), None, {})
    assert explained.notes == ("the checkpoint stores 5 fewer values than the model vramplan builds: "
                               "or modules missing from this checkpoint",)


@pytest.mark.parametrize("dtypes, config, note", [
    ((("I8", 40), ("F16", 11)), {}, "quantized checkpoint (integer/fp8 tensors; stored as F16, I8): "
                                    "the float estimate above is the unquantized model"),
    ((("BF16", 51),), {"quantization_config": {"quant_method": "bitsandbytes"}},
     "quantized checkpoint (bitsandbytes; stored as BF16): the float estimate above is the unquantized model"),
    ((("BF16", 51),), {"quantization_config": {"bits": 4}},
     "quantized checkpoint (unknown method; stored as BF16): the float estimate above is the unquantized model"),
])
def test_quantized_checkpoint_note_replaces_the_exact_one(dtypes, config, note):
    explained = explain_checkpoint(_stored(51, dtypes, notes=("kept",)), _tied_model(), None, config)
    assert explained.notes == ("kept", note)


def test_checkpoint_without_files_is_returned_as_it_is():
    pickles = CheckpointInfo("hub", (), 0, (), 0, None, ("model.pt",), ("only pickles",))
    assert explain_checkpoint(pickles, _tied_model(), None, {"quantization_config": {"quant_method": "x"}}) is pickles


def test_from_metadata_orders_dtypes_largest_first_and_needs_every_file_size(tmp_path):
    from huggingface_hub import get_local_safetensors_metadata

    from vramplan.measure.checkpoint import checkpoint_from_metadata

    tensors = {"a": ("F32", (3,)), "b": ("BF16", (4, 8)), "c": ("I8", (5,)), "d": ("F64", (2,))}
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    metadata = get_local_safetensors_metadata(tmp_path)
    info = checkpoint_from_metadata(metadata, "cache", {"model.safetensors": 1000}, ("x.bin",))
    assert info.dtypes == (("BF16", 32), ("I8", 5), ("F32", 3), ("F64", 2))
    assert (info.where, info.parameters, info.stored_bytes) == ("cache", 42, 32 * 2 + 5 + 3 * 4 + 2 * 8)
    assert (info.download_bytes, info.unread, info.notes) == (1000, ("x.bin",), ())
    assert checkpoint_from_metadata(metadata, "hub", {"model.safetensors": None}).download_bytes is None
    assert checkpoint_from_metadata(metadata, "hub", {}).download_bytes is None


def test_a_dtype_newer_than_vramplans_table_is_counted_from_its_offsets(tmp_path):
    """safetensors' F4 (float4 e2m1, two values a byte) is not in DTYPE_BYTES: its bytes come from the header's
    data_offsets, not 0 (an undercount of the download and of what the weights take)."""
    import struct

    header = {"w": {"dtype": "F4", "shape": [4, 8], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [3], "data_offsets": [16, 28]}}
    text = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(28))
    info = read_local_checkpoint(tmp_path)
    assert dict(info.dtypes) == {"F4": 32, "F32": 3}
    assert info.stored_bytes == 16 + 12
