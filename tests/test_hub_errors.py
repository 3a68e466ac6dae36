"""Each Hub answer maps to its own one-line error (issue 13): a removed mapping fails here."""

from __future__ import annotations

import json

import pytest

from vramplan.testing import LoopbackHub, use_loopback_hub

CONFIG = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 32}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
        hub.add_repo("acme/bert", {"config.json": json.dumps(CONFIG).encode()}, library_name="transformers")
        yield hub


def test_a_repo_without_config_json(hub, run_cli):
    hub.add_repo("acme/weights-only", {"README.md": b"# no config"}, library_name="transformers")
    result = run_cli("estimate", "acme/weights-only")
    assert result.code == 1
    assert "has no config.json" in result.err and "--library timm" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("status", [408, 429, 503])
def test_timeouts_and_rate_limits_say_try_again_later(hub, run_cli, status):
    hub.add_fault(status=status, kind="model_info")
    result = run_cli("estimate", "acme/bert")
    assert result.code == 1
    said = f"limiting requests (HTTP {status})" if status == 429 else f"answered HTTP {status}"
    assert said in result.err and "try again" in result.err
    assert "Could not reach" not in result.err


@pytest.mark.parametrize("status", [400, 403, 410])
def test_other_client_errors_are_not_network_errors(hub, run_cli, status):
    hub.add_fault(status=status, kind="model_info")
    result = run_cli("estimate", "acme/bert")
    assert result.code == 1
    # no X-Error-Code header: whatever answered is not speaking the Hub's protocol (a proxy, a portal)
    assert f"(HTTP {status} without the Hub's error code)" in result.err
    assert "Could not reach" not in result.err and "try again later" not in result.err
    assert len(result.err.strip().splitlines()) == 1
