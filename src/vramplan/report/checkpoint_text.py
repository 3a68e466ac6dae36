"""The stored checkpoint, in words, under a model's table."""

from __future__ import annotations

from ..measure.checkpoint import CheckpointInfo
from .cells import format_bytes


def checkpoint_lines(checkpoint: CheckpointInfo | None) -> list[str]:
    """Lines describing what is on disk, and why it differs from the estimate."""
    if checkpoint is None:
        return []
    lines = []
    if checkpoint.files:
        count = len(checkpoint.files)
        download = (
            f", {format_bytes(checkpoint.download_bytes)} to download" if checkpoint.download_bytes is not None else ""
        )
        stored = ", ".join(f"{dtype} ({n:,} values)" for dtype, n in checkpoint.dtypes)
        lines.append(
            f"Checkpoint ({checkpoint.where}): {count} safetensors file{'s' if count != 1 else ''}{download}; "
            f"stored as {stored}: {format_bytes(checkpoint.stored_bytes)}"
        )
    if checkpoint.unread:
        lines.append("Not opened (pickle-based, never unpickled): " + ", ".join(checkpoint.unread))
    lines += [f"Note: {note}" for note in checkpoint.notes]
    return lines


def checkpoint_json(checkpoint: CheckpointInfo | None) -> dict | None:
    """The checkpoint as a JSON object."""
    if checkpoint is None:
        return None
    return {
        "where": checkpoint.where,
        "files": list(checkpoint.files),
        "parameters": checkpoint.parameters,
        "dtypes": dict(checkpoint.dtypes),
        "stored_bytes": checkpoint.stored_bytes,
        "download_bytes": checkpoint.download_bytes,
        "unread_files": list(checkpoint.unread),
        "notes": list(checkpoint.notes),
    }
