"""Local configs: a path to a config.json, or to a directory holding one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelNotFoundError
from ..spec import ModelSpec


def looks_like_path(reference: str) -> bool:
    """Say whether the user meant a filesystem path rather than an id."""
    return (
        reference.startswith((".", "/", "~"))
        or reference.endswith(".json")
        or Path(reference).expanduser().exists()
    )


def local_spec(reference: str, *, trust_remote_code: bool = False) -> ModelSpec:
    """Read a local config.json (or directory holding one) into a spec."""
    path = Path(reference).expanduser()
    if path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ModelNotFoundError(reference, f"the directory has no config.json ({config_path})")
    elif path.is_file():
        config_path = path
    else:
        raise ModelNotFoundError(reference, "no such file or directory")
    config = read_config_file(config_path, reference)
    return ModelSpec(
        reference=reference,
        model_id=reference,
        library="transformers",
        source="local",
        config=config,
        trust_remote_code=trust_remote_code,
        location=str(config_path.parent.resolve()),
        config_path=str(config_path.resolve()),
    )


# The largest config.json files on the Hub (ImageNet-22k label maps) are a few MB; /proc files and the like are not.
MAX_CONFIG_BYTES = 64 << 20


def read_config_file(config_path: Path, reference: str) -> dict[str, Any]:
    """Parse a config.json, with a clear error for unreadable, oversized or non-object JSON."""
    try:
        with config_path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(reference, f"cannot be read ({config_path}: {exc.__class__.__name__})") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(reference, f"is larger than {MAX_CONFIG_BYTES >> 20} MiB ({config_path}): not a config.json")
    return parse_config_text(text, reference)


def parse_config_text(text: str, reference: str) -> dict[str, Any]:
    """Parse config.json text; it must be a JSON object."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(reference, f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except RecursionError as exc:
        raise ConfigError(reference, "is JSON nested too deeply to read") from exc
    if not isinstance(config, dict):
        raise ConfigError(reference, f"is JSON but not an object (got {type(config).__name__})")
    return config
