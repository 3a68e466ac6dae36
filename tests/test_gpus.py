"""The card catalogue's lookups and --memory (plan/gpus.py), with literal expectations (found weak by mutmut)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramplan.errors import UsageError
from vramplan.plan.gpus import default_gpu, find_gpu, gpu_catalogue, memory_target, parse_memory


@pytest.mark.parametrize("name, card", [
    ("NVIDIA H100 SXM", "h100-sxm"), ("nvidia_h100-SXM5", "h100-sxm"), ("H200", "h200"), ("AMD MI300X", "mi300x"),
    ("amd-instinct_MI250X", "mi250x"), ("GeForce RTX 4090", "rtx4090"), ("Tesla  T4", "t4"),
])
def test_find_gpu_ignores_case_spacing_and_the_vendor_prefix(name, card):
    assert find_gpu(name).name == card


@pytest.mark.parametrize("name", ["h100nvidia", "mi300xamd", "h 1 0 0 x"])
def test_find_gpu_strips_the_vendor_only_in_front(name):
    with pytest.raises(UsageError):
        find_gpu(name)


def test_unknown_gpu_lists_the_ids():
    with pytest.raises(UsageError) as error:
        find_gpu("gtx 970")
    ids = ", ".join(g.name for g in gpu_catalogue())
    assert ids.startswith("rtx3060, rtx3090, ") and ids.endswith(", mi250x, mi300x")
    assert str(error.value) == (f"GPU `gtx 970` is not in the catalogue ({ids}); `vramplan gpus` lists them, "
                                "or give --memory SIZE for another card")


def test_memory_target_is_the_default_card_with_that_memory():
    base = default_gpu()
    assert memory_target(" 24GiB ") == replace(
        base, name="memory-24GiB", label="24GiB card (NVIDIA H100 80GB HBM3 (SXM) kernels)",
        memory_bytes=24 * 2**30, aliases=(), source="--memory")


@pytest.mark.parametrize("text, nbytes", [
    ("24GiB", 24 * 2**30), (" 24 GB ", 24 * 10**9), ("80000MiB", 80000 * 2**20), ("1", 1), ("0.5GB", 5 * 10**8),
    ("1.5 tib", 3 * 2**39), ("512kb", 512_000), ("2KiB", 2048), ("7b", 7),
])
def test_parse_memory(text, nbytes):
    assert parse_memory(text) == nbytes


@pytest.mark.parametrize("text", ["0", "0GB", "-1GB", "24 XB", "GB", "", "1e9"])
def test_parse_memory_refuses(text):
    with pytest.raises(UsageError) as error:
        parse_memory(text)
    assert str(error.value) == f"--memory `{text}` is not a size: use e.g. 24GiB, 24GB or 80000MiB"
