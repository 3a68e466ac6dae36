"""timm models: resolved offline, built on meta, sized exactly as `accelerate estimate-memory` sizes them.

The tests that need timm skip only where timm is not installed. CI runs them a second time with
timm on the path and VRAMPLAN_REQUIRE_TIMM=1, which turns a missing timm into a failure (README, 'timm').
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from itertools import chain

import pytest
import torch
from accelerate import init_empty_weights
from accelerate.utils import calculate_maximum_sizes, convert_bytes

from vramplan.errors import ConfigError, ModelNotFoundError
from vramplan.measure.weights import measure_weights
from vramplan.sources.timm_models import build_timm, is_timm_reference, resolve_timm, timm_spec_from_config

SKIP_REASON = "timm is not installed: set it up as the README's 'timm' section shows"


@pytest.fixture(scope="module")
def timm():
    with warnings.catch_warnings():  # as vramplan imports it: torchvision's image codecs are not needed
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.io\.image")
        if os.environ.get("VRAMPLAN_REQUIRE_TIMM") == "1":
            return importlib.import_module("timm")
        return pytest.importorskip("timm", reason=SKIP_REASON)


def _all_on_meta(model: torch.nn.Module) -> bool:
    return all(t.is_meta for t in chain(model.parameters(), model.buffers()))


@pytest.mark.timm
@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50.a1_in1k", "timm/vit_tiny_patch16_224.augreg_in21k", "convnext_atto", "efficientnet_b0"]
)
def test_sizes_match_accelerate(timm, name):
    model = build_timm(resolve_timm(name))

    # What accelerate's create_empty_model does for a timm model, minus the Hub download.
    with init_empty_weights():
        theirs = timm.create_model(name.removeprefix("timm/"), pretrained=False)
    assert calculate_maximum_sizes(model) == calculate_maximum_sizes(theirs)
    assert _all_on_meta(model)


@pytest.mark.timm
def test_resnet50_matches_accelerates_guide(timm):
    """accelerate's guide: `accelerate estimate-memory timm/resnet50.a1_in1k --library_name timm`."""
    estimate = measure_weights(build_timm(resolve_timm("timm/resnet50.a1_in1k")))

    float32, float16 = estimate.row("float32"), estimate.row("float16")
    assert convert_bytes(float32.largest_layer_bytes) == "9.0 MB"
    assert convert_bytes(float32.total_bytes) == "97.7 MB"
    assert convert_bytes(float32.training_adam_bytes) == "390.78 MB"
    assert convert_bytes(float16.total_bytes) == "48.85 MB"
    assert estimate.parameter_count == 25_557_032


@pytest.mark.timm
def test_model_that_accelerate_cannot_build(timm):
    """SwinV2-CR computes on its buffers while built: it fails under init_empty_weights, not on meta."""
    model = build_timm(resolve_timm("swinv2_cr_tiny_ns_224"))
    real = timm.create_model("swinv2_cr_tiny_ns_224", pretrained=False)
    assert calculate_maximum_sizes(model) == calculate_maximum_sizes(real)
    assert _all_on_meta(model)


@pytest.mark.timm
def test_pretrained_tag_sets_the_head(timm):
    """The tag's config sizes the classifier as the Hub's config.json does: in21k has 21843 classes."""
    in21k = build_timm(resolve_timm("timm/vit_tiny_patch16_224.augreg_in21k"))
    in1k = build_timm(resolve_timm("vit_tiny_patch16_224.augreg_in21k_ft_in1k"))
    assert in21k.head.out_features == 21843
    assert in1k.head.out_features == 1000


@pytest.mark.timm
def test_spec(timm):
    spec = resolve_timm("timm/resnet50.a1_in1k", "timm")
    assert (spec.model_id, spec.library, spec.config) == ("timm/resnet50.a1_in1k", "timm", {"architecture": "resnet50.a1_in1k"})
    assert spec.build_key() == resolve_timm("hf-hub:timm/resnet50.a1_in1k").build_key()
    assert spec.build_key() != resolve_timm("resnet50").build_key()


@pytest.mark.timm
def test_unknown_architecture(timm):
    with pytest.raises(ModelNotFoundError, match=r"no architecture `resnet51`.*list_models"):
        resolve_timm("timm/resnet51.a1_in1k")


@pytest.mark.timm
def test_unknown_pretrained_tag(timm):
    with pytest.raises(ModelNotFoundError, match=r"no pretrained tag `b9_in1k` for `resnet50`.*list_pretrained"):
        resolve_timm("resnet50.b9_in1k")


@pytest.mark.timm
def test_other_hub_organisations_need_their_config(timm):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_timm("someone/my-resnet", "timm")


@pytest.mark.timm
def test_spec_from_a_timm_config_json(timm):
    """A timm config.json from a repo outside the `timm` organisation: its num_classes sizes the head."""
    config = {"architecture": "resnet18", "num_classes": 10, "pretrained_cfg": {"input_size": [3, 224, 224]}}
    model = build_timm(timm_spec_from_config("someone/resnet18-cifar10", config))
    assert model.fc.out_features == 10
    assert _all_on_meta(model)
    with pytest.raises(ConfigError, match="no `architecture`"):
        timm_spec_from_config("someone/bert", {"model_type": "bert"})


@pytest.mark.timm
@pytest.mark.parametrize(
    ("ref", "library", "expected"),
    [
        ("resnet50.a1_in1k", None, True),
        ("vit_base_patch16_224", None, True),
        ("gpt2", None, False),
        ("resnet50", "transformers", False),
    ],
)
def test_bare_names_are_timm_when_timm_knows_them(timm, ref, library, expected):
    assert is_timm_reference(ref, library) is expected


@pytest.mark.parametrize(
    ("ref", "library", "expected"),
    [
        ("timm/resnet50.a1_in1k", None, True),
        ("hf-hub:timm/resnet50.a1_in1k", None, True),
        ("someone/resnet", "timm", True),
        ("facebook/dinov3-vits16-pretrain-lvd1689m", None, False),
        ("./models/resnet50", None, False),
        ("bert-base-uncased", None, False),
        ("Qwen/Qwen3-8B", None, False),
    ],
)
def test_timm_references_known_without_timm(ref, library, expected):
    assert is_timm_reference(ref, library) is expected


def test_timm_is_imported_only_when_asked_for():
    """vramplan's start-up time is benchmarked: naming the timm source must not import timm or torch."""
    code = (
        "import sys, vramplan.sources.timm_models as t\n"
        "assert t.is_timm_reference('timm/resnet50.a1_in1k', None)\n"
        "assert not t.is_timm_reference('facebook/dinov3-vits16-pretrain-lvd1689m', None)\n"
        "assert 'timm' not in sys.modules and 'torch' not in sys.modules, 'imported too early'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.timm
def test_cli_accelerate_command_works_for_timm(timm, run_cli):
    """The guide's `accelerate estimate-memory timm/resnet50.a1_in1k --library_name timm`, as vramplan."""
    result = run_cli("estimate", "timm/resnet50.a1_in1k", "--library_name", "timm")
    assert result.code == 0, result.err
    rows = [line for line in result.out.splitlines() if line.startswith("│float32") or line.startswith("│float16")]
    assert "9.0 MB" in rows[0] and "97.7 MB" in rows[0] and "390.78 MB" in rows[0]
    assert "4.5 MB" in rows[1] and "48.85 MB" in rows[1] and "195.39 MB" in rows[1]


@pytest.mark.timm
def test_timm_repo_of_another_org_from_the_loopback_hub(timm, run_cli, monkeypatch, tmp_path):
    import json

    from vramplan.testing import LoopbackHub, use_loopback_hub

    config = {"architecture": "resnet18", "num_classes": 10, "pretrained_cfg": {"num_classes": 10}}
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
        hub.add_repo("acme/resnet18-ten", {"config.json": json.dumps(config).encode()}, library_name="timm")
        result = run_cli("estimate", "acme/resnet18-ten", "--format", "json")
    assert result.code == 0, result.err
    entry = result.json()["models"][0]
    assert entry["library"] == "timm" and entry["source"] == "hub"
    with init_empty_weights():
        expected = timm.create_model("resnet18", pretrained=False, num_classes=10)
    assert entry["weights"]["float32"]["total_bytes"] == calculate_maximum_sizes(expected)[0]


@pytest.mark.timm
def test_timm_inference_is_simulated(timm, run_cli):
    result = run_cli("estimate", "vit_tiny_patch16_224", "--mode", "inference", "--image-size", "224",
                     "--batch-size", "1,4", "--format", "json")
    assert result.code == 0, result.err
    small, large = result.json()["models"][0]["inference"]
    assert large["activation_bytes"] > small["activation_bytes"] > 0
