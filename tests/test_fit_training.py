"""`vramplan fit --mode train`: the largest batch whose two simulated training steps fit on each card.

Each answer is checked against direct training estimates at it and one above (`measure_training` with a case
built here, and `vramplan estimate --mode train` for the CLI), and the training card (`--gpu`) is honoured by
`estimate --mode train` too, where it was once accepted and ignored.
"""

from __future__ import annotations

import pytest

from vramplan.build import build_model
from vramplan.errors import UsageError
from vramplan.measure.training import TrainingCase, measure_training
from vramplan.measure.training_cases import TrainingRequest
from vramplan.plan.fit import FitRequest, fit_model
from vramplan.plan.gpus import find_gpu, memory_target
from vramplan.spec import ModelSpec

VIT = {"model_type": "dinov3_vit", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
       "num_hidden_layers": 2, "num_register_tokens": 4, "patch_size": 16}
BERT = {"model_type": "bert", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 128,
        "architectures": ["BertForSequenceClassification"]}


def _build(config: dict, name: str):
    return build_model(ModelSpec(reference=name, model_id=name, library="transformers", source="test", config=config))


@pytest.fixture(scope="module")
def vit():
    return _build(VIT, "tiny-vit")


def _peak(model, name: str, **case) -> int:
    return measure_training(model, TrainingCase(**case), reference=name).peak_device_bytes


def test_the_largest_training_batch_fits_and_one_more_does_not(vit):
    small, t4 = memory_target("1GiB"), find_gpu("t4")
    request = FitRequest(gpus=(small, t4), mode="train", image_sizes=((448, 448),))
    first, second = fit_model(vit, request, "tiny-vit")
    # No precision given: amp-bf16 where the card has bfloat16 (a --memory card is the H100's), amp-fp16 on a T4.
    assert (first.training.precision, second.training.precision) == ("amp-bf16", "amp-fp16")
    for cell in (first, second):
        batch = cell.largest_batch_size
        case = dict(precision=cell.training.precision, image_size=(448, 448), gpu=cell.gpu)
        assert batch > 1 and cell.mode == "train" and cell.cheapest_precision is None
        assert _peak(vit, "tiny-vit", batch_size=batch, **case) == cell.peak_device_bytes <= cell.memory_bytes
        assert _peak(vit, "tiny-vit", batch_size=batch + 1, **case) > cell.memory_bytes
    entry = second.as_json()
    assert (entry["mode"], entry["precision"], entry["optimizer"], entry["trains"], entry["dtype"]) == \
        ("train", "amp-fp16", "adamw", "full", "float32")


def test_training_settings_are_kept_and_a_probe_fits_more_than_a_full_fine_tune(vit):
    gpu = memory_target("1GiB")
    full, probe, lora = (fit_model(vit, FitRequest(gpus=(gpu,), mode="train", image_sizes=((448, 448),),
                                                   training=TrainingRequest(precisions=("fp32",), optimizers=("sgd",),
                                                                            trains=(trains,), lora_rank=4)),
                                   "tiny-vit")[0] for trains in ("full", "probe", "lora"))
    assert full.largest_batch_size < probe.largest_batch_size
    assert [c.as_json()["trains"] for c in (full, probe, lora)] == ["full", "probe", "lora-4"]
    batch = lora.largest_batch_size
    case = dict(precision="fp32", optimizer="sgd", image_size=(448, 448), gpu=gpu, lora_rank=4)
    assert _peak(vit, "tiny-vit", batch_size=batch, **case) <= gpu.memory_bytes < \
        _peak(vit, "tiny-vit", batch_size=batch + 1, **case)


def test_a_text_model_and_the_square_search_train_too(vit):
    bert = _build(BERT, "tiny-bert")
    gpu = memory_target("600MiB")
    (cell,) = fit_model(bert, FitRequest(gpus=(gpu,), mode="train", seq_lens=(128,)), "tiny-bert")
    case = dict(seq_len=128, gpu=gpu)
    assert _peak(bert, "tiny-bert", batch_size=cell.largest_batch_size, **case) <= gpu.memory_bytes < \
        _peak(bert, "tiny-bert", batch_size=cell.largest_batch_size + 1, **case)
    (square,) = fit_model(vit, FitRequest(gpus=(gpu,), mode="train", image_sizes=((224, 224),),
                                          max_image_size=True, batch_size=2), "tiny-vit")
    side = square.largest_image_size
    assert side % 16 == 0 and square.largest_batch_size == 2
    assert _peak(vit, "tiny-vit", batch_size=2, image_size=(side, side), gpu=gpu) == square.peak_device_bytes \
        <= gpu.memory_bytes < _peak(vit, "tiny-vit", batch_size=2, image_size=(side + 16, side + 16), gpu=gpu)


def test_training_settings_without_the_train_mode_are_refused():
    with pytest.raises(UsageError) as exc:
        FitRequest(gpus=(memory_target("1GiB"),), training=TrainingRequest())
    assert exc.value.args[0] == "training settings go with fit mode `train`"
    with pytest.raises(UsageError) as exc:
        FitRequest(gpus=(memory_target("1GiB"),), mode="serve")
    assert exc.value.args[0] == "fit mode `serve` is not one of inference, train"


def _training_peaks(run_cli, batches: list[int], *flags: str) -> dict[int, int]:
    result = run_cli("estimate", "dinov3-vits16", "--mode", "train", "--batch-size", ",".join(map(str, batches)),
                     *flags, "--format", "json", "-q")
    assert result.code == 0, result.err
    return {c["batch_size"]: c["peak_device_bytes"] for c in result.json()["models"][0]["training"]}


def test_fit_train_on_the_command_line_agrees_with_estimate_train(run_cli):
    flags = ("--gpu", "t4", "--optimizer", "sgd", "--grad-checkpointing")
    result = run_cli("fit", "dinov3-vits16", "--mode", "train", *flags, "--format", "json", "-q")
    assert result.code == 0, result.err
    (cell,) = result.json()["models"][0]["fit"]
    assert (cell["precision"], cell["optimizer"], cell["grad_checkpointing"]) == ("amp-fp16", "sgd", True)
    batch = cell["largest_batch_size"]
    peaks = _training_peaks(run_cli, [batch, batch + 1], *flags)
    assert peaks[batch] == cell["peak_device_bytes"] <= cell["memory_bytes"] < peaks[batch + 1]
    text = run_cli("fit", "dinov3-vits16", "--mode", "train", *flags, "-q")
    lines = text.out.splitlines()
    assert lines[:2] == ["Largest batch that fits (training: amp-bf16 or amp-fp16, sgd, full,",
                         "  checkpointing, sdpa): 224px"]
    assert [line.split() for line in (lines[2], lines[4])] == [
        ["Model", "t4"], ["facebook/dinov3-vits16-pretrain-lvd1689m", str(batch)]]
    assert "Least lossy precision" not in text.out
    legend = text.out.replace("\n", " ")
    assert "two simulated training steps" in legend and "amp-fp16 on cards without bfloat16" in legend


@pytest.mark.parametrize("args, message", [
    (("--mode", "train", "--dtype", "float16"), "--mode train takes --precision, not --dtype"),
    (("--mode", "train", "--precision", "fp32,amp-bf16"),
     "fit takes one --precision, one --optimizer and one --trains (or --freeze / --lora-rank)"),
    (("--mode", "train", "--gpu", "t4", "--precision", "amp-bf16"),
     "NVIDIA Tesla T4 has no bfloat16: use --precision amp-fp16, fp16 or fp32"),
    (("--optimizer", "sgd",), "--precision, --optimizer, --trains, --freeze, --lora-rank, --lora-targets and "
                              "--grad-checkpointing need --mode train"),
])
def test_fit_train_refusals_are_one_line(run_cli, args, message):
    result = run_cli("fit", "dinov3-vits16", *args)
    assert (result.code, result.err) == (2, f"vramplan: error: {message}\n")


def test_estimate_train_simulates_the_card_it_is_given(run_cli):
    """A10G's 80 SMs split FlashAttention's backward differently from the H100's 132: the temporaries differ."""
    a10g = run_cli("estimate", "dinov3-vits16", "--mode", "train", "--gpu", "a10g", "--batch-size", "32",
                   "--format", "json", "-q").json()["models"][0]["training"][0]
    h100 = run_cli("estimate", "dinov3-vits16", "--mode", "train", "--batch-size", "32",
                   "--format", "json", "-q").json()["models"][0]["training"][0]
    assert a10g["gpu"] == "a10g" and "gpu" not in h100
    assert a10g["temp_bytes"] != h100["temp_bytes"]
    text = run_cli("estimate", "dinov3-vits16", "--mode", "train", "--gpu", "a10g", "-q")
    assert "(2 steps, simulated cuda a10g," in text.out.replace("\n", " ")
    t4 = run_cli("estimate", "dinov3-vits16", "--mode", "train", "--gpu", "t4", "--format", "json", "-q")
    entry = t4.json()["models"][0]["training"][0]
    assert entry["precision"] == "amp-fp16"  # no bfloat16 on a T4
    # The card's own context estimate (fixed part + its SMs' thread stacks), as inference has it, not the H100's.
    from vramplan.measure.overheads import cuda_context_bytes

    assert entry["overheads"]["CUDA context"] == cuda_context_bytes(find_gpu("t4")) == 289_406_976
    assert h100["overheads"]["CUDA context"] == 524_288_000


def test_estimate_train_with_fit_adds_the_training_matrix_for_the_sweeps_first_settings(run_cli):
    result = run_cli("estimate", "dinov3-vits16", "--mode", "train", "--optimizer", "sgd,adamw", "--gpu", "t4",
                     "--fit", "--format", "json", "-q")
    assert result.code == 0, result.err
    model = result.json()["models"][0]
    assert [c["optimizer"] for c in model["training"]] == ["sgd", "adamw"]
    (cell,) = model["fit"]
    assert (cell["mode"], cell["optimizer"], cell["precision"]) == ("train", "sgd", "amp-fp16")
    weights = run_cli("estimate", "dinov3-vits16", "--fit")
    assert (weights.code, weights.err) == (2, "vramplan: error: --fit needs --mode inference or --mode train\n")


def test_the_html_report_of_a_training_sweep_draws_its_training_categories_and_batches(run_cli):
    import re

    from vramplan.report.cells import format_bytes

    flags = ("report", "dinov3-vits16", "--mode", "train", "--batch-size", "8,16", "--gpu", "t4", "--fit", "-q")
    html = run_cli(*flags, "--format", "html").out
    first = run_cli(*flags, "--format", "json").json()["models"][0]["training"][0]
    model = "facebook/dinov3-vits16-pretrain-lvd1689m"
    caption = "224px, batch 8, amp-fp16, adamw, training"
    for category, field in (("Gradient", "gradient_bytes"), ("Optstate", "optimizer_state_bytes"),
                            ("Activation", "activation_bytes"), ("Parameter", "parameter_bytes")):
        assert f"<title>{model}: {category} {format_bytes(first[field])} ({caption})</title>" in html
    assert "Peak on the card against batch size" in html
    assert "Fits: the peak of two simulated training steps (gradients and optimizer state included)" in html
    # All eight categories' legend fits in the chart: the last label ends inside the SVG's width.
    svg = re.search(r'<svg class="chart breakdown"[^>]*width="(\d+)"(.*?)</svg>', html)
    last = re.findall(r'<text x="(\d+)" y="14" font-size="11">([^<]+)</text>', svg.group(2))[-1]
    assert last[1] == "CUDA context" and int(last[0]) + 7 * len(last[1]) <= int(svg.group(1))
