"""`vramplan fit`: the search, and its cells checked against direct estimates at the batch found and one above."""

from __future__ import annotations

import pytest

from vramplan.plan.fit import largest_fitting

MiB = 1024 * 1024
FIELDS = {"gpu", "mode", "largest_batch_size", "peak_device_bytes", "memory_bytes", "headroom_bytes"}


def _peaks(run_cli, model: str, size: int, batches: list[int], *flags: str) -> dict[int, int]:
    """Direct estimates (vramplan estimate --mode inference) at these batches."""
    result = run_cli("estimate", model, "--mode", "inference", "--image-size", str(size),
                     "--batch-size", ",".join(map(str, batches)), *flags, "--format", "json")
    assert result.code == 0, result.err
    return {c["batch_size"]: c["peak_device_bytes"] for c in result.json()["models"][0]["inference"]}


@pytest.mark.parametrize("limit", [999, 1000, 1037, 5000, 123_456, 10**7])
@pytest.mark.parametrize("fixed,slope,bump", [(1000, 37, 0), (700, 3, 512), (10, 1000, 2048)])
def test_search_agrees_with_brute_force_in_a_handful_of_steps(limit, fixed, slope, bump):
    # allocator-like: linear growth, rounded up to blocks of `bump` bytes
    def peak(n: int) -> int:
        raw = fixed + slope * n
        return -(-raw // bump) * bump if bump else raw

    expected = max((n for n in range(1, 20_001) if peak(n) <= limit), default=0)
    found, simulated = largest_fitting(peak, limit, upper=20_000)
    assert found == expected
    # linear peaks: the secant lands on the answer; block-rounded (flat) ones: gallop and bisect, O(log n)
    assert len(simulated) <= (8 if not bump else 3 * max(1, expected).bit_length() + 4)
    assert all(simulated[n] == peak(n) for n in simulated)


def test_search_stops_at_the_upper_bound():
    found, simulated = largest_fitting(lambda n: n, 10**9, upper=64)
    assert found == 64 and len(simulated) <= 10


def test_cells_match_direct_estimates_at_the_batch_found_and_one_above(run_cli):
    result = run_cli("fit", "dinov3-vits16", "dinov3-convnext-tiny", "--gpu", "rtx4090", "--mode", "inference",
                     "--image-size", "224,512,1024", "--format", "json")
    assert result.code == 0, result.err
    models = result.json()["models"]
    memory = 24564 * MiB
    for model in models:
        cells = model["fit"]
        assert [c["image_size"] for c in cells] == [[224, 224], [512, 512], [1024, 1024]]
        for cell in cells:
            assert FIELDS <= set(cell) and cell["gpu"] == "rtx4090" and cell["mode"] == "inference"
            assert cell["memory_bytes"] == memory and cell["headroom_bytes"] == 0
            assert cell["simulations"] <= 8
            batch = cell["largest_batch_size"]
            assert batch > 1
            direct = _peaks(run_cli, model["model"], cell["image_size"][0], [batch, batch + 1], "--gpu", "rtx4090")
            assert direct[batch] == cell["peak_device_bytes"] <= memory < direct[batch + 1]
        batches = [c["largest_batch_size"] for c in cells]
        assert batches == sorted(batches, reverse=True)  # bigger inputs, smaller batches


def test_text_matrix(run_cli):
    result = run_cli("fit", "dinov3-vits16", "--gpu", "rtx4090", "--gpu", "t4", "--image-size", "224")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "Largest batch that fits (inference, bfloat16 or float16, sdpa): 224px"
    header = lines[1].split()
    assert header == ["Model", "rtx4090", "t4"]
    row = next(line for line in lines if line.startswith("facebook/dinov3-vits16-pretrain-lvd1689m"))
    rtx, t4 = map(int, row.split()[1:])
    assert rtx > t4 > 0  # 24 GB against 15 GB


def test_headroom_keeps_memory_free(run_cli):
    def cell(*flags):
        result = run_cli("fit", "dinov3-vits16", "--gpu", "l4", "--image-size", "512", *flags, "--format", "json")
        assert result.code == 0, result.err
        return result.json()["models"][0]["fit"][0]

    full, half = cell(), cell("--headroom", "50")
    assert half["headroom_bytes"] == full["memory_bytes"] // 2
    assert half["peak_device_bytes"] <= full["memory_bytes"] - half["headroom_bytes"]
    assert 0 < half["largest_batch_size"] < full["largest_batch_size"]
    above = _peaks(run_cli, "dinov3-vits16", 512, [half["largest_batch_size"] + 1], "--gpu", "l4")
    assert above[half["largest_batch_size"] + 1] > full["memory_bytes"] - half["headroom_bytes"]


def test_nothing_fits_gives_zero_and_no_precision(run_cli):
    result = run_cli("fit", "dinov3-vits16", "--memory", "256MiB", "--image-size", "224", "--format", "json")
    assert result.code == 0, result.err
    (cell,) = result.json()["models"][0]["fit"]
    assert cell["largest_batch_size"] == 0 and cell["cheapest_precision"] is None
    assert cell["peak_device_bytes"] > cell["memory_bytes"] == 256 * MiB
    text = run_cli("fit", "dinov3-vits16", "--memory", "256MiB", "--image-size", "224")
    assert "0 (needs" in text.out


def test_cheapest_precision_at_batch_1(run_cli):
    bf16 = _peaks(run_cli, "dinov3-vitl16", 224, [1], "--dtype", "bfloat16")[1]
    fp32 = _peaks(run_cli, "dinov3-vitl16", 224, [1], "--dtype", "float32")[1]
    between = (bf16 + fp32) // 2
    result = run_cli("fit", "dinov3-vitl16", "--memory", str(between), "--image-size", "224", "--format", "json")
    (cell,) = result.json()["models"][0]["fit"]
    assert cell["cheapest_precision"] == "bfloat16"
    roomy = run_cli("fit", "dinov3-vitl16", "--memory", str(fp32), "--image-size", "224", "--format", "json")
    assert roomy.json()["models"][0]["fit"][0]["cheapest_precision"] == "float32"


def test_max_image_size(run_cli):
    result = run_cli("fit", "dinov3-vits16", "--gpu", "t4", "--max-image-size", "--batch-size", "4", "--format", "json")
    assert result.code == 0, result.err
    (cell,) = result.json()["models"][0]["fit"]
    side = cell["largest_image_size"]
    assert side % 16 == 0 and side > 1024 and cell["largest_batch_size"] == 4
    direct = _peaks(run_cli, "dinov3-vits16", side, [4], "--gpu", "t4")[4]
    above = _peaks(run_cli, "dinov3-vits16", side + 16, [4], "--gpu", "t4")[4]
    assert direct == cell["peak_device_bytes"] <= cell["memory_bytes"] < above


def test_max_image_size_of_a_convnext_steps_by_its_32_fold_downsampling(run_cli):
    """A ConvNeXt has no patch size and cannot take 16 px (its last stage would see half a pixel): the search
    steps by the smallest side it takes, 32 px."""
    result = run_cli("fit", "dinov3-convnext-tiny", "--gpu", "t4", "--max-image-size", "--format", "json")
    assert result.code == 0, result.err
    (cell,) = result.json()["models"][0]["fit"]
    side = cell["largest_image_size"]
    assert side % 32 == 0 and side > 4096 and "error" not in cell
    direct = _peaks(run_cli, "dinov3-convnext-tiny", side, [1], "--gpu", "t4")[1]
    above = _peaks(run_cli, "dinov3-convnext-tiny", side + 32, [1], "--gpu", "t4")[1]
    assert direct == cell["peak_device_bytes"] <= cell["memory_bytes"] < above


def test_bad_flags_are_one_line(run_cli):
    assert run_cli("fit", "dinov3-vits16", "--headroom", "120").code == 2
    assert run_cli("fit", "dinov3-vits16", "--batch-size", "4").code == 2
    bf16 = run_cli("fit", "dinov3-vits16", "--gpu", "v100-16gb", "--dtype", "bfloat16")
    assert bf16.code == 2 and "has no bfloat16" in bf16.err and "Traceback" not in bf16.err


def test_report_fit_adds_json_fit_lists(run_cli):
    result = run_cli("report", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--gpu", "a10g",
                     "--fit", "--format", "json")
    assert result.code == 0, result.err
    model = result.json()["models"][0]
    assert model["inference"][0]["gpu"] == "a10g"
    assert model["fit"][0]["gpu"] == "a10g" and model["fit"][0]["largest_batch_size"] > 1


@pytest.mark.parametrize("fmt,marker", [("text", "Largest batch that fits"), ("markdown", "### Largest batch that fits")])
def test_report_fit_in_text_and_markdown(run_cli, fmt, marker):
    result = run_cli("report", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--gpu", "a10g",
                     "--fit", "--format", fmt)
    assert result.code == 0, result.err
    assert marker in result.out and "(simulated a10g" in " ".join(result.out.split())
    plain = run_cli("report", "dinov3-vits16", "--mode", "inference", "--image-size", "224", "--format", fmt)
    assert "Largest batch that fits" not in plain.out
