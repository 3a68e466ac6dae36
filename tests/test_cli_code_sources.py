"""`--hub-repo/--entrypoint` and `--factory` end to end through the CLI, with code written by the test."""

from __future__ import annotations

import textwrap

import pytest

HUBCONF = '''
dependencies = ["torch"]

import torch.nn as nn


class Backbone(nn.Module):
    def __init__(self, width, depth):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.register_buffer("scale", torch_ones(width))


def torch_ones(n):
    import torch
    return torch.ones(n)


def tiny_backbone(pretrained=True, weights=None, width=64, depth=2):
    if pretrained:
        raise RuntimeError("would download weights")
    return Backbone(width, depth)


def tiny_backbone_lc(pretrained=True, backbone_weights=None, num_classes=1000, **kw):
    if pretrained:
        raise RuntimeError("would download head weights")
    model = nn.Sequential(tiny_backbone(pretrained=False, **kw), nn.Linear(kw.get("width", 64), num_classes))
    return model
'''


@pytest.fixture
def hub_repo(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "hubconf.py").write_text(textwrap.dedent(HUBCONF))
    return tmp_path / "repo"


def test_backbone_and_head_from_a_local_hubconf(run_cli, hub_repo):
    result = run_cli("estimate", "--hub-repo", str(hub_repo), "--entrypoint", "tiny_backbone", "--kwarg", "width=32",
                     "--entrypoint", "tiny_backbone_lc", "--kwarg", "width=32", "--format", "json")
    assert result.code == 0, result.err
    backbone, head = result.json()["models"]
    assert backbone["model"] == "hub:repo:tiny_backbone" and backbone["library"] == "torch.hub"
    width = 32
    backbone_bytes = (2 * (width * width + width) + width) * 4  # two Linear layers and the buffer
    assert backbone["weights"]["float32"]["total_bytes"] == backbone_bytes
    assert head["weights"]["float32"]["total_bytes"] == backbone_bytes + (width * 1000 + 1000) * 4


def test_unknown_entrypoint_fails_alone(run_cli, hub_repo):
    result = run_cli("estimate", "dinov3-vits16", "--hub-repo", str(hub_repo), "--entrypoint", "nope",
                     "--entrypoint", "tiny_backbone", "--format", "json")
    assert result.code == 1
    statuses = [m["status"] for m in result.json()["models"]]
    assert statuses == ["ok", "error", "ok"]
    assert "tiny_backbone" in result.json()["models"][1]["error"]  # lists what exists


def test_missing_hub_repo_is_reported_per_model(run_cli, tmp_path):
    result = run_cli("estimate", "--hub-repo", str(tmp_path / "absent"), "--entrypoint", "x")
    assert result.code == 1 and "not a folder" in result.err


def test_factory_from_a_file(run_cli, tmp_path):
    (tmp_path / "factory.py").write_text("import torch.nn as nn\n\ndef make(width=8):\n    return nn.Linear(width, width)\n")
    result = run_cli("estimate", "--factory", f"{tmp_path / 'factory.py'}:make", "--kwarg", "width=16",
                     "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["models"][0]["weights"]["float32"]["total_bytes"] == (16 * 16 + 16) * 4


@pytest.mark.parametrize("args", [
    ("--hub-repo", "x"),
    ("--entrypoint", "x"),
    ("dinov3-vits16", "--kwarg", "a=1"),
    ("dinov3-vits16", "--image-size", "224"),
])
def test_flag_combinations_are_usage_errors(run_cli, args):
    result = run_cli("estimate", *args)
    assert result.code == 2 and result.err.startswith("vramplan: error:")


def test_reproducing_command_round_trips(run_cli, hub_repo, tmp_path):
    """The `Command:` each report shows names the model again: running it gives the same figures."""
    import re
    import shlex

    (tmp_path / "factory.py").write_text("import torch.nn as nn\n\ndef make(width=8):\n    return nn.Linear(width, width)\n")
    first = run_cli("estimate", "dinov3-vits16", "--hub-repo", str(hub_repo), "--entrypoint", "tiny_backbone_lc",
                    "--factory", f"{tmp_path / 'factory.py'}:make", "--kwarg", "width=24", "--format", "markdown")
    assert first.code == 0, first.err
    commands = re.findall(r"^Command: `(.+)`", first.out, flags=re.M)
    assert len(commands) == 3
    for command in commands:
        words = shlex.split(command)
        assert words[:2] == ["vramplan", "estimate"]
        again = run_cli(*words[1:], "--format", "markdown")
        assert again.code == 0, (command, again.err)
        assert again.out.split("| dtype |")[1] in first.out  # the same table
