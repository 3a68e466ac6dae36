"""Hub faults a real network produces, each one correct line within --timeout (loopback Hub; nothing leaves the host)."""

from __future__ import annotations

import json
import time

import pytest

from vramplan.testing import LoopbackHub, use_loopback_hub

BERT = {
    "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 500, "max_position_embeddings": 32,
}
TIMEOUT = 3


@pytest.fixture
def hub(monkeypatch, tmp_path):
    from vramplan.cli import preload_libraries

    preload_libraries()  # the first run in a process imports torch and transformers: not part of the Hub's time
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
        hub.add_repo("acme/bert-tiny", {"config.json": json.dumps(BERT).encode()}, library_name="transformers")
        yield hub


FAULTS = [
    # (fault, what the one line must say, what it must not say)
    (dict(action="reset", kind="model_info"), "the connection was cut while the answer was coming in", "within"),
    (dict(action="reset", path="config.json"), "the connection was cut while the answer was coming in", "within"),
    (dict(action="truncate", kind="model_info"), "sent an incomplete or malformed answer", "JSONDecodeError"),
    (dict(action="html", kind="model_info"), "did not answer as a Hugging Face Hub for `acme/bert-tiny` (an HTML page", "JSONDecodeError"),
    (dict(action="html", path="config.json"), "did not answer as a Hugging Face Hub", "has no config.json"),
    (dict(status=429, retry_after=30, kind="model_info"), "limiting requests (HTTP 429)", "could not reach"),
    (dict(status=503, retry_after=7, kind="model_info"), "answered HTTP 503 for `acme/bert-tiny`: try again in 7 s", "reach"),
    (dict(action="redirect", kind="model_info"), "the connection was refused (redirected to http://localhost:", "within"),
    (dict(action="redirect", path="config.json"), "did not answer as a Hugging Face Hub", "has no config.json"),
    (dict(status=401), "HTTP 401 without the Hub's error code: a proxy asking for credentials?", "Could not reach"),
    (dict(status=404), "HTTP 404 without the Hub's error code", "Could not reach"),
]


@pytest.mark.parametrize(("fault", "says", "not_says"), FAULTS, ids=[json.dumps(f[0]) for f in FAULTS])
def test_each_fault_is_one_correct_line_within_the_timeout(hub, run_cli, fault, says, not_says):
    hub.add_fault(**fault)
    start = time.monotonic()
    result = run_cli("estimate", "acme/bert-tiny", "--timeout", str(TIMEOUT), "--no-checkpoint")
    elapsed = time.monotonic() - start
    assert result.code == 1
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err  # once, on stderr
    assert lines[0].startswith("vramplan: acme/bert-tiny: ")
    assert says in lines[0] and not_says not in lines[0]
    assert "Traceback" not in result.err and "Error: " not in result.err
    assert elapsed < TIMEOUT + 2


def test_truncated_config_is_named_as_invalid_json(hub, run_cli):
    hub.add_fault(action="truncate", path="config.json")
    result = run_cli("estimate", "acme/bert-tiny", "--timeout", str(TIMEOUT))
    assert result.code == 1 and "is not valid JSON" in result.err


def test_each_fault_once_then_the_hub_recovers(hub, run_cli):
    hub.add_fault(action="html", kind="model_info", times=1)
    assert run_cli("estimate", "acme/bert-tiny", "--no-checkpoint").code == 1
    assert run_cli("estimate", "acme/bert-tiny", "--no-checkpoint").code == 0


def test_unknown_host_is_a_dns_failure_not_a_timeout(monkeypatch, tmp_path, run_cli):
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
    monkeypatch.setenv("HF_ENDPOINT", "http://vramplan-no-such-host.invalid")  # .invalid never resolves (RFC 2606)
    result = run_cli("estimate", "acme/bert-tiny", "--timeout", "5")
    assert result.code == 1
    assert "could not be resolved (DNS)" in result.err and "within" not in result.err


def test_html_page_with_200_for_model_info_through_the_loopback_hub_alone():
    """The fault itself: a 200 with an HTML body, as a captive portal answers."""
    import urllib.request

    with LoopbackHub() as hub:
        hub.add_repo("acme/x", {"config.json": b"{}"})
        hub.add_fault(action="html")
        with urllib.request.urlopen(f"{hub.endpoint}/api/models/acme/x") as answer:
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/html")
            assert answer.read().startswith(b"<!DOCTYPE html>")
