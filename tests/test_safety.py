"""Safety: tokens never printed, pickles never opened, remote code never run unasked, no half-written -o files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from vramplan.testing import LoopbackHub, safetensors_bytes, use_loopback_hub

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_vramplan_SAFETY_secret_9f8e7d6c5b4a"
BERT = {
    "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 500, "max_position_embeddings": 32,
}
PICKLE = b"\x80\x04\x95 never unpickle this"

# What the process opens and unpickles, seen by an audit hook (PEP 578): real events, no patching.
_EVENTS: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _EVENTS is not None and event in ("open", "pickle.find_class"):
        _EVENTS.append((event, str(args[0]) if args else ""))


sys.addaudithook(_audit)


@contextmanager
def audited():
    """Record what the block opens and unpickles."""
    global _EVENTS
    _EVENTS = []
    try:
        yield _EVENTS
    finally:
        _EVENTS = None


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
        yield hub


def _bert_files() -> dict[str, bytes]:
    weights = safetensors_bytes({"embeddings.word_embeddings.weight": ("BF16", (500, 64))})
    return {"config.json": json.dumps(BERT).encode(), "model.safetensors": weights,
            "pytorch_model.bin": PICKLE, "training_args.pt": PICKLE}


def test_a_token_in_the_environment_never_appears_in_any_output(hub, run_cli, monkeypatch):
    hub.add_repo("acme/bert-tiny", _bert_files(), library_name="transformers", authorized_tokens=[TOKEN])
    hub.add_repo("acme/gated", _bert_files(), library_name="transformers", gated=True)
    hub.add_repo("acme/private", _bert_files(), library_name="transformers", private=True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    runs = [
        run_cli("estimate", "acme/bert-tiny", "--format", fmt) for fmt in ("table", "json", "markdown", "csv")
    ] + [
        run_cli("estimate", "acme/gated", "acme/private", "acme/missing", "--debug"),
        run_cli("report", "acme/bert-tiny", "acme/gated", "--debug", "--format", "json"),
    ]
    hub.add_fault(status=500, kind="model_info")
    runs.append(run_cli("estimate", "acme/bert-tiny", "--debug"))
    assert hub.saw_token(TOKEN)  # it was really in use
    assert runs[0].code == 0 and runs[4].code == 1 and "gated" in runs[4].err
    for result in runs:
        assert TOKEN not in result.out and TOKEN not in result.err
        assert TOKEN[8:24] not in result.out + result.err  # nor a recognisable part of it


def test_no_pickle_file_is_opened_local_or_hub(hub, run_cli, tmp_path):
    local = tmp_path / "local-bert"
    local.mkdir()
    for name, content in _bert_files().items():
        (local / name).write_bytes(content)
    hub.add_repo("acme/bert-tiny", _bert_files(), library_name="transformers")
    with audited() as events:
        local_run = run_cli("estimate", str(local), "--format", "json")
        hub_run = run_cli("estimate", "acme/bert-tiny", "--format", "json")
    for result in (local_run, hub_run):
        assert result.code == 0, result.err
        assert result.json()["models"][0]["checkpoint"]["unread_files"] == ["pytorch_model.bin", "training_args.pt"]
    opened = [path for event, path in events if event == "open"]
    assert any(path.endswith("model.safetensors") for path in opened)  # the hook sees what is read
    assert not [path for path in opened if path.endswith((".bin", ".pt", ".pth"))]
    assert not [name for event, name in events if event == "pickle.find_class"]
    assert not hub.requested_files() & {"pytorch_model.bin", "training_args.pt"}


REMOTE_CONFIG = '''
from pathlib import Path
Path({marker!r}).write_text("remote code ran")
from transformers import PretrainedConfig


class AcmeConfig(PretrainedConfig):
    model_type = "acme_net"
'''


def test_remote_code_never_runs_without_trust_remote_code(run_cli, tmp_path):
    marker = tmp_path / "remote-code-ran"
    model = tmp_path / "acme"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "acme_net", "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig"}}))
    (model / "configuration_acme.py").write_text(REMOTE_CONFIG.format(marker=str(marker)))
    refused = run_cli("estimate", str(model))
    assert refused.code == 1 and "--trust-remote-code" in refused.err
    assert not marker.exists()
    run_cli("estimate", str(model), "--trust-remote-code")  # whatever it builds, the code is what ran
    assert marker.exists()  # the marker does show when the code runs: the check above can fail


def test_a_failing_run_leaves_no_output_file(run_cli, tmp_path):
    out = tmp_path / "report.txt"
    assert run_cli("estimate", "dinov3-vits16", "--mode", "inference", "--batch-size", "0", "-o", str(out)).code == 2
    assert not out.exists()
    out.write_text("yesterday's report\n")
    assert run_cli("estimate", "dinov3-vits16", "--attn", "flash", "--device", "cpu", "--mode", "inference",
                   "-o", str(out)).code == 2
    assert out.read_text() == "yesterday's report\n"  # untouched
    (tmp_path / "a-folder").mkdir()  # the final rename fails: the temporary written beside it must go too
    assert run_cli("estimate", "dinov3-vits16", "-o", str(tmp_path / "a-folder")).code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "report.txt"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see the run start")
def test_ctrl_c_prints_one_line_no_traceback_and_leaves_no_file(tmp_path):
    out = tmp_path / "report.md"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vramplan.cli", "report", "--mode", "inference", "--image-size", "224,2048",
         "--format", "markdown", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True,
        # A test run started in the background by a non-interactive shell ignores SIGINT, and the child would
        # inherit that (a process that starts with Ctrl-C ignored keeps it ignored, as it should): as from a
        # terminal, the child starts with the default action.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # inside main(): torch is being loaded
        if "libtorch" in maps.read_text(errors="replace"):
            break
        time.sleep(0.1)
    time.sleep(1)  # torch's imports or the first models: either way mid-run
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stderr == "vramplan: interrupted\n" and stdout == ""
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary beside it
