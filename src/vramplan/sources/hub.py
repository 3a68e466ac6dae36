"""Hub ids: config.json and model info through the real huggingface_hub client; never weights.

Honours HF_ENDPOINT, HF_TOKEN (read by huggingface_hub itself; never printed), HF_HUB_OFFLINE, the
Hugging Face cache and --revision. Resolution order for an id that is not catalogued: the local cache
(no network), then the Hub. Every Hub call runs under a deadline, so a slow or silent network gives
a one-line error after --timeout seconds, never a hang.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    GatedRepoAccessError,
    HubBadAnswerError,
    HubError,
    HubUnavailableError,
    HubUnreachableError,
    MissingConfigError,
    NoLibraryMetadataError,
    NotAHubError,
    OfflineNotCachedError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UnsupportedLibraryError,
)
from ..spec import ModelSpec, SourceOptions
from .local import read_config_file

T = TypeVar("T")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def looks_like_repo_id(reference: str) -> bool:
    """`owner/name`, as Hub model ids are."""
    return bool(_REPO_ID.match(reference))


def endpoint() -> str:
    """The Hub endpoint, read now (HF_ENDPOINT may be set after huggingface_hub was imported)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), read now."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def has_token() -> bool:
    """Whether huggingface_hub will send a token (the token itself never leaves huggingface_hub)."""
    from huggingface_hub.utils import get_token

    return get_token() is not None


def hub_spec(repo_id: str, query: SourceOptions) -> ModelSpec:
    """Resolve a Hub id from the cache, else from the Hub (model info, then config.json).

    Raises:
        HubError subclasses, one per fault, each with the next step to take.
    """
    cached = cached_config_path(repo_id, query.revision)
    if cached is not None and query.library in (None, "transformers"):
        return replace(_spec(repo_id, read_config_file(cached, repo_id), "cache", query), config_path=str(cached))
    if offline():
        raise OfflineNotCachedError(repo_id)
    info = call_hub(repo_id, query.timeout, lambda: _model_info(repo_id, query), query.revision)
    library = query.library or getattr(info, "library_name", None)
    if not library:
        raise NoLibraryMetadataError(repo_id)
    files = tuple((s.rfilename, s.size) for s in (getattr(info, "siblings", None) or []))
    if library not in ("transformers", "timm"):
        raise UnsupportedLibraryError(repo_id, library)
    path = call_hub(repo_id, query.timeout, lambda: _download_config(repo_id, query), query.revision)
    config = read_config_file(Path(path), repo_id)
    if library == "timm":
        from .timm_models import timm_spec_from_config

        spec = timm_spec_from_config(repo_id, config)
        return replace(spec, source="hub", revision=query.revision, repo_files=files)
    return replace(_spec(repo_id, config, "hub", query), repo_files=files)


def cached_config_path(repo_id: str, revision: str | None) -> Path | None:
    """The cached config.json of this repo and revision, if the Hugging Face cache has one."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return Path(found) if isinstance(found, str) else None


def call_hub(repo_id: str, timeout: float, call: Callable[[], T], revision: str | None = None) -> T:
    """Run one Hub call under a deadline and translate its failure into our typed errors."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name=f"vramplan-hub-{repo_id}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise HubUnreachableError(repo_id, endpoint(), timeout, "no answer")
    if "error" in outcome:
        raise translate_hub_error(repo_id, outcome["error"], timeout, revision) from outcome["error"]
    return outcome["value"]


def translate_hub_error(
    repo_id: str, exc: BaseException, timeout: float | None, revision: str | None = None
) -> BaseException:
    """Map huggingface_hub's exception types (never their text) onto ours."""
    from huggingface_hub import errors as hub_errors

    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, hub_errors.LocalEntryNotFoundError):  # a download that failed: why is further down the chain
        cause = exc.__cause__ or exc.__context__
        return translate_hub_error(repo_id, cause, timeout, revision) if cause is not None else OfflineNotCachedError(repo_id)
    if isinstance(exc, hub_errors.FileMetadataError):  # a file answer without X-Repo-Commit: no Hub sent that
        return NotAHubError(repo_id, endpoint(), "a file answer without the Hub's X-Repo-Commit header")
    if isinstance(exc, ValueError) and hasattr(exc, "doc"):  # json.JSONDecodeError of an API answer
        return _undecodable(repo_id, exc)
    if isinstance(exc, hub_errors.GatedRepoError):
        return GatedRepoAccessError(repo_id, has_token())
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return RepoNotFoundError(repo_id, has_token())
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return RevisionNotFoundError(repo_id, revision or "main")
    if isinstance(exc, hub_errors.EntryNotFoundError):
        return MissingConfigError(repo_id)
    if isinstance(exc, hub_errors.OfflineModeIsEnabled):
        return OfflineNotCachedError(repo_id)
    if isinstance(exc, hub_errors.HfHubHTTPError):
        return _http_error(repo_id, exc)
    if isinstance(exc, (OSError, TimeoutError, *_transport_errors())):
        return HubUnreachableError(repo_id, endpoint(), timeout, type(exc).__name__, _network_detail(exc, timeout))
    return exc


def _http_error(repo_id: str, exc: BaseException) -> HubError:
    """An HTTP error status the Hub's own error codes did not explain (huggingface_hub mapped those already)."""
    response = getattr(exc, "response", None)
    status = response.status_code if response is not None else 0
    headers = response.headers if response is not None else {}
    if status >= 500 or status in (408, 429):
        return HubUnavailableError(repo_id, status, endpoint(), headers.get("Retry-After"))
    if status in (401, 407) and not has_token():
        return NotAHubError(repo_id, endpoint(), f"HTTP {status} without the Hub's error code: a proxy asking for credentials?")
    if status == 401:
        return NotAHubError(repo_id, endpoint(), "HTTP 401 without the Hub's error code: the token was refused "
                            "(check HF_TOKEN), or a proxy asks for credentials")
    return NotAHubError(repo_id, endpoint(), f"HTTP {status} without the Hub's error code")


def _undecodable(repo_id: str, exc: ValueError) -> HubError:
    """An API answer that is not JSON: an HTML page means no Hub answered; otherwise it was cut or mangled."""
    doc = str(getattr(exc, "doc", "") or "")
    if doc.lstrip()[:1] == "<":
        return NotAHubError(repo_id, endpoint(), "an HTML page where the Hub answers JSON")
    return HubBadAnswerError(repo_id, endpoint(), f"JSON that ends or breaks after {len(doc):,} characters")


def _network_detail(exc: BaseException, timeout: float | None) -> str | None:
    """What went wrong on the wire, from the exception types along the chain (never their text)."""
    import socket

    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__

    def any_of(*names: str, builtin: tuple[type[BaseException], ...] = ()) -> bool:
        kinds = _http_library_types(*names) + builtin
        return any(isinstance(e, kinds) for e in chain)

    where = _failed_host(exc)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"the host name in `{where or endpoint()}` could not be resolved (DNS)"
    if any_of("TooManyRedirects"):
        return "its answers redirect in a loop"
    elsewhere = f" (redirected to {where})" if where and where != endpoint() else ""
    if any_of("TimeoutException", "Timeout", builtin=(TimeoutError,)):
        return f"no answer within {timeout:g} s{elsewhere}" if timeout is not None else None
    if any_of("ConnectError", builtin=(ConnectionRefusedError,)):
        return f"the connection was refused{elsewhere}"
    if any_of("ReadError", "RemoteProtocolError", "WriteError", builtin=(ConnectionResetError,)):
        return f"the connection was cut while the answer was coming in{elsewhere}"
    return None


def _http_library_types(*names: str) -> tuple[type[BaseException], ...]:
    """The classes of these names in the HTTP libraries huggingface_hub may use (httpx2, httpx, requests)."""
    found = []
    for module in ("httpx2", "httpx", "requests.exceptions"):
        loaded = sys.modules.get(module)
        found += [getattr(loaded, name) for name in names if loaded is not None and hasattr(loaded, name)]
    return tuple(t for t in found if isinstance(t, type) and issubclass(t, BaseException))


def _failed_host(exc: BaseException) -> str | None:
    """scheme://host:port of the request that failed (httpx errors carry it), e.g. after a redirect."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is attached
        return None
    return f"{url.scheme}://{url.netloc.decode() if isinstance(url.netloc, bytes) else url.netloc}"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's own network-failure types (huggingface_hub 2 uses httpx2, earlier ones httpx or requests)."""
    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("httpx2", "TooManyRedirects"), ("httpx", "TooManyRedirects"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _model_info(repo_id: str, query: SourceOptions):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint()).model_info(
        repo_id, revision=query.revision, timeout=query.timeout, files_metadata=True
    )


def _download_config(repo_id: str, query: SourceOptions) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(
        repo_id, "config.json", revision=query.revision, endpoint=endpoint(), etag_timeout=query.timeout
    )


def _spec(repo_id: str, config: dict[str, Any], source: str, query: SourceOptions) -> ModelSpec:
    return ModelSpec(
        reference=repo_id,
        model_id=repo_id,
        library="transformers",
        source=source,
        config=config,
        trust_remote_code=query.trust_remote_code,
        location=repo_id,
        revision=query.revision,
    )
