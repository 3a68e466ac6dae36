"""What is really on disk: stored dtypes, parameter count and download size, from safetensors headers only.

Headers come from huggingface_hub (`get_safetensors_metadata` with Range requests for the Hub,
`get_local_safetensors_metadata` for a directory). `.bin`, `.pt` and `.pth` files are listed as present
and never opened: unpickling runs code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from .weights import WeightsEstimate

# Bytes per element of each safetensors dtype (the format's own list).
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
    "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "E8M0": 1, "C64": 8,
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class CheckpointInfo:
    """The checkpoint as stored: read from headers, never from tensor data."""

    where: str  # "hub" | "local" | "cache"
    files: tuple[str, ...]  # safetensors files whose headers were read
    parameters: int  # values stored across all tensors
    dtypes: tuple[tuple[str, int], ...]  # (safetensors dtype, values stored in it), largest first
    stored_bytes: int  # sum of values x bytes per value
    download_bytes: int | None  # safetensors file sizes (headers included), None if unknown
    unread: tuple[str, ...] = ()  # pickle-based files present and deliberately not opened
    notes: tuple[str, ...] = ()


def checkpoint_from_metadata(metadata: Any, where: str, sizes: dict[str, int | None],
                             unread: tuple[str, ...] = ()) -> CheckpointInfo:
    """Summarise a huggingface_hub SafetensorsRepoMetadata."""
    counts = dict(metadata.parameter_count)
    files = tuple(sorted(metadata.files_metadata))
    known = [sizes.get(name) for name in files]
    return CheckpointInfo(
        where=where,
        files=files,
        parameters=sum(counts.values()),
        dtypes=tuple(sorted(counts.items(), key=lambda kv: -kv[1])),
        stored_bytes=_stored_bytes(metadata),
        download_bytes=sum(known) if files and all(s is not None for s in known) else None,
        unread=unread,
    )


def _stored_bytes(metadata: Any) -> int:
    """The tensors' bytes as the headers place them (`data_offsets`): exact for every dtype, packed ones (F4, F6)
    and dtypes newer than this table included; values x bytes per value where a header gives no offsets."""
    total = 0
    for file in metadata.files_metadata.values():
        for tensor in file.tensors.values():
            offsets = getattr(tensor, "data_offsets", None)
            total += (offsets[1] - offsets[0] if offsets else
                      tensor.parameter_count * DTYPE_BYTES.get(tensor.dtype, 0))
    return total


def read_local_checkpoint(directory: Path) -> CheckpointInfo | None:
    """Read the safetensors headers in a directory, if it has a checkpoint."""
    from huggingface_hub import get_local_safetensors_metadata

    unread = tuple(sorted(p.name for p in directory.iterdir() if p.name.endswith(PICKLE_SUFFIXES)))
    has_single = (directory / "model.safetensors").is_file()
    has_index = (directory / "model.safetensors.index.json").is_file()
    if not (has_single or has_index):
        return _unread_only("local", unread)
    metadata = get_local_safetensors_metadata(directory)
    sizes = {name: _size(directory / name) for name in metadata.files_metadata}
    return checkpoint_from_metadata(metadata, "local", sizes, unread)


def read_hub_checkpoint(repo_id: str, revision: str | None, timeout: float,
                        repo_files: tuple[tuple[str, int | None], ...]) -> CheckpointInfo | None:
    """Read the checkpoint's safetensors headers from the Hub (Range requests; no tensor data)."""
    from huggingface_hub import HfApi

    from ..sources.hub import call_hub, endpoint

    names = {name for name, _ in repo_files}
    unread = tuple(sorted(n for n in names if n.endswith(PICKLE_SUFFIXES)))
    if not any(n.endswith(".safetensors") for n in names):
        return _unread_only("hub", unread)
    api = HfApi(endpoint=endpoint())
    # get_safetensors_metadata's default timeout was bound at import: pass ours.
    metadata = call_hub(
        repo_id, timeout, lambda: api.get_safetensors_metadata(repo_id, revision=revision, timeout=timeout), revision
    )
    return checkpoint_from_metadata(metadata, "hub", dict(repo_files), unread)


def unreadable_checkpoint(where: str, reason: str) -> CheckpointInfo:
    """A checkpoint whose headers could not be read: the estimate stands, the reason is noted."""
    return CheckpointInfo(where, (), 0, (), 0, None, (), (f"checkpoint headers not read: {reason}",))


def _unread_only(where: str, unread: tuple[str, ...]) -> CheckpointInfo | None:
    if not unread:
        return None
    note = "only pickle-based weights (" + ", ".join(unread) + "): not opened, so nothing is known of them"
    return CheckpointInfo(where, (), 0, (), 0, None, unread, (note,))


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def explain_checkpoint(checkpoint: CheckpointInfo, model: "nn.Module", weights: "WeightsEstimate",
                       config: dict[str, Any]) -> CheckpointInfo:
    """Add notes that explain how the stored checkpoint differs from the meta-device estimate."""
    if not checkpoint.files:
        return checkpoint
    notes = list(checkpoint.notes)
    stored_dtypes = {dtype for dtype, _ in checkpoint.dtypes}
    quant = config.get("quantization_config")
    if quant or stored_dtypes - FLOAT_DTYPES:
        method = quant.get("quant_method", "unknown method") if isinstance(quant, dict) else "integer/fp8 tensors"
        notes.append(
            f"quantized checkpoint ({method}; stored as {', '.join(sorted(stored_dtypes))}): "
            "the float estimate above is the unquantized model"
        )
    params = sum(p.numel() for p in model.parameters())  # tied parameters counted once
    all_params = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    persistent = _persistent_buffer_values(model)
    expected = params + persistent
    diff = checkpoint.parameters - expected
    if diff > 0:
        notes.append(
            f"the checkpoint stores {diff:,} more values than the model vramplan builds: extra heads or "
            "modules (a task head, say) that the base architecture does not include"
        )
    elif diff < 0:
        reasons = []
        if all_params > params:
            reasons.append(f"tied weights ({all_params - params:,} values shared, stored once)")
        if persistent:
            reasons.append(f"buffers ({persistent:,} values) that may not be saved")
        reasons.append("or modules missing from this checkpoint")
        notes.append(f"the checkpoint stores {-diff:,} fewer values than the model vramplan builds: " + "; ".join(reasons))
    elif not notes:
        notes.append("the checkpoint holds exactly the values of the model vramplan builds")
    return CheckpointInfo(**{**checkpoint.__dict__, "notes": tuple(notes)})


def _persistent_buffer_values(model: "nn.Module") -> int:
    total = 0
    for module in model.modules():
        skip = getattr(module, "_non_persistent_buffers_set", set())
        total += sum(b.numel() for name, b in module.named_buffers(recurse=False) if name not in skip)
    return total
