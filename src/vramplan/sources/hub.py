"""Hub ids: config.json and model info through the real huggingface_hub client; never weights.

Honours HF_ENDPOINT, HF_TOKEN (read by huggingface_hub itself; never printed), HF_HUB_OFFLINE, the
Hugging Face cache and --revision. Resolution order for an id that is not catalogued: the local cache
(no network), then the Hub. Every Hub call runs under a deadline, so a slow or silent network gives
a one-line error after --timeout seconds, never a hang.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    GatedRepoAccessError,
    HubError,
    HubRequestError,
    HubUnavailableError,
    HubUnreachableError,
    MissingConfigError,
    NoLibraryMetadataError,
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
        status = exc.response.status_code if getattr(exc, "response", None) is not None else 0
        if status >= 500 or status in (408, 429):
            return HubUnavailableError(repo_id, status, endpoint())
        if 400 <= status < 500:
            return HubRequestError(repo_id, status, endpoint())
        return HubUnreachableError(repo_id, endpoint(), None, f"HTTP {status}")
    if isinstance(exc, (OSError, TimeoutError, *_transport_errors())):
        return HubUnreachableError(repo_id, endpoint(), timeout, type(exc).__name__)
    return exc


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's own network-failure types (huggingface_hub 2 uses httpx2, earlier ones httpx or requests)."""
    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
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
