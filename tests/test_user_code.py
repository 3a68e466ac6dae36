"""Code the user names (hubconf.py, factories) runs without corrupting our output, with the
--kwarg it is given, and fails with the step to take: a missing module, a file it would download."""

from __future__ import annotations

import json
import textwrap

import pytest

# Prints as DINOv3's segmentor does ("embed dim 4096"), at import, while building and in forward;
# its model classes live in hubconf.py itself (torch.hub executes it without registering a module).
PRINTING_HUBCONF = '''
dependencies = ["torch"]

import functools

import torch
from torch import nn

print("hubconf imported")


@functools.lru_cache
def _grid(n):
    return torch.arange(n)


class Segmentor(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        print("embed dim", embed_dim)
        self.patch = nn.Conv2d(3, embed_dim, 16, 16)
        self.head = nn.Conv2d(embed_dim, 5, 1)

    def forward(self, x):
        print("forward", tuple(x.shape))
        return self.head(self.patch(x)) + _grid(1)


def segmentor(pretrained=True, embed_dim=64):
    if pretrained:
        raise RuntimeError("would download weights")
    return Segmentor(embed_dim)


def text_model(pretrained=True, width=8, bpe_path_or_url="http://127.0.0.1:9/bpe_simple_vocab_16e6.txt.gz"):
    import urllib.request
    model = nn.Linear(width, width)
    with urllib.request.urlopen(bpe_path_or_url, timeout=5) as response:
        vocab = response.read()
    return model, vocab


def built_marker(pretrained=True, marker="", bpe_path_or_url="https://example.invalid/vocab.txt.gz"):
    open(marker, "w").close()
    return nn.Linear(2, 2)


def needs_ftfy(pretrained=True):
    import vramplan_test_ftfy_not_installed  # noqa: F401  (imported lazily, as dino.txt imports ftfy)
    return nn.Linear(2, 2)
'''


@pytest.fixture
def hub_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(textwrap.dedent(PRINTING_HUBCONF))
    (repo / "requirements.txt").write_text("torch\nftfy\n")
    return repo


def test_printing_hubconf_keeps_json_intact(run_cli, hub_repo):
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "segmentor", "--kwarg", "embed_dim=96",
                     "--mode", "inference", "--image-size", "64", "--dtype", "float32", "--format", "json")
    assert result.code == 0, result.err
    [model] = result.json()["models"]  # stdout is our JSON alone
    assert model["status"] == "ok", model["error"]
    assert model["weights"]["float32"]["total_bytes"] == (3 * 16 * 16 * 96 + 96 + 96 * 5 + 5) * 4
    [case] = model["inference"]
    assert case["peak_allocated_bytes"] > case["parameter_bytes"]
    for printed in ("hubconf imported", "embed dim 96", "forward (1, 3, 64, 64)"):
        assert printed in result.err


def test_printing_factory_keeps_json_intact(run_cli, tmp_path):
    (tmp_path / "net.py").write_text("import torch.nn as nn\nprint('importing net')\n\n"
                                     "def make(width=4):\n    print('width', width)\n    return nn.Linear(width, width)\n")
    result = run_cli("estimate", "--factory", f"{tmp_path / 'net.py'}:make", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["models"][0]["status"] == "ok"
    assert "importing net" in result.err and "width 4" in result.err


def test_each_kwarg_goes_to_the_entrypoint_it_follows(run_cli, hub_repo, tmp_path):
    (tmp_path / "net.py").write_text("import torch.nn as nn\n\ndef make(width=4, bias=True):\n"
                                     "    return nn.Linear(width, width, bias=bias)\n")
    factory = f"{tmp_path / 'net.py'}:make"
    result = run_cli("estimate", "--hub-repo", str(hub_repo),
                     "--factory", factory, "--kwarg", "width=10",
                     "--factory", factory,
                     "--entrypoint", "segmentor", "--kwarg", "embed_dim=32", "--format", "json")
    assert result.code == 0, result.err
    wide, narrow, segmentor = (m["weights"]["float32"]["total_bytes"] for m in result.json()["models"])
    assert wide == (10 * 10 + 10) * 4 and narrow == (4 * 4 + 4) * 4
    assert segmentor == (3 * 16 * 16 * 32 + 32 + 32 * 5 + 5) * 4


def test_kwargs_before_the_first_code_flag_go_to_all(run_cli, tmp_path):
    (tmp_path / "net.py").write_text("import torch.nn as nn\n\ndef make(width=4, bias=True):\n"
                                     "    return nn.Linear(width, width, bias=bias)\n")
    factory = f"{tmp_path / 'net.py'}:make"
    result = run_cli("estimate", "--kwarg", "bias=false", "--factory", factory, "--kwarg", "width=10",
                     "--factory", factory, "--format", "json")
    assert result.code == 0, result.err
    wide, narrow = (m["weights"]["float32"]["total_bytes"] for m in result.json()["models"])
    assert wide == 10 * 10 * 4 and narrow == 4 * 4 * 4


def test_kwarg_flag_help_says_where_it_goes(run_cli):
    result = run_cli("estimate", "--help")
    assert "--entrypoint or --factory it follows" in " ".join(result.out.split())


def test_missing_module_names_it_and_the_requirements_file(run_cli, hub_repo):
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "needs_ftfy", "--format", "json")
    error = result.json()["models"][0]["error"]
    assert "`vramplan_test_ftfy_not_installed`, which is not installed" in error
    assert f"pip install -r {hub_repo / 'requirements.txt'}" in error


def test_missing_module_at_hubconf_import(run_cli, hub_repo):
    (hub_repo / "hubconf.py").write_text("import vramplan_test_omegaconf_absent\n\ndef m():\n    pass\n")
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "m")
    assert result.code == 1
    assert "`vramplan_test_omegaconf_absent`, which is not installed" in result.err
    assert "requirements.txt" in result.err and "Traceback" not in result.err


def test_failed_download_names_the_kwarg(run_cli, hub_repo):
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "text_model", "--format", "json")
    error = result.json()["models"][0]["error"]
    assert "downloads `bpe_path_or_url` from http://127.0.0.1:9/bpe_simple_vocab_16e6.txt.gz" in error
    assert "--kwarg bpe_path_or_url=PATH" in error


def test_local_copy_given_by_kwarg_builds(run_cli, hub_repo, tmp_path):
    vocab = tmp_path / "bpe.txt.gz"
    vocab.write_bytes(b"vocab")
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "text_model",
                     "--kwarg", f"bpe_path_or_url=file://{vocab}", "--format", "json")
    assert result.json()["models"][0]["weights"]["float32"]["total_bytes"] == (8 * 8 + 8) * 4


def test_offline_refuses_before_building(run_cli, hub_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    marker = tmp_path / "built"
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "built_marker",
                     "--kwarg", f"marker={marker}", "--format", "json")
    error = result.json()["models"][0]["error"]
    assert "HF_HUB_OFFLINE is set" in error and "--kwarg bpe_path_or_url=PATH" in error
    assert not marker.exists()  # refused before the 866M-parameter model would be built
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "built_marker",
                     "--kwarg", f"marker={marker}", "--kwarg", "bpe_path_or_url=/tmp/vocab.txt.gz")
    assert result.code == 0 and marker.exists()
