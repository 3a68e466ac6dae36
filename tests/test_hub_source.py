"""Hub ids, end to end through the real huggingface_hub client, against a loopback Hub the test starts."""

from __future__ import annotations

import json
import time

import pytest
import torch
from accelerate import init_empty_weights
from accelerate.utils import calculate_maximum_sizes
from transformers import AutoConfig, AutoModel

from vramplan.testing import LoopbackHub, safetensors_bytes, sparse_safetensors, use_loopback_hub

BERT = {
    "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 500, "max_position_embeddings": 32,
}
TOKEN = "hf_vramplan_test_secret_0123456789"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
        yield hub


def real_checkpoint(dtype: torch.dtype = torch.float32) -> tuple[bytes, int]:
    """A real safetensors file of the tiny BERT's state dict (what save_pretrained writes), and its values."""
    from safetensors.torch import save

    model = AutoModel.from_config(AutoConfig.for_model(**BERT)).to(dtype)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save(state), sum(v.numel() for v in state.values())


def accelerate_total(config: dict) -> int:
    with init_empty_weights():
        model = AutoModel.from_config(AutoConfig.for_model(**config), torch_dtype=torch.float32)
    return int(calculate_maximum_sizes(model)[0])


def add_bert(hub: LoopbackHub, repo_id: str = "acme/bert-tiny", *, config: dict = BERT, extra: dict | None = None,
             **options) -> bytes:
    weights, _ = real_checkpoint(torch.bfloat16)
    files = {"config.json": json.dumps(config).encode(), "model.safetensors": weights, **(extra or {})}
    hub.add_repo(repo_id, files, **{"library_name": "transformers", **options})
    return weights


def test_hub_model_is_estimated_with_its_checkpoint(hub, run_cli):
    weights = add_bert(hub, extra={"pytorch_model.bin": b"\x80\x04 not for unpickling"})
    result = run_cli("estimate", "acme/bert-tiny", "--format", "json")
    assert result.code == 0, result.err
    entry = result.json()["models"][0]
    assert entry["status"] == "ok" and entry["source"] == "hub"
    assert entry["weights"]["float32"]["total_bytes"] == accelerate_total(BERT)
    ckpt = entry["checkpoint"]
    assert ckpt["files"] == ["model.safetensors"]
    assert ckpt["download_bytes"] == len(weights)
    assert list(ckpt["dtypes"]) == ["BF16"]
    assert ckpt["unread_files"] == ["pytorch_model.bin"]
    # The tiny BERT's persistent buffers (position_ids) are saved as its state dict: exact match.
    assert ckpt["parameters"] == real_checkpoint()[1]
    assert ckpt["stored_bytes"] == 2 * ckpt["parameters"]
    # Headers only: Range requests for model.safetensors, nothing at all for the pickle.
    assert "pytorch_model.bin" not in hub.requested_files()
    assert all(r.range for r in hub.requests if r.filename == "model.safetensors" and r.method == "GET")


def test_table_output_names_stored_dtype_and_download(hub, run_cli):
    add_bert(hub)
    out = run_cli("estimate", "acme/bert-tiny").out
    assert "Memory Usage for loading `acme/bert-tiny`" in out
    assert "Checkpoint (hub): 1 safetensors file" in out and "to download" in out and "BF16" in out


def test_sharded_checkpoint_with_extra_head_is_explained(hub, run_cli):
    _, values = real_checkpoint()
    shard1 = sparse_safetensors({"embeddings.word_embeddings.weight": ("BF16", (500, 64))})
    rest = values - 500 * 64
    shard2 = sparse_safetensors({"encoder.blob": ("BF16", (rest,)), "cls.head.weight": ("BF16", (10, 64))})
    index = {"metadata": {}, "weight_map": {
        "embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors",
        "encoder.blob": "model-00002-of-00002.safetensors",
        "cls.head.weight": "model-00002-of-00002.safetensors",
    }}
    hub.add_repo("acme/bert-sharded", {
        "config.json": json.dumps(BERT).encode(),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-00001-of-00002.safetensors": shard1,
        "model-00002-of-00002.safetensors": shard2,
    }, library_name="transformers")
    entry = run_cli("estimate", "acme/bert-sharded", "--format", "json").json()["models"][0]
    ckpt = entry["checkpoint"]
    assert len(ckpt["files"]) == 2 and ckpt["parameters"] == values + 640
    assert ckpt["download_bytes"] == shard1.size + shard2.size
    assert any("640 more values" in note and "heads" in note for note in ckpt["notes"])


def test_quantized_checkpoint_is_explained(hub, run_cli):
    config = {**BERT, "quantization_config": {"quant_method": "bitsandbytes", "load_in_8bit": True}}
    hub.add_repo("acme/bert-int8", {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": safetensors_bytes({"w": ("I8", (64, 64)), "scale": ("F32", (64,))}),
    }, library_name="transformers")
    entry = run_cli("estimate", "acme/bert-int8", "--format", "json").json()["models"][0]
    assert entry["status"] == "ok"
    assert entry["checkpoint"]["dtypes"] == {"I8": 4096, "F32": 64}
    assert any("quantized checkpoint (bitsandbytes" in note for note in entry["checkpoint"]["notes"])


def test_pickle_only_repo_is_never_opened(hub, run_cli):
    hub.add_repo("acme/old", {"config.json": json.dumps(BERT).encode(), "pytorch_model.bin": b"\x80\x04pickle"},
                 library_name="transformers")
    entry = run_cli("estimate", "acme/old", "--format", "json").json()["models"][0]
    assert entry["status"] == "ok"
    assert entry["checkpoint"]["unread_files"] == ["pytorch_model.bin"] and entry["checkpoint"]["where"] == "hub"
    assert "pytorch_model.bin" not in hub.requested_files()


@pytest.mark.parametrize("with_token", [False, True])
def test_gated_repo(hub, run_cli, monkeypatch, with_token):
    add_bert(hub, "meta/gated", gated=True)
    if with_token:
        monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = run_cli("estimate", "meta/gated")
    assert result.code == 1
    assert "gated" in result.err and "HF_TOKEN" in result.err and "vramplan list" in result.err
    assert ("no access" in result.err) == with_token
    assert TOKEN not in result.out + result.err
    assert hub.saw_token(TOKEN) == with_token


def test_gated_repo_with_access_works_and_token_stays_secret(hub, run_cli, monkeypatch):
    add_bert(hub, "meta/gated", gated=True, authorized_tokens=[TOKEN])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = run_cli("estimate", "meta/gated", "--format", "json", "--debug")
    assert result.code == 0 and result.json()["models"][0]["status"] == "ok"
    assert hub.saw_token(TOKEN)
    assert TOKEN not in result.out + result.err


@pytest.mark.parametrize("private", [False, True])
def test_missing_or_private_repo(hub, run_cli, private):
    if private:
        add_bert(hub, "acme/secret", private=True)
    result = run_cli("estimate", "acme/secret")
    assert result.code == 1
    assert "was not found on the Hub" in result.err and "HF_TOKEN" in result.err


def test_server_error(hub, run_cli):
    add_bert(hub)
    hub.add_fault(status=500, kind="model_info")
    result = run_cli("estimate", "acme/bert-tiny")
    assert result.code == 1 and "answered HTTP 500" in result.err and "Traceback" not in result.err


def test_slow_hub_fails_within_the_timeout(hub, run_cli):
    add_bert(hub)
    hub.add_fault(delay_seconds=30, kind="model_info")
    start = time.monotonic()
    result = run_cli("estimate", "acme/bert-tiny", "--timeout", "1")
    elapsed = time.monotonic() - start
    assert result.code == 1 and "within 1 s" in result.err
    assert elapsed < 5


def test_network_down(monkeypatch, tmp_path, run_cli):
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
    # the hub has stopped: nothing listens on its port any more
    result = run_cli("estimate", "acme/bert-tiny", "--timeout", "2")
    assert result.code == 1 and "Could not reach the Hub" in result.err


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (json.dumps({"model_type": "acme_net", "auto_map": {"AutoModel": "modeling.AcmeNet"}}).encode(),
         "--trust-remote-code"),
        (json.dumps({"model_type": "acme_net"}).encode(), "upgrade transformers"),
    ],
    ids=["malformed", "remote-code", "unknown-type"],
)
def test_bad_configs_on_the_hub(hub, run_cli, config, needle):
    hub.add_repo("acme/bad", {"config.json": config}, library_name="transformers")
    result = run_cli("estimate", "acme/bad", "dinov3-vits16")
    assert result.code == 1
    assert needle in result.err
    assert "modeling" not in {f.split(".")[0] for f in hub.requested_files()}  # remote code never fetched


def test_no_library_metadata_asks_for_library(hub, run_cli):
    add_bert(hub, library_name=None)
    result = run_cli("estimate", "acme/bert-tiny")
    assert result.code == 1 and "--library" in result.err
    assert run_cli("estimate", "acme/bert-tiny", "--library", "transformers").code == 0


def test_revision(hub, run_cli):
    add_bert(hub, sha="a" * 40)
    assert run_cli("estimate", "acme/bert-tiny", "--revision", "a" * 40).code == 0
    result = run_cli("estimate", "acme/bert-tiny", "--revision", "v9-nope")
    assert result.code == 1 and "Revision `v9-nope`" in result.err


def test_cache_first_then_offline(hub, run_cli, monkeypatch):
    add_bert(hub)
    assert run_cli("estimate", "acme/bert-tiny").code == 0
    hub.remove_repo("acme/bert-tiny")
    hub.reset_requests()
    cached = run_cli("estimate", "acme/bert-tiny", "--format", "json", "--no-checkpoint").json()["models"][0]
    assert cached["status"] == "ok" and cached["source"] == "cache"
    assert hub.requests == []  # resolved from the cache without asking the Hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_cli("estimate", "acme/bert-tiny", "dinov3-vitb16").code == 0
    result = run_cli("estimate", "acme/never-fetched", "dinov3-vitb16", "--format", "json")
    assert result.code == 1
    first, second = result.json()["models"]
    assert "HF_HUB_OFFLINE=1" in first["error"] and second["status"] == "ok"
    assert hub.requests == []


REMOTE_CONFIG = '''
from transformers import PretrainedConfig


class AcmeConfig(PretrainedConfig):
    model_type = "acme_net"

    def __init__(self, width=32, depth=3, **kwargs):
        self.width = width
        self.depth = depth
        super().__init__(**kwargs)
'''
REMOTE_MODEL = '''
import torch.nn as nn
from transformers import PreTrainedModel

from .configuration_acme import AcmeConfig


class AcmeModel(PreTrainedModel):
    config_class = AcmeConfig

    def __init__(self, config):
        super().__init__(config)
        self.layers = nn.ModuleList(nn.Linear(config.width, config.width) for _ in range(config.depth))
        self.post_init()

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
'''


def test_remote_code_runs_only_when_trusted(hub, run_cli):
    config = {"model_type": "acme_net", "width": 64, "depth": 3,
              "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig", "AutoModel": "modeling_acme.AcmeModel"}}
    hub.add_repo("acme/remote", {
        "config.json": json.dumps(config).encode(),
        "configuration_acme.py": REMOTE_CONFIG.encode(),
        "modeling_acme.py": REMOTE_MODEL.encode(),
    }, library_name="transformers")
    refused = run_cli("estimate", "acme/remote")
    assert refused.code == 1 and "--trust-remote-code" in refused.err
    assert not any(f.endswith(".py") for f in hub.requested_files())

    trusted = run_cli("estimate", "acme/remote", "--trust-remote-code", "--format", "json")
    assert trusted.code == 0, trusted.err
    assert trusted.json()["models"][0]["weights"]["float32"]["total_bytes"] == 3 * (64 * 64 + 64) * 4


def test_console_script_offline_in_a_fresh_process(tmp_path):
    """The installed `vramplan` command, HF_HUB_OFFLINE=1 from the start, an empty cache: catalogue only."""
    import os
    import shutil
    import subprocess

    exe = shutil.which("vramplan")
    assert exe, "the vramplan console script is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    done = subprocess.run([exe, "estimate", "dinov3-vits16", "acme/not-cached", "--format", "json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    ok, missing = json.loads(done.stdout)["models"]
    assert ok["status"] == "ok" and ok["weights"]["float32"]["total_bytes"] == 86_386_240
    assert missing["status"] == "error" and "HF_HUB_OFFLINE=1" in missing["error"]


# --- the checkpoint's headers: what reaching them costs and what their failure leaves --------------------------


def test_checkpoint_headers_are_read_at_the_revision_asked_for(hub, run_cli):
    add_bert(hub, sha="a" * 40)
    assert run_cli("estimate", "acme/bert-tiny", "--revision", "a" * 40, "--format", "json").code == 0
    headers = [r for r in hub.requests if r.kind == "resolve" and r.filename == "model.safetensors"]
    assert headers and {r.revision for r in headers} == {"a" * 40}


@pytest.mark.parametrize("fault, reason", [
    ({"status": 500}, "answered HTTP 500 for `acme/bert-tiny`: try again later"),
    ({"delay_seconds": 30}, "within 1 s for `acme/bert-tiny` (no answer)"),
])
def test_unreadable_headers_leave_the_estimate_and_say_why(hub, run_cli, fault, reason):
    add_bert(hub)
    hub.add_fault(kind="resolve", path="model.safetensors", **fault)
    start = time.monotonic()
    result = run_cli("estimate", "acme/bert-tiny", "--format", "json", "--timeout", "1")
    assert time.monotonic() - start < 10  # the headers' request waits no longer than --timeout
    entry = result.json()["models"][0]
    assert result.code == 0 and entry["status"] == "ok" and entry["weights"]
    checkpoint = entry["checkpoint"]
    assert {k: v for k, v in checkpoint.items() if k != "notes"} == {
        "where": "hub", "files": [], "parameters": 0, "dtypes": {}, "stored_bytes": 0, "download_bytes": None,
        "unread_files": []}
    (note,) = checkpoint["notes"]
    assert note.startswith("checkpoint headers not read: ") and reason in note
