"""The loopback Hub answers the real huggingface_hub client the way huggingface.co does."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import httpx2
import pytest
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub import model_info as hub_model_info
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import get_session

from vramplan.testing import LoopbackHub, SparseFile, safetensors_bytes, sparse_safetensors, use_loopback_hub

REPO = "acme/tiny-vit"
TOKEN = "hf_loopback_secret_token"
CONFIG = {
    "architectures": ["TinyVitModel"],
    "model_type": "tiny_vit",
    "auto_map": {"AutoModel": "modeling_tiny.TinyVitModel"},
    "hidden_size": 64,
}
TENSORS = {"embed.weight": ("F32", (16, 8)), "head.bias": ("BF16", (8,))}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with LoopbackHub() as hub:
        use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
        yield hub


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.endpoint)


def add_tiny_repo(hub: LoopbackHub, repo_id: str = REPO, **options) -> None:
    files = {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": safetensors_bytes(TENSORS)}
    hub.add_repo(repo_id, files, library_name="transformers", **options)


# --- model info ---------------------------------------------------------------------------------------------------


def test_model_info_has_what_the_hub_returns(hub, api):
    add_tiny_repo(hub, tags=["vision"], pipeline_tag="image-feature-extraction")
    info = api.model_info(REPO)
    assert info.id == REPO
    assert len(info.sha) == 40
    assert info.library_name == "transformers"
    assert info.pipeline_tag == "image-feature-extraction"
    assert info.gated is False and info.private is False
    # The Hub exposes a subset of config.json, not hidden sizes.
    assert info.config == {k: CONFIG[k] for k in ("architectures", "model_type", "auto_map")}
    assert [s.rfilename for s in info.siblings] == ["config.json", "model.safetensors"]
    assert info.siblings[0].size is None
    assert info.safetensors.parameters == {"F32": 128, "BF16": 8}
    assert info.safetensors.total == 136
    assert {"vision", "transformers", "tiny_vit", "safetensors"} <= set(info.tags)


def test_model_info_files_metadata_gives_sizes_and_lfs(hub, api):
    add_tiny_repo(hub)
    siblings = {s.rfilename: s for s in api.model_info(REPO, files_metadata=True).siblings}
    weights = safetensors_bytes(TENSORS)
    assert siblings["model.safetensors"].size == len(weights)
    assert siblings["model.safetensors"].lfs.size == len(weights)
    assert siblings["config.json"].lfs is None
    assert hub.requests[-1].query == {"blobs": ["true"]}


def test_model_info_at_a_revision(hub, api):
    add_tiny_repo(hub, sha="a" * 40)
    assert api.model_info(REPO, revision="a" * 40).sha == "a" * 40
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")


def test_module_level_model_info_is_patched(hub):
    """accelerate calls `huggingface_hub.model_info`, bound to an HfApi built at import."""
    add_tiny_repo(hub)
    assert hub_model_info(REPO).id == REPO
    assert hub.count(kind="model_info", repo_id=REPO) == 1


def test_expand_returns_only_the_asked_properties(hub, api):
    add_tiny_repo(hub)
    info = api.model_info(REPO, expand=["safetensors", "library_name"])
    assert info.library_name == "transformers"
    assert info.safetensors.total == 136
    assert info.siblings is None and info.config is None


def test_list_repo_files_walks_folders(hub, api):
    hub.add_repo(REPO, {"config.json": b"{}", "onnx/model.onnx": b"x", "onnx/extra/data.bin": b"y"})
    assert api.list_repo_files(REPO) == ["config.json", "onnx/extra/data.bin", "onnx/model.onnx"]


# --- files ----------------------------------------------------------------------------------------------------------


def test_hf_hub_download_fills_the_tmp_cache(hub, tmp_path):
    add_tiny_repo(hub)
    path = hf_hub_download(REPO, "config.json")
    assert path.startswith(str(tmp_path / "hf" / "hub"))
    assert json.loads(open(path).read()) == CONFIG
    sha = hub_model_info(REPO).sha
    refs = tmp_path / "hf" / "hub" / f"models--{REPO.replace('/', '--')}" / "refs" / "main"
    assert refs.read_text() == sha

    assert hf_hub_download(REPO, "config.json") == path  # cached: a HEAD, no second GET
    assert hub.count("config.json", method="GET") == 1
    assert hub.count("config.json", method="HEAD") == 2


def test_lfs_files_redirect_to_a_cdn_that_never_sees_the_token(hub, monkeypatch):
    add_tiny_repo(hub)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    path = hf_hub_download(REPO, "model.safetensors")
    assert open(path, "rb").read() == safetensors_bytes(TENSORS)

    resolve = [r for r in hub.requests if r.kind == "resolve"]
    cdn = [r for r in hub.requests if r.kind == "cdn"]
    assert [r.status for r in resolve] == [302]
    assert [(r.method, r.filename, r.status) for r in cdn] == [("GET", "model.safetensors", 200)]
    assert all(r.authenticated for r in resolve)
    assert not any(r.authenticated for r in cdn)
    assert hub.saw_token(TOKEN) and not hub.saw_token("hf_other")
    assert TOKEN not in repr(hub.requests)


def test_file_metadata_headers(hub):
    add_tiny_repo(hub)
    weights = safetensors_bytes(TENSORS)
    sha = hub_model_info(REPO).sha
    lfs = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors"))
    assert (lfs.commit_hash, lfs.size) == (sha, len(weights))
    assert lfs.etag == hashlib.sha256(weights).hexdigest()
    assert lfs.location.startswith(hub.cdn_endpoint)
    plain = get_hf_file_metadata(hf_hub_url(REPO, "config.json"))
    assert plain.size == len(json.dumps(CONFIG)) and len(plain.etag) == 40


@pytest.mark.parametrize(
    ("range_header", "status", "body", "content_range"),
    [
        ("bytes=0-3", 206, b"0123", "bytes 0-3/10"),
        ("bytes=6-", 206, b"6789", "bytes 6-9/10"),
        ("bytes=-2", 206, b"89", "bytes 8-9/10"),
        ("bytes=0-100000", 206, b"0123456789", "bytes 0-9/10"),
        ("bytes=10-20", 416, None, "bytes */10"),
        (None, 200, b"0123456789", None),
    ],
)
def test_range_requests(hub, range_header, status, body, content_range):
    hub.add_repo(REPO, {"digits.txt": b"0123456789"})
    headers = {"Range": range_header} if range_header else {}
    response = get_session().get(hf_hub_url(REPO, "digits.txt"), headers=headers)
    assert response.status_code == status
    assert response.headers.get("Content-Range") == content_range
    if body is not None:
        assert response.content == body


# --- safetensors ---------------------------------------------------------------------------------------------------


def test_safetensors_bytes_is_a_real_safetensors_file():
    from safetensors.torch import load

    tensors = load(safetensors_bytes(TENSORS, metadata={"format": "pt"}))
    assert {name: (str(t.dtype), tuple(t.shape)) for name, t in tensors.items()} == {
        "embed.weight": ("torch.float32", (16, 8)),
        "head.bias": ("torch.bfloat16", (8,)),
    }


def test_sparse_safetensors_reads_like_the_dense_file():
    dense = safetensors_bytes(TENSORS)
    sparse = sparse_safetensors(TENSORS)
    assert isinstance(sparse, SparseFile)
    assert sparse.size == len(dense) and sparse.read(0, sparse.size) == dense


def test_get_safetensors_metadata_single_file_reads_only_the_header(hub, api):
    big = {"w": ("BF16", (8192, 8192)), "b": ("F32", (8192,))}  # 128 MiB on the wire, never sent
    hub.add_repo(REPO, {"config.json": b"{}", "model.safetensors": sparse_safetensors(big)})
    meta = api.get_safetensors_metadata(REPO, timeout=5)
    assert not meta.sharded
    assert meta.parameter_count == {"BF16": 8192 * 8192, "F32": 8192}
    assert meta.files_metadata["model.safetensors"].tensors["w"].shape == [8192, 8192]
    gets = [r for r in hub.requests if r.method == "GET" and r.filename == "model.safetensors"]
    assert gets and all(r.range is not None for r in gets)
    assert hub.count("*.bin") == 0


def test_get_safetensors_metadata_sharded(hub, api):
    shards = {
        "model-00001-of-00002.safetensors": {"a.weight": ("F16", (4, 4))},
        "model-00002-of-00002.safetensors": {"b.weight": ("F16", (2, 4)), "b.bias": ("F32", (2,))},
    }
    index = {
        "metadata": {"total_size": 2 * 16 + 2 * 8 + 4 * 2},
        "weight_map": {name: shard for shard, tensors in shards.items() for name in tensors},
    }
    files = {shard: safetensors_bytes(tensors) for shard, tensors in shards.items()}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    hub.add_repo(REPO, files, library_name="transformers")

    meta = api.get_safetensors_metadata(REPO, timeout=5)
    assert meta.sharded and meta.metadata == index["metadata"]
    assert meta.weight_map == index["weight_map"]
    assert meta.parameter_count == {"F16": 24, "F32": 2}
    assert api.model_info(REPO).safetensors.parameters == {"F16": 24, "F32": 2}

    one_request = api.get_sharded_safetensors_metadata(REPO)
    assert one_request.parameter_count == meta.parameter_count


# --- faults --------------------------------------------------------------------------------------------------------


def test_gated_repo_needs_a_granted_token(hub, api):
    add_tiny_repo(hub, gated=True, authorized_tokens=[TOKEN])
    assert api.model_info(REPO).gated == "manual"  # metadata stays public, as on the Hub

    with pytest.raises(GatedRepoError) as anonymous:
        hf_hub_download(REPO, "config.json")
    assert anonymous.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as not_granted:
        hf_hub_download(REPO, "config.json", token="hf_someone_else")
    assert not_granted.value.response.status_code == 403
    assert json.loads(open(hf_hub_download(REPO, "config.json", token=TOKEN)).read()) == CONFIG


def test_private_repo_looks_missing_without_access(hub, api):
    add_tiny_repo(hub, private=True, authorized_tokens=[TOKEN])
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        api.model_info(REPO)
    assert anonymous.value.response.status_code == 401
    assert not isinstance(anonymous.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError) as not_granted:
        api.model_info(REPO, token="hf_someone_else")
    assert not_granted.value.response.status_code == 404
    assert api.model_info(REPO, token=TOKEN).private is True


def test_unknown_repo(hub, api):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nothing-here")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nothing-here", "config.json")


def test_missing_file(hub, tmp_path):
    add_tiny_repo(hub)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "pytorch_model.bin")
    assert not HfApi(endpoint=hub.endpoint).file_exists(REPO, "pytorch_model.bin")
    assert hub.requested_files(REPO) == {"pytorch_model.bin"}


def test_server_error(hub, api):
    add_tiny_repo(hub)
    hub.add_fault(status=500, repo_id=REPO)
    with pytest.raises(HfHubHTTPError) as error:
        api.model_info(REPO)
    assert error.value.response.status_code == 500
    assert not isinstance(error.value, RepositoryNotFoundError)


def test_download_retries_a_single_server_error(hub):
    add_tiny_repo(hub)
    hub.add_fault(status=503, path="config.json", times=1)
    assert json.loads(open(hf_hub_download(REPO, "config.json")).read()) == CONFIG
    assert [r.status for r in hub.requests if r.method == "HEAD"] == [503, 200]


def test_slow_answer_times_out(hub, api):
    add_tiny_repo(hub)
    hub.add_fault(delay_seconds=30, kind="model_info")
    started = time.monotonic()
    with pytest.raises(httpx2.TimeoutException):
        api.model_info(REPO, timeout=0.3)
    assert time.monotonic() - started < 5


def test_slow_head_times_out_for_file_metadata(hub):
    add_tiny_repo(hub)
    hub.add_fault(delay_seconds=30, path="config.json")
    with pytest.raises(httpx2.TimeoutException):
        get_hf_file_metadata(hf_hub_url(REPO, "config.json"), timeout=0.3)


def test_stop_ends_a_delayed_answer_at_once():
    with LoopbackHub() as hub:
        hub.add_fault(delay_seconds=60)
        url = f"{hub.endpoint}/api/models/{REPO}"
        worker = threading.Thread(target=lambda: _swallow(lambda: httpx2.get(url, timeout=120)), daemon=True)
        worker.start()
        while not hub.requests:
            time.sleep(0.01)
        started = time.monotonic()
    assert time.monotonic() - started < 3
    worker.join(timeout=5)
    assert not worker.is_alive()


def _swallow(call) -> None:
    try:
        call()
    except httpx2.HTTPError:
        pass


# --- what uses it ----------------------------------------------------------------------------------------------------


def test_transformers_autoconfig_reads_from_the_hub(hub):
    from transformers import AutoConfig

    hub.add_repo(REPO, {"config.json": json.dumps({"model_type": "vit", "hidden_size": 48}).encode()})
    config = AutoConfig.from_pretrained(REPO)
    assert (config.model_type, config.hidden_size) == ("vit", 48)
    assert hub.requested_files(REPO) == {"config.json"}


def test_subprocess_env_points_a_child_at_the_hub(tmp_path):
    with LoopbackHub() as hub:
        add_tiny_repo(hub)
        env = hub.subprocess_env(tmp_path / "hf", base={**os.environ, "HF_TOKEN": TOKEN})
        assert "HF_TOKEN" not in env
        code = "import huggingface_hub as h; print(h.model_info('%s').library_name)" % REPO
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "transformers"
    assert hub.count(kind="model_info") == 1 and not hub.saw_token(TOKEN)


def test_constants_are_restored_after_the_fixture(tmp_path):
    endpoint = constants.ENDPOINT
    with LoopbackHub() as hub, pytest.MonkeyPatch.context() as patch:
        use_loopback_hub(patch, hub, tmp_path / "hf")
        assert constants.ENDPOINT == hub.endpoint
    assert constants.ENDPOINT == endpoint
