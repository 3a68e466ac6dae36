"""A loopback Hugging Face Hub: a real HTTP server on 127.0.0.1 that the real huggingface_hub client talks to.

Tests and benchmarks point huggingface_hub (and transformers, accelerate through it) at this server so nothing
reaches the internet, and so faults the real Hub produces (gated, private, missing files, 5xx, slow answers) can be
made on demand. It answers what huggingface_hub 2.x asks, the way huggingface.co answers it:

- ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{rev}``: model info. ``config`` is the subset
  of config.json the real Hub exposes (architectures, model_type, auto_map, quantization_config, ...), not the whole
  file: code that needs ``hidden_size`` must download config.json, here as there. ``siblings`` carry sizes and LFS
  data when ``blobs=true`` (``files_metadata=True``); ``safetensors`` sums parameters per dtype over the root
  ``*.safetensors`` files, as the Hub does.
- ``HEAD``/``GET /{repo_id}/resolve/{rev}/{path}``: regular files are answered directly (ETag = git blob id,
  X-Repo-Commit, Content-Length, Range -> 206 + Content-Range). LFS files (weights, or anything over 10 MB) are a
  302 to a second server on another port standing in for the CDN, with X-Linked-Etag (sha256), X-Linked-Size and
  Location; the client does not send its token there, as with the real CDN.
- ``GET /api/models/{repo_id}/tree/{rev}[/{path}]`` (list_repo_files / list_repo_tree) and
  ``GET /api/models/{repo_id}/safetensors-metadata/{index}`` (get_sharded_safetensors_metadata).

Errors carry the headers ``hf_raise_for_status`` maps to exceptions: a gated repo's files answer 401 without a
token and 403 with a token not granted access (``X-Error-Code: GatedRepo`` -> GatedRepoError; its model info stays
public, as on the Hub); a private or unknown repo answers 401 without a token and 404 with one
(``RepoNotFound`` -> RepositoryNotFoundError); a missing file 404 ``EntryNotFound`` -> (Remote)EntryNotFoundError;
an unknown revision 404 ``RevisionNotFound``. ``add_fault`` adds 5xx answers and delays, per repo or for all.

Pointing the client at the hub
------------------------------
huggingface_hub reads ``HF_ENDPOINT`` once, at import, and some values are frozen beyond ``constants``:

- ``constants.ENDPOINT`` and ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (``hf_hub_download``, and transformers
  through it, builds file URLs from the template, not from ENDPOINT);
- ``huggingface_hub.hf_api.api.endpoint``: the module-level functions (``huggingface_hub.model_info``, which
  accelerate's estimate-memory calls) are bound methods of an ``HfApi`` built at import;
- timeouts: ``hf_hub_download`` reads ``constants.HF_HUB_ETAG_TIMEOUT`` (its HEAD) and
  ``constants.HF_HUB_DOWNLOAD_TIMEOUT`` (its GET) at call time, but the ``timeout=`` defaults of
  ``get_hf_file_metadata`` (so ``HfApi.file_exists``), ``get_safetensors_metadata`` and
  ``parse_safetensors_file_metadata`` were bound at import: pass ``timeout=`` to those.

In a subprocess (CLI end to end, benchmarks) set the environment before it starts::

    with LoopbackHub() as hub:
        hub.add_repo("org/model", {"config.json": b'{"model_type": "bert"}'}, library_name="transformers")
        subprocess.run(cmd, env=hub.subprocess_env(tmp_path / "hf"), check=True)

In-process (pytest), patch what was frozen with ``use_loopback_hub``; a fixture is four lines::

    @pytest.fixture
    def hub(monkeypatch, tmp_path):
        with LoopbackHub() as hub:
            use_loopback_hub(monkeypatch, hub, tmp_path / "hf")
            yield hub

Passing ``endpoint=hub.endpoint`` (``HfApi(endpoint=...)``, ``hf_hub_download(endpoint=...)``) works without any
patching, but transformers' ``from_pretrained`` has no such argument.

How the client reacts to faults (huggingface_hub 2.4), worth knowing when writing tests:

- ``model_info``/``HfApi`` API calls do not retry: a 5xx raises HfHubHTTPError at once, a delay longer than
  ``timeout=`` raises ``httpx2.ReadTimeout`` (an ``httpx2.TimeoutException``).
- ``hf_hub_download`` catches a failed HEAD (5xx, timeout), looks in the cache, then retries once with a 60 s
  timeout and up to 5 backed-off attempts (1+2+4+8+8 s) before LocalEntryNotFoundError. Give such faults
  ``times=1`` to test the recovery, or expect a slow test.

Known limitations:

- One branch: revisions ``main`` and the repo's sha resolve, any other is RevisionNotFound.
- No Xet: files are served over plain HTTP, as the Hub does for clients without hf_xet.
- Tokens are not validated: any token counts as a logged-in user; ``authorized_tokens`` lists who may read a
  gated or private repo. Tokens are never logged; ``saw_token`` compares digests.
- ``SparseFile`` content (zeros after a header) gets a synthetic sha256: hashing gigabytes of zeros would be slow
  and the digest only has to be stable and unique.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import socketserver
import struct
import sys
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from ..measure.checkpoint import DTYPE_BYTES

__all__ = [
    "Fault",
    "HubRequest",
    "LoopbackHub",
    "SparseFile",
    "safetensors_bytes",
    "sparse_safetensors",
    "use_loopback_hub",
]

# What the Hub's default .gitattributes sends to git-lfs, and its size threshold for everything else.
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf",
    ".npy", ".npz", ".pkl", ".pickle", ".model", ".tflite", ".ot", ".zip", ".tar.gz",
)  # fmt: skip
LFS_MIN_SIZE = 10 * 1024 * 1024
# Keys of config.json the Hub copies into model info's `config`.
CONFIG_SUMMARY_KEYS = ("architectures", "model_type", "auto_map", "quantization_config", "task_specific_params")
SAFETENSORS_INDEX = "model.safetensors.index.json"

_TIMESTAMP = "2025-08-14T00:00:00.000Z"
_CHUNK = 1 << 20
_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE")


# --- content -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparseFile:
    """A file of ``size`` bytes: ``head``, then zeros. Large weights without the memory."""

    head: bytes
    size: int

    def __post_init__(self) -> None:
        if self.size < len(self.head):
            raise ValueError(f"size {self.size} is smaller than the head ({len(self.head)} bytes)")

    def read(self, start: int, stop: int) -> bytes:
        """Return bytes ``[start, stop)``."""
        stop = min(stop, self.size)
        if start >= stop:
            return b""
        part = self.head[start:stop]
        return part + bytes(stop - start - len(part))


Content = bytes | SparseFile

_DTYPE_BYTES = DTYPE_BYTES  # the safetensors dtypes vramplan reads, from measure/checkpoint.py
_DTYPE_ALIASES = {
    "float64": "F64", "float32": "F32", "fp32": "F32", "float16": "F16", "fp16": "F16", "half": "F16",
    "bfloat16": "BF16", "bf16": "BF16", "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint8": "U8", "bool": "BOOL",
}  # fmt: skip


def _safetensors_header(
    tensors: Mapping[str, tuple[str, Iterable[int]]], metadata: Mapping[str, str] | None
) -> tuple[bytes, int]:
    """Return the length-prefixed header and the size of the data section that follows it."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name in sorted(tensors):
        dtype_name, shape = tensors[name]
        dtype = _DTYPE_ALIASES.get(dtype_name.lower(), dtype_name.upper())
        if dtype not in _DTYPE_BYTES:
            raise ValueError(f"Unknown safetensors dtype {dtype_name!r} for tensor {name!r}")
        shape = [int(d) for d in shape]
        nbytes = math.prod(shape) * _DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the safetensors library pads its header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw, offset


def safetensors_bytes(
    tensors: Mapping[str, tuple[str, Iterable[int]]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Return a valid safetensors file: ``{name: (dtype, shape)}`` laid out in name order, data all zeros.

    dtype is a safetensors name ("F32", "BF16", ...) or a torch-style one ("float32", "bf16"). Keep shapes small;
    use ``sparse_safetensors`` for checkpoints whose header is all a test reads.
    """
    head, data_size = _safetensors_header(tensors, metadata)
    return head + bytes(data_size)


def sparse_safetensors(
    tensors: Mapping[str, tuple[str, Iterable[int]]], metadata: Mapping[str, str] | None = None
) -> SparseFile:
    """Return the same file as ``safetensors_bytes`` without holding its data in memory."""
    head, data_size = _safetensors_header(tensors, metadata)
    return SparseFile(head, len(head) + data_size)


def _read(content: Content, start: int, stop: int) -> bytes:
    return content.read(start, stop) if isinstance(content, SparseFile) else content[start:stop]


def _parse_safetensors_header(content: Content) -> dict[str, Any] | None:
    """Return a safetensors file's JSON header, or None if it is not one."""
    size = len(content) if isinstance(content, bytes) else content.size
    if size < 8:
        return None
    (length,) = struct.unpack("<Q", _read(content, 0, 8))
    if length > min(size - 8, 25_000_000):
        return None
    try:
        header = json.loads(_read(content, 8, 8 + length))
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


@dataclass(frozen=True)
class _File:
    path: str
    content: Content
    size: int
    sha256: str
    oid: str  # git blob id: of the content, or of the LFS pointer for LFS files
    lfs: bool

    @classmethod
    def make(cls, path: str, content: Content) -> _File:
        if isinstance(content, SparseFile):
            size = content.size
            sha256 = hashlib.sha256(content.head + b"\0sparse:%d" % size).hexdigest()
        else:
            size = len(content)
            sha256 = hashlib.sha256(content).hexdigest()
        lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
        blob = _lfs_pointer(sha256, size) if lfs else _read(content, 0, size)
        oid = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
        return cls(path, content, size, sha256, oid, lfs)

    def sibling(self, with_blobs: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": self.path}
        if with_blobs:
            entry.update(size=self.size, blobId=self.oid)
            if self.lfs:
                pointer_size = len(_lfs_pointer(self.sha256, self.size))
                entry["lfs"] = {"size": self.size, "sha256": self.sha256, "pointerSize": pointer_size}
        return entry

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            pointer_size = len(_lfs_pointer(self.sha256, self.size))
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return entry


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class _Repo:
    repo_id: str
    files: dict[str, _File]
    sha: str
    library_name: str | None
    gated: Literal["auto", "manual", False]
    private: bool
    tags: tuple[str, ...]
    pipeline_tag: str | None
    card_data: Mapping[str, Any] | None
    authorized_tokens: frozenset[str]

    def config(self) -> dict[str, Any] | None:
        """Parsed config.json, or None when absent or not a JSON object."""
        file = self.files.get("config.json")
        if file is None:
            return None
        try:
            config = json.loads(_read(file.content, 0, file.size))
        except ValueError:
            return None
        return config if isinstance(config, dict) else None

    def safetensors_summary(self) -> dict[str, Any] | None:
        """Parameters per dtype over the root safetensors files, as the Hub computes them."""
        parameters: dict[str, int] = {}
        for file in self.files.values():
            if "/" in file.path or not file.path.endswith(".safetensors"):
                continue
            header = _parse_safetensors_header(file.content) or {}
            for name, tensor in header.items():
                if name != "__metadata__":
                    parameters[tensor["dtype"]] = parameters.get(tensor["dtype"], 0) + math.prod(tensor["shape"])
        if not parameters:
            return None
        return {"parameters": parameters, "total": sum(parameters.values())}

    def may_read(self, token: str | None) -> bool:
        return token is not None and token in self.authorized_tokens


# --- requests, faults --------------------------------------------------------------------------------------------


@dataclass
class HubRequest:
    """One request the hub received. ``status`` is None until the hub has decided its answer."""

    method: str
    path: str
    kind: str  # "model_info", "tree", "safetensors_metadata", "resolve", "cdn" or "unknown"
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None
    query: dict[str, list[str]] = field(default_factory=dict)
    range: str | None = None
    authenticated: bool = False
    status: int | None = None


@dataclass(frozen=True)
class Fault:
    """A failure to inject into matching requests: a delay, then (if ``status``) an error answer.

    A request matches when ``repo_id`` is None or its repo, ``path`` is None or an fnmatch pattern of the file it
    asks for (API requests ask for no file), and ``kind`` is None or its ``HubRequest.kind``. ``times`` limits the
    fault to that many matching requests.
    """

    status: int | None = None
    delay_seconds: float = 0.0
    repo_id: str | None = None
    path: str | None = None
    kind: str | None = None
    times: int | None = None
    error_code: str | None = None
    message: str | None = None
    # What a broken network or a stranger in the middle does instead of answering:
    # "reset": the real answer's headers and half its body, then a TCP reset;
    # "truncate": a complete HTTP answer whose body is the first half of the real one (JSON cut short);
    # "html": 200 with an HTML page (a captive portal, a proxy's login page, a web server that is no Hub);
    # "redirect": 302 to the same path on another host (`redirect_to`; default: localhost on a port nothing serves).
    action: Literal["reset", "truncate", "html", "redirect"] | None = None
    retry_after: int | None = None  # seconds, sent as Retry-After with `status` (429, 503)
    redirect_to: str | None = None

    def matches(self, request: HubRequest) -> bool:
        if self.repo_id is not None and self.repo_id != request.repo_id:
            return False
        if self.kind is not None and self.kind != request.kind:
            return False
        if self.path is not None:
            return request.filename is not None and fnmatch.fnmatchcase(request.filename, self.path)
        return True


@dataclass
class _Armed:
    """A fault and how many more requests it may hit (None: all)."""

    fault: Fault
    remaining: int | None


@dataclass
class _Response:
    status: int
    headers: dict[str, str]
    body: Content = b""
    start: int = 0
    stop: int = 0
    reset_after: int | None = None  # bytes of body to send before resetting the connection


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head>"
    b"<body><h1>Welcome</h1><p>Please accept the terms of use to continue.</p></body></html>\n"
)


def _error(status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None) -> _Response:
    body = json.dumps({"error": message}).encode()
    all_headers = {"Content-Type": "application/json", "X-Error-Message": message, **(headers or {})}
    if code is not None:
        all_headers["X-Error-Code"] = code
    return _Response(status, all_headers, body, 0, len(body))


def _content(content: Content, size: int, range_header: str | None, headers: Mapping[str, str]) -> _Response:
    """Answer a file request, honouring a single-range ``Range`` header."""
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    try:
        span = _parse_range(range_header, size) if range_header else (0, size)
    except ValueError:  # a form we do not support: answer the whole file, as RFC 9110 allows
        range_header, span = None, (0, size)
    if span is None:
        return _Response(416, {**headers, "Content-Range": f"bytes */{size}"})
    start, stop = span
    if not range_header:
        return _Response(200, headers, content, 0, size)
    return _Response(206, {**headers, "Content-Range": f"bytes {start}-{stop - 1}/{size}"}, content, start, stop)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return ``[start, stop)`` for ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n``; None when unsatisfiable.

    Raises:
        ValueError: any other form (several ranges, another unit, garbage).
    """
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise ValueError(header)
    first, _, last = spec.strip().partition("-")
    if first == "":
        start, stop = max(size - int(last), 0), size
    else:
        start = int(first)
        stop = size if last == "" else min(int(last) + 1, size)
    return (start, stop) if start < stop else None


# --- the server --------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: LoopbackHub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # HTTPServer's own looks up the host name: slow, and not needed
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up (timeout tests) is expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _answer(self, method: str) -> None:
        authorization = self.headers.get("Authorization")
        token = authorization.removeprefix("Bearer ").strip() if authorization else None
        response = self.server.hub._answer(method, self.path, token, self.headers.get("Range"))
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(response.stop - response.start))
        self.send_header("Connection", "close")  # no idle keep-alive threads outlive stop()
        self.end_headers()
        if method == "HEAD":
            return
        stop = response.stop if response.reset_after is None else response.start + response.reset_after
        for offset in range(response.start, stop, _CHUNK):
            self.wfile.write(_read(response.body, offset, min(offset + _CHUNK, stop)))
        if response.reset_after is not None:
            self._reset()

    def _reset(self) -> None:
        """Abort the connection: SO_LINGER 0 makes close() send a TCP RST, as a dropped link or proxy does."""
        import socket

        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class LoopbackHub:
    """A Hugging Face Hub on 127.0.0.1 that serves the repos added to it. Start it with ``with`` or ``start()``."""

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._faults: list[_Armed] = []
        self._requests: list[HubRequest] = []
        self._token_digests: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    # lifecycle

    def start(self) -> LoopbackHub:
        """Start the hub and its CDN stand-in, each on a free port, in background threads."""
        if self._servers:
            return self
        self._stopping.clear()
        for name in ("hub", "cdn"):
            server = _Server(self)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"loopback-{name}", daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving; requests sleeping on a delay fault end at once."""
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """Base URL to use as HF_ENDPOINT."""
        return self._url(0)

    @property
    def cdn_endpoint(self) -> str:
        """Base URL of the server LFS files redirect to."""
        return self._url(1)

    def _url(self, index: int) -> str:
        if not self._servers:
            raise RuntimeError("LoopbackHub is not running: use `with LoopbackHub() as hub:` or hub.start()")
        return f"http://127.0.0.1:{self._servers[index].server_address[1]}"

    # content

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, Content],
        *,
        library_name: str | None = None,
        gated: bool | Literal["auto", "manual"] = False,
        private: bool = False,
        sha: str | None = None,
        tags: Iterable[str] = (),
        pipeline_tag: str | None = None,
        card_data: Mapping[str, Any] | None = None,
        authorized_tokens: Collection[str] = (),
    ) -> None:
        """Add (or replace) a model repo.

        Args:
            repo_id: "org/name" (or a legacy "name").
            files: repo path -> content; ``SparseFile`` for large files whose body a test never reads.
            gated: True means "manual" approval, as most gated models use.
            sha: the commit the repo is at; by default a digest of its files.
            authorized_tokens: tokens that may read the repo when it is gated or private.
        """
        entries = {path: _File.make(path, content) for path, content in sorted(files.items())}
        if sha is None:
            sha = hashlib.sha1("".join(f"{e.path}\0{e.oid}\n" for e in entries.values()).encode()).hexdigest()
        self._repos[repo_id] = _Repo(
            repo_id=repo_id,
            files=entries,
            sha=sha,
            library_name=library_name,
            gated="manual" if gated is True else gated,
            private=private,
            tags=tuple(tags),
            pipeline_tag=pipeline_tag,
            card_data=card_data,
            authorized_tokens=frozenset(authorized_tokens),
        )

    def remove_repo(self, repo_id: str) -> None:
        """Forget a repo: later requests for it answer RepoNotFound."""
        self._repos.pop(repo_id, None)

    def add_fault(self, fault: Fault | None = None, /, **fields: Any) -> Fault:
        """Inject a fault (a ``Fault`` or its fields as keywords); returns it."""
        fault = fault if fault is not None else Fault(**fields)
        with self._lock:
            self._faults.append(_Armed(fault, fault.times))
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # what was asked

    @property
    def requests(self) -> list[HubRequest]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def count(
        self,
        path: str | None = None,
        *,
        kind: str | None = None,
        method: str | None = None,
        repo_id: str | None = None,
    ) -> int:
        """Requests matching all the given filters; ``path`` is an fnmatch pattern of the repo file asked for."""
        return sum(
            1
            for r in self.requests
            if (kind is None or r.kind == kind)
            and (method is None or r.method == method)
            and (repo_id is None or r.repo_id == repo_id)
            and (path is None or (r.filename is not None and fnmatch.fnmatchcase(r.filename, path)))
        )

    def requested_files(self, repo_id: str | None = None) -> set[str]:
        """Repo files that were resolved or fetched from the CDN."""
        return {
            r.filename
            for r in self.requests
            if r.filename is not None and r.kind in ("resolve", "cdn") and repo_id in (None, r.repo_id)
        }

    def saw_token(self, token: str) -> bool:
        """Whether a request carried this token (only digests are kept)."""
        with self._lock:
            return _digest(token) in self._token_digests

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._token_digests.clear()

    # environments

    def subprocess_env(self, hf_home: str | os.PathLike[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process that should use this hub, an empty cache in ``hf_home`` and no token."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _TOKEN_VARS}
        for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_TOKEN_PATH"):
            env.pop(name, None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_OFFLINE="0",
            TRANSFORMERS_OFFLINE="0",
        )
        return env

    # answering

    def _answer(self, method: str, target: str, token: str | None, range_header: str | None) -> _Response:
        request = self._parse(method, target, range_header)
        request.authenticated = token is not None
        with self._lock:
            self._requests.append(request)
            if token is not None:
                self._token_digests.add(_digest(token))
        fault = self._take_fault(request)
        if fault is not None and fault.delay_seconds > 0:
            self._stopping.wait(fault.delay_seconds)
        if fault is not None and fault.status is not None:
            message = fault.message or f"Injected fault: HTTP {fault.status}"
            retry = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            response = _error(fault.status, fault.error_code, message, retry)
        else:
            response = self._route(request, token)
        if fault is not None and fault.action is not None:
            response = self._misbehave(fault, response, target)
        request.status = response.status
        return response

    def _misbehave(self, fault: Fault, real: _Response, target: str) -> _Response:
        """Turn the real answer into the fault's misbehaviour."""
        if fault.action == "html":
            return _Response(200, {"Content-Type": "text/html; charset=utf-8"}, HTML_PAGE, 0, len(HTML_PAGE))
        if fault.action == "redirect":
            elsewhere = fault.redirect_to or f"http://localhost:{_closed_port()}"
            return _Response(302, {"Location": elsewhere.rstrip("/") + target})
        half = real.start + (real.stop - real.start) // 2
        if fault.action == "truncate":
            return replace(real, stop=half)
        return replace(real, reset_after=half - real.start)  # "reset"

    def _parse(self, method: str, target: str, range_header: str | None) -> HubRequest:
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.split("/")[1:]]  # split before unquoting: revisions hold %2F
        request = HubRequest(method, unquote(url.path), "unknown", query=parse_qs(url.query), range=range_header)
        if parts[:2] == ["api", "models"] and len(parts) > 2:
            rest = parts[2:]
            n = 2 if len(rest) > 1 and rest[1] not in ("revision", "tree", "safetensors-metadata") else 1
            request.repo_id, rest = "/".join(rest[:n]), rest[n:]
            if not rest:
                request.kind = "model_info"
            elif rest[0] == "revision" and len(rest) == 2:
                request.kind, request.revision = "model_info", rest[1]
            elif rest[0] == "tree" and len(rest) >= 2:
                request.kind, request.revision, request.filename = "tree", rest[1], "/".join(rest[2:]) or None
            elif rest[0] == "safetensors-metadata" and len(rest) >= 2:
                request.kind, request.filename = "safetensors_metadata", "/".join(rest[1:])
        elif parts[0] == "_cdn" and len(parts) > 2:
            request.kind, request.repo_id = "cdn", "/".join(parts[1:-1])
            repo = self._repos.get(request.repo_id)
            file = next((f for f in repo.files.values() if f.sha256 == parts[-1]), None) if repo else None
            request.filename = file.path if file else None
        elif "resolve" in parts[1:3] and len(parts) > parts.index("resolve", 1) + 2:
            i = parts.index("resolve", 1)
            request.kind, request.repo_id = "resolve", "/".join(parts[:i])
            request.revision, request.filename = parts[i + 1], "/".join(parts[i + 2 :])
        return request

    def _take_fault(self, request: HubRequest) -> Fault | None:
        with self._lock:
            for armed in self._faults:
                if armed.remaining != 0 and armed.fault.matches(request):
                    if armed.remaining is not None:
                        armed.remaining -= 1
                    return armed.fault
        return None

    def _route(self, request: HubRequest, token: str | None) -> _Response:
        if request.kind == "unknown":
            return _error(404, None, f"Not found: {request.path} (the loopback hub does not serve this route)")
        repo = self._repos.get(request.repo_id or "")
        if request.kind == "cdn":  # signed CDN URLs need no token
            return self._cdn(repo, request)
        if repo is None or (repo.private and not repo.may_read(token)):
            if token is None:
                return _error(401, "RepoNotFound", "Invalid username or password.")
            return _error(404, "RepoNotFound", "Repository not found")
        if request.revision not in (None, "main", repo.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {request.revision}")
        if request.kind == "model_info":
            return _json(self._model_info(repo, request))
        if request.kind == "tree":
            return self._tree(repo, request)
        if repo.gated and not repo.may_read(token):
            return self._gated(repo, token)
        if request.kind == "safetensors_metadata":
            return self._safetensors_metadata(repo, request)
        return self._resolve(repo, request)

    def _gated(self, repo: _Repo, token: str | None) -> _Response:
        if token is None:
            message = (
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated"
                " to access it. Please log in."
            )
            return _error(401, "GatedRepo", message)
        message = (
            f"Access to model {repo.repo_id} is restricted and you are not in the authorized list."
            f" Visit {self.endpoint}/{repo.repo_id} to ask for access."
        )
        return _error(403, "GatedRepo", message)

    def _model_info(self, repo: _Repo, request: HubRequest) -> dict[str, Any]:
        with_blobs = _flag(request.query, "blobs")
        config = repo.config()
        summary = {k: config[k] for k in CONFIG_SUMMARY_KEYS if k in config} if config is not None else None
        safetensors = repo.safetensors_summary()
        tags = list(repo.tags)
        for tag in (repo.library_name, (config or {}).get("model_type"), "safetensors" if safetensors else None):
            if isinstance(tag, str) and tag not in tags:
                tags.append(tag)
        info: dict[str, Any] = {
            "_id": repo.sha[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": repo.sha,
            "lastModified": _TIMESTAMP,
            "createdAt": _TIMESTAMP,
            "private": repo.private,
            "disabled": False,
            "gated": repo.gated,
            "downloads": 0,
            "likes": 0,
            "library_name": repo.library_name,
            "tags": tags,
            "pipeline_tag": repo.pipeline_tag,
            "config": summary,
            "cardData": dict(repo.card_data) if repo.card_data is not None else None,
            "siblings": [f.sibling(with_blobs) for f in repo.files.values()],
            "spaces": [],
            "safetensors": safetensors,
            "usedStorage": sum(f.size for f in repo.files.values()),
        }
        info = {k: v for k, v in info.items() if v is not None}
        expand = request.query.get("expand") or request.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in expand or k in ("_id", "id")}
        return info

    def _tree(self, repo: _Repo, request: HubRequest) -> _Response:
        base = (request.filename or "").strip("/")
        recursive = _flag(request.query, "recursive")
        entries: dict[str, dict[str, Any]] = {}
        for file in repo.files.values():
            if base and not file.path.startswith(base + "/"):
                continue
            parts = file.path.split("/")
            depth = len(base.split("/")) if base else 0
            folders = range(depth + 1, len(parts)) if recursive else range(depth + 1, min(depth + 2, len(parts)))
            for end in folders:
                folder = "/".join(parts[:end])
                entries[folder] = {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                   "size": 0, "path": folder}  # fmt: skip
            if recursive or len(parts) == depth + 1:
                entries[file.path] = file.tree_entry()
        if base and not entries:
            return _error(404, "EntryNotFound", f"{base} does not exist on \"main\"", {"X-Repo-Commit": repo.sha})
        return _json([entries[k] for k in sorted(entries)])

    def _safetensors_metadata(self, repo: _Repo, request: HubRequest) -> _Response:
        index_file = repo.files.get(request.filename or "")
        if index_file is None:
            return _error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": repo.sha})
        index = json.loads(_read(index_file.content, 0, index_file.size))
        headers = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            file = repo.files.get(shard)
            headers[shard] = _parse_safetensors_header(file.content) if file else None
        index.pop("weight_map", None)
        return _json({"index": index, "headers": headers})

    def _resolve(self, repo: _Repo, request: HubRequest) -> _Response:
        common = {"X-Repo-Commit": repo.sha}
        file = repo.files.get(request.filename or "")
        if file is None:
            return _error(404, "EntryNotFound", "Entry not found", common)
        if file.lfs:
            return _Response(
                302,
                {
                    **common,
                    "ETag": f'"{file.oid}"',
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(file.size),
                    "Location": f"{self.cdn_endpoint}/_cdn/{repo.repo_id}/{file.sha256}",
                },
            )
        return _content(file.content, file.size, request.range, {**common, "ETag": f'"{file.oid}"'})

    def _cdn(self, repo: _Repo | None, request: HubRequest) -> _Response:
        file = repo.files.get(request.filename) if repo is not None and request.filename else None
        if file is None:
            return _error(404, None, "NoSuchKey: the specified key does not exist.")
        return _content(file.content, file.size, request.range, {"ETag": f'"{file.sha256}"'})


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released): a host that refuses connections."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _json(data: Any) -> _Response:
    body = json.dumps(data).encode()
    return _Response(200, {"Content-Type": "application/json; charset=utf-8"}, body, 0, len(body))


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return any(v.lower() in ("1", "true") for v in query.get(name, ()))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- in-process client ---------------------------------------------------------------------------------------------


def use_loopback_hub(monkeypatch: Any, hub: LoopbackHub, hf_home: str | os.PathLike[str]) -> None:
    """Point this process's huggingface_hub (and transformers through it) at ``hub``, with an empty cache and no token.

    ``monkeypatch`` is pytest's fixture; everything is undone with it. Child processes started afterwards inherit
    the same settings through the environment.
    """
    from huggingface_hub import constants, hf_api

    hf_home = Path(hf_home)
    endpoint = hub.endpoint
    for name, value in hub.subprocess_env(hf_home, base={}).items():
        monkeypatch.setenv(name, value)
    for name in _TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
