"""Named GPU targets: the bundled catalogue (`gpus.json`) and what the simulation needs to know of a card.

The catalogue holds hardware facts only: the memory the driver reports (`nvidia-smi`
memory.total, `rocm-smi` VRAM total; each entry names its `source`), the compute capability,
the number of SMs (compute units on AMD), and bfloat16/fp8 support. Which kernels PyTorch runs on
a card, and what they allocate, is derived from these facts where the simulation needs it
(`measure/activations.py`, `measure/overheads.py`).

Known limitations:
    - Memory is the total the driver reports for a whole card (one GCD for an MI250X, as PyTorch
      sees it). ECC, MIG partitions and a display on the same card lower what a process can use;
      `--headroom` in `vramplan fit` leaves room for that.
    - Driver versions differ by a few MiB in the total they report; one reading per card is kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import UsageError

DEFAULT_GPU = "h100-sxm"

# Resident threads per SM by compute capability (CUDA C Programming Guide, "Features and Technical
# Specifications", table "Maximum number of resident threads per SM").
_MAX_THREADS_PER_SM = {(7, 0): 2048, (7, 5): 1024, (8, 0): 2048, (8, 6): 1536, (8, 7): 1536, (8, 9): 1536,
                       (9, 0): 2048, (10, 0): 2048, (12, 0): 1536}


@dataclass(frozen=True)
class GpuSpec:
    """One target card, as the catalogue describes it (or a bare memory size from `--memory`)."""

    name: str  # lower-case id: rtx4090, a100-80gb, h100-sxm
    label: str  # the name people know it by, for table titles
    memory_bytes: int  # total memory as the driver reports it
    vendor: str  # "nvidia" | "amd"
    compute_capability: str  # "8.6" on CUDA, the gfx target ("gfx942") on ROCm
    sm_count: int  # streaming multiprocessors (compute units on AMD)
    bf16: bool
    fp8: bool
    aliases: tuple[str, ...] = ()
    source: str = ""  # where memory_bytes was read

    @property
    def rocm(self) -> bool:
        return self.vendor == "amd"

    @property
    def capability(self) -> tuple[int, int]:
        """(major, minor) on CUDA; (0, 0) on ROCm, where the gfx target stands instead."""
        if self.rocm:
            return (0, 0)
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    @property
    def sdpa_flash(self) -> bool:
        """Whether SDPA's flash kernel runs here (sdp_utils.cpp, check_flash_attention_hardware_support).

        CUDA: sm80 to sm121 (no flash on Volta and Turing). ROCm: the AOTriton kernels PyTorch ships
        for gfx90a (MI200) and gfx942 (MI300).
        """
        if self.rocm:
            return self.compute_capability in ("gfx90a", "gfx942")
        return (8, 0) <= self.capability <= (12, 1)

    @property
    def max_threads_per_sm(self) -> int:
        """Resident threads per SM (2048 where the table has no entry: errs high)."""
        return _MAX_THREADS_PER_SM.get(self.capability, 2048)

    def as_json(self) -> dict[str, Any]:
        """The entry of `vramplan gpus --format json`."""
        return {
            "name": self.name, "aliases": list(self.aliases), "memory_bytes": self.memory_bytes,
            "vendor": self.vendor, "compute_capability": self.compute_capability, "sm_count": self.sm_count,
            "bf16": self.bf16, "fp8": self.fp8,
        }


@lru_cache(maxsize=1)
def gpu_catalogue() -> tuple[GpuSpec, ...]:
    """Every card in the bundled `gpus.json`, in its order."""
    text = resources.files("vramplan.plan").joinpath("gpus.json").read_text(encoding="utf-8")
    return tuple(
        GpuSpec(
            name=e["name"], label=e["label"], memory_bytes=int(e["memory_bytes"]), vendor=e["vendor"],
            compute_capability=e["compute_capability"], sm_count=int(e["sm_count"]), bf16=bool(e["bf16"]),
            fp8=bool(e["fp8"]), aliases=tuple(e["aliases"]), source=e["source"],
        )
        for e in json.loads(text)["gpus"]
    )


def find_gpu(name: str) -> GpuSpec:
    """The card called `name` (its id or an alias, any case and spacing).

    Raises:
        UsageError: no card has that name; the message lists the ids.
    """
    wanted = _normalise(name)
    for gpu in gpu_catalogue():
        if wanted in {_normalise(n) for n in (gpu.name, *gpu.aliases)}:
            return gpu
    names = ", ".join(g.name for g in gpu_catalogue())
    raise UsageError(f"GPU `{name}` is not in the catalogue ({names}); `vramplan gpus` lists them, "
                     "or give --memory SIZE for another card")


@lru_cache(maxsize=1)
def default_gpu() -> GpuSpec:
    """The target when none is named: an H100 SXM."""
    return find_gpu(DEFAULT_GPU)


def memory_target(size: str) -> GpuSpec:
    """A card known only by its memory (`--memory 24GiB`): the default card's kernels, that much memory."""
    nbytes = parse_memory(size)
    base = default_gpu()
    return replace(base, name=f"memory-{size.strip()}", label=f"{size.strip()} card ({base.label} kernels)",
                   memory_bytes=nbytes, aliases=(), source="--memory")


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str) -> int:
    """`24GiB`, `24 GB`, `80000MiB` or a byte count, in bytes (GB is 10**9, GiB 2**30)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UsageError(f"--memory `{text}` is not a size: use e.g. 24GiB, 24GB or 80000MiB")
    return int(float(match.group(1)) * _UNITS[unit])


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower()).removeprefix("nvidia").removeprefix("amd")
