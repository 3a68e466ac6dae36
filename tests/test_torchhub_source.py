"""torch.hub entrypoints and --factory callables, built on meta from a hubconf written by the test.

The hubconf mirrors the signatures of DINOv3's (facebookresearch/dinov3, hubconf.py and
dinov3/hub/*.py): backbones take `pretrained=True, weights=...`, heads add `backbone_weights`, the
depther takes `device`, dino.txt returns (model, tokenizer). Every entrypoint raises if it is asked
for weights, so a passing build proves vramplan turned them off.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
from itertools import chain
from pathlib import Path

import pytest
import torch
from accelerate.utils import calculate_maximum_sizes

from vramplan.errors import BuildError, ModelNotFoundError, UsageError
from vramplan.sources.torchhub import (
    build_factory,
    build_torch_hub,
    factory_spec,
    hub_entrypoint_spec,
    parse_kwarg,
)

# A package inside the repository, imported by hubconf.py as dinov3/ is by DINOv3's.
MODELS_PY = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim, ffn_ratio):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, int(dim * ffn_ratio))
        self.fc2 = nn.Linear(int(dim * ffn_ratio), dim)
        self.ls = nn.Parameter(torch.full((dim,), 1e-5))


class TinyViT(nn.Module):
    def __init__(self, embed_dim=32, depth=2, ffn_ratio=4.0, patch_size=4, n_storage_tokens=2):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, n_storage_tokens, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, ffn_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        periods = 100.0 ** (2 * torch.arange(embed_dim // 4) / (embed_dim // 2))
        self.register_buffer("periods", periods, persistent=False)  # like DINOv3's RoPE
        # Made on an explicit device, which the default-device context does not reach.
        self.register_buffer("mask_token_count", torch.zeros(1, device="cpu"))

    def init_weights(self):
        for block in self.blocks:
            nn.init.trunc_normal_(block.qkv.weight, std=0.02)
"""

HUBCONF_PY = '''
dependencies = ["torch"]

import torch
from torch import nn

from vramplan_test_hubrepo.models import TinyViT


def _refuse(what):
    raise RuntimeError(f"the test hubconf was asked to load {what}")


def tiny_vit(*, pretrained=True, weights="LVD1689M", check_hash=False, **kwargs):
    """Backbone, shaped like dinov3_vits16."""
    model = TinyViT(**kwargs)
    if pretrained:
        _refuse(f"backbone weights {weights}")
    model.init_weights()
    return model


class _LinearClassifierWrapper(nn.Module):
    def __init__(self, *, backbone, linear_head):
        super().__init__()
        self.backbone = backbone
        self.linear_head = linear_head


def tiny_vit_lc(*, pretrained=True, weights="IMAGENET1K", backbone_weights="LVD1689M", check_hash=False, **kwargs):
    """Linear classifier on the backbone, shaped like dinov3_vit7b16_lc."""
    backbone = tiny_vit(pretrained=pretrained, weights=backbone_weights, check_hash=check_hash)
    linear_head = nn.Linear(2 * backbone.embed_dim, 1000)
    if pretrained:
        _refuse(f"classifier weights {weights}")
    return _LinearClassifierWrapper(backbone=backbone, linear_head=linear_head)


class _Depther(nn.Module):
    def __init__(self, encoder, decoder, device=None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.encoder.to(device)  # as dinov3's Depther does; meta tensors cannot move to cpu
        self.decoder.to(device)


def tiny_vit_dd(*, pretrained=True, weights="SYNTHMIX", backbone_weights="LVD1689M", check_hash=False,
                autocast_dtype=torch.float32, device=None, **kwargs):
    """Depther, shaped like dinov3_vit7b16_dd: takes a device and moves its parts there."""
    backbone = tiny_vit(pretrained=pretrained, weights=backbone_weights)
    decoder = nn.Sequential(nn.Conv2d(backbone.embed_dim, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 256, 1))
    if pretrained:
        _refuse(f"depther weights {weights}")
    return _Depther(backbone, decoder, device=device)


def tiny_vit_dinotxt(*, pretrained=True, weights="LVTD2300M", backbone_weights="LVD1689M", check_hash=False):
    """Returns (model, tokenizer), as dinov3_vitl16_dinotxt_tet1280d20h24l does."""
    vision = tiny_vit(pretrained=pretrained, weights=backbone_weights)
    text = nn.Sequential(nn.Embedding(100, 32), nn.Linear(32, 32))
    if pretrained:
        _refuse(f"dino.txt weights {weights}")
    return nn.ModuleDict({"visual": vision, "text": text}), str.split


def big_vit(*, pretrained=True, weights="LVD1689M", **kwargs):
    """ViT-7B sized backbone (embed 4096, depth 40, ffn 3): about 6.7 billion parameters."""
    return tiny_vit(pretrained=pretrained, weights=weights, embed_dim=4096, depth=40, ffn_ratio=3.0, patch_size=16)


def torchvision_style(*, weights=None, progress=True):
    """No `pretrained`: weights named by `weights` are downloaded, as torchvision's hubconf does."""
    model = TinyViT()
    if weights is not None:
        model.load_state_dict(torch.hub.load_state_dict_from_url(weights, progress=progress))
    return model


def not_a_model():
    return {"weights": 1}


def broken(*, pretrained=True):
    raise ValueError("unsupported backbone: vit_huge")
'''

FACTORY_PY = """
from torch import nn


def build_mlp(hidden=64, layers=2, pretrained=True):
    if pretrained:
        raise RuntimeError("the test factory was asked for weights")
    return nn.Sequential(*[nn.Linear(hidden, hidden) for _ in range(layers)], nn.BatchNorm1d(hidden))
"""


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory) -> Path:
    """A local torch.hub repository: hubconf.py plus the package it imports."""
    repo = tmp_path_factory.mktemp("tinyrepo")
    package = repo / "vramplan_test_hubrepo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent(MODELS_PY))
    (repo / "hubconf.py").write_text(HUBCONF_PY)
    return repo


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("factories")
    path = folder / "vramplan_test_factories.py"
    path.write_text(textwrap.dedent(FACTORY_PY))
    return path


def _all_on_meta(model: torch.nn.Module) -> bool:
    return all(t.is_meta for t in chain(model.parameters(), model.buffers()))


def _built_on_cpu(repo: Path, entrypoint: str, **kwargs) -> torch.nn.Module:
    """Build the entrypoint for real, through torch.hub's own local loader."""
    return torch.hub.load(str(repo), entrypoint, source="local", trust_repo=True, pretrained=False, **kwargs)


# --kwarg parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("img_size=518", ("img_size", 518)),
        ("drop_path_rate=0.1", ("drop_path_rate", 0.1)),
        ("pretrained=false", ("pretrained", False)),
        ("hash=null", ("hash", None)),
        ("out_layers=[4, 11, 17, 23]", ("out_layers", [4, 11, 17, 23])),
        ("weights=SAT493M", ("weights", "SAT493M")),
        ("weights=/ckpt/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth", ("weights", "/ckpt/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth")),
        ('name="007"', ("name", "007")),
        ("url=https://x/y?a=b", ("url", "https://x/y?a=b")),
        ("empty=", ("empty", "")),
    ],
)
def test_parse_kwarg(text, expected):
    assert parse_kwarg(text) == expected


@pytest.mark.parametrize("text", ["img_size", "=3", "img-size=3", "1x=2"])
def test_parse_kwarg_rejects(text):
    with pytest.raises(UsageError):
        parse_kwarg(text)


# torch.hub entrypoints


@pytest.mark.parametrize(
    ("entrypoint", "kwargs"),
    [
        ("tiny_vit", {}),
        ("tiny_vit", {"embed_dim": 48, "depth": 3}),
        ("tiny_vit_lc", {}),
        ("tiny_vit_dd", {}),
        ("tiny_vit_dinotxt", {}),
    ],
)
def test_entrypoint_sizes_match_a_real_build(hub_repo, entrypoint, kwargs):
    spec = hub_entrypoint_spec(str(hub_repo), entrypoint, kwargs)
    model = build_torch_hub(spec)

    assert _all_on_meta(model)
    real = _built_on_cpu(hub_repo, entrypoint, **kwargs)
    if isinstance(real, tuple):  # dino.txt: (model, tokenizer)
        real = real[0]
    assert calculate_maximum_sizes(model) == calculate_maximum_sizes(real)
    assert [n for n, _ in model.named_buffers()] == [n for n, _ in real.named_buffers()]


def test_head_adds_to_its_backbone(hub_repo):
    backbone = build_torch_hub(hub_entrypoint_spec(str(hub_repo), "tiny_vit", {}))
    classifier = build_torch_hub(hub_entrypoint_spec(str(hub_repo), "tiny_vit_lc", {}))

    head_bytes = (2 * 32 * 1000 + 1000) * 4
    assert calculate_maximum_sizes(classifier)[0] == calculate_maximum_sizes(backbone)[0] + head_bytes


def test_seven_billion_parameters_cost_no_memory(hub_repo):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    model = build_torch_hub(hub_entrypoint_spec(str(hub_repo), "big_vit", {}))
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    params = sum(p.numel() for p in model.parameters())
    assert 6.5e9 < params < 7e9
    assert calculate_maximum_sizes(model)[0] >= 4 * params
    assert _all_on_meta(model)
    assert grown_kib < 512 * 1024  # float32 weights would be 27 GB


def test_spec_names_the_entrypoint_and_keys_its_build(hub_repo):
    spec = hub_entrypoint_spec(str(hub_repo), "tiny_vit", {"depth": 3})

    assert spec.model_id == f"hub:{hub_repo.name}:tiny_vit"
    assert spec.library == "torch.hub"
    assert spec.config["repo_dir"] == str(hub_repo.resolve())
    assert json.loads(spec.build_key())[1] == {"repo_dir": str(hub_repo.resolve()), "entrypoint": "tiny_vit", "kwargs": {"depth": 3}}
    same = hub_entrypoint_spec(str(hub_repo / "." / ".." / hub_repo.name), "tiny_vit", {"depth": 3})
    assert same.build_key() == spec.build_key()
    assert hub_entrypoint_spec(str(hub_repo), "tiny_vit", {"depth": 4}).build_key() != spec.build_key()


def test_missing_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        hub_entrypoint_spec(str(tmp_path / "dinov3"), "dinov3_vits16", {})


def test_folder_without_hubconf(tmp_path):
    with pytest.raises(ModelNotFoundError, match="has no hubconf.py"):
        hub_entrypoint_spec(str(tmp_path), "dinov3_vits16", {})


def test_unknown_entrypoint_lists_the_available_ones(hub_repo):
    spec = hub_entrypoint_spec(str(hub_repo), "dinov3_vits16", {})
    with pytest.raises(ModelNotFoundError) as caught:
        build_torch_hub(spec)
    assert "dinov3_vits16" in str(caught.value)
    assert "tiny_vit, tiny_vit_dd, tiny_vit_dinotxt, tiny_vit_lc" in str(caught.value)
    assert "_refuse" not in str(caught.value)


def test_missing_dependency(tmp_path):
    (tmp_path / "hubconf.py").write_text(
        'dependencies = ["torch", "vramplan_no_such_package"]\n\ndef model(pretrained=True):\n    raise AssertionError\n'
    )
    with pytest.raises(BuildError, match="not installed: vramplan_no_such_package"):
        build_torch_hub(hub_entrypoint_spec(str(tmp_path), "model", {}))


def test_hubconf_that_fails_to_import(tmp_path):
    (tmp_path / "hubconf.py").write_text("import vramplan_no_such_package\n")
    with pytest.raises(BuildError, match="importing .*hubconf.py needs the module `vramplan_no_such_package`"):
        build_torch_hub(hub_entrypoint_spec(str(tmp_path), "model", {}))


def test_entrypoint_that_raises(hub_repo):
    with pytest.raises(BuildError, match=r"broken\(\) raised ValueError: unsupported backbone: vit_huge"):
        build_torch_hub(hub_entrypoint_spec(str(hub_repo), "broken", {}))


def test_entrypoint_that_returns_no_module(hub_repo):
    with pytest.raises(BuildError, match=r"not_a_model\(\) returned dict, not one torch.nn.Module"):
        build_torch_hub(hub_entrypoint_spec(str(hub_repo), "not_a_model", {}))


def test_weight_downloads_are_refused(hub_repo):
    assert calculate_maximum_sizes(build_torch_hub(hub_entrypoint_spec(str(hub_repo), "torchvision_style", {})))
    spec = hub_entrypoint_spec(str(hub_repo), "torchvision_style", {"weights": "https://example.invalid/w.pth"})
    with pytest.raises(BuildError, match="asked for weights from https://example.invalid/w.pth"):
        build_torch_hub(spec)
    assert torch.hub.load_state_dict_from_url.__name__ == "load_state_dict_from_url"


def test_pretrained_true_is_refused(hub_repo):
    with pytest.raises(UsageError, match="never loads weights"):
        build_torch_hub(hub_entrypoint_spec(str(hub_repo), "tiny_vit", {"pretrained": True}))


# --factory


def test_factory_from_a_file(factory_file):
    spec = factory_spec(f"{factory_file}:build_mlp", {"hidden": 16, "layers": 3})
    model = build_factory(spec)

    assert spec.model_id == f"factory:{factory_file}:build_mlp"
    assert spec.library == "factory"
    assert _all_on_meta(model)
    real = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(3)], torch.nn.BatchNorm1d(16))
    assert calculate_maximum_sizes(model) == calculate_maximum_sizes(real)
    json.loads(spec.build_key())


def test_factory_from_a_module_in_the_working_folder(factory_file, monkeypatch):
    monkeypatch.chdir(factory_file.parent)
    model = build_factory(factory_spec("vramplan_test_factories:build_mlp", {}))
    assert sum(p.numel() for p in model.parameters()) == 2 * (64 * 64 + 64) + 2 * 64


def test_factory_from_an_installed_module():
    model = build_factory(factory_spec("torch.nn:Linear", {"in_features": 1024, "out_features": 1024}))
    assert model.weight.is_meta
    assert calculate_maximum_sizes(model)[0] == (1024 * 1024 + 1024) * 4


@pytest.mark.parametrize("target", ["build_mlp", "factories.py:", "my-models:build", ":build"])
def test_factory_target_must_have_two_parts(target):
    with pytest.raises(UsageError):
        factory_spec(target, {})


def test_factory_file_missing(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no file"):
        factory_spec(f"{tmp_path}/models.py:build", {})


def test_factory_module_missing():
    with pytest.raises(ModelNotFoundError, match="no module `vramplan_no_such_package.models`"):
        build_factory(factory_spec("vramplan_no_such_package.models:build", {}))


def test_factory_callable_missing(factory_file):
    with pytest.raises(ModelNotFoundError, match="no callable `build_cnn`; it has: build_mlp"):
        build_factory(factory_spec(f"{factory_file}:build_cnn", {}))


def test_sources_import_without_torch():
    """vramplan's start-up time is benchmarked: naming these modules must not import torch."""
    code = "import sys, vramplan.sources.torchhub; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
