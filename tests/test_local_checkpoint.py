"""A local directory's checkpoint, read from its safetensors headers (found weak by mutation testing)."""

from __future__ import annotations

import json

import pytest

from vramplan.measure.checkpoint import read_local_checkpoint, unreadable_checkpoint
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
    assert info.where == "local" and info.unread == expected and info.parameters == 0
    assert info.notes == ("only pickle-based weights (extra.bin, model.pt): not opened, so nothing is known of them",)


def test_unreadable_checkpoint_keeps_the_reason():
    info = unreadable_checkpoint("hub", "HTTP 500")
    assert (info.where, info.files, info.parameters, info.download_bytes) == ("hub", (), 0, None)
    assert info.notes == ("checkpoint headers not read: HTTP 500",)
