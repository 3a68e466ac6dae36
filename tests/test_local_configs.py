"""Local configs of other architectures give accelerate's exact bytes."""

from __future__ import annotations

import pytest
import torch
from accelerate import init_empty_weights
from accelerate.utils import calculate_maximum_sizes
from transformers import AutoConfig, AutoModel

import vramplan

SMALL_BERT = {
    "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 64,
}
SMALL_VIT = {
    "model_type": "vit", "architectures": ["ViTModel"], "hidden_size": 96, "num_hidden_layers": 3,
    "num_attention_heads": 3, "intermediate_size": 384, "image_size": 64, "patch_size": 16,
}


def accelerate_sizes(config: dict) -> tuple[int, int]:
    """Build the model exactly as `accelerate estimate-memory` does and size it with accelerate."""
    cfg = AutoConfig.for_model(**config)
    with init_empty_weights():
        model = AutoModel.from_config(cfg, torch_dtype=torch.float32)
    total, (largest, _) = calculate_maximum_sizes(model)
    return int(total), int(largest)


@pytest.mark.parametrize("config", [SMALL_BERT, SMALL_VIT], ids=["bert", "vit"])
def test_local_config_bytes_equal_accelerate(write_config, config):
    directory = write_config(config["model_type"], config)
    total, largest = accelerate_sizes(config)

    for reference in (str(directory), str(directory / "config.json")):
        result = vramplan.estimate(reference).models[0]
        assert result.ok, result.error
        assert result.source == "local"
        assert result.weights.total_bytes == total
        assert result.weights.largest_layer_bytes == largest
        fp32, fp16, int8, int4 = result.weights.rows
        assert (fp32.total_bytes, fp16.total_bytes, int8.total_bytes, int4.total_bytes) == (
            total, total / 2, total / 4, total / 8,
        )
        assert fp32.training_adam_bytes == 4 * total  # accelerate: Adam step = 4x fp32 size
        assert fp16.training_adam_bytes == 2 * total  # mixed precision: optimizer states = 2x fp32
        assert int8.training_adam_bytes is None and int4.training_adam_bytes is None


def test_bert_table_matches_accelerates_own_table(write_config, run_cli):
    """The boxed table is accelerate's, cell for cell, for a non-DINOv3 model."""
    from accelerate.commands.estimate import create_ascii_table, estimate_training_usage
    from accelerate.utils import convert_bytes

    directory = write_config("bert", SMALL_BERT)
    total, largest = accelerate_sizes(SMALL_BERT)
    rows = []
    for dtype, div in (("float32", 1), ("float16", 2), ("int8", 4), ("int4", 8)):
        training = max(estimate_training_usage(total, dtype).values())
        t, l = (total / div, largest / div) if div > 1 else (total, largest)
        rows.append([dtype, convert_bytes(l), convert_bytes(t), convert_bytes(training) if training != -1 else "N/A"])
    expected = create_ascii_table(
        ["dtype", "Largest Layer", "Total Size", "Training using Adam"], rows,
        f"Memory Usage for loading `{directory}`",
    )
    result = run_cli("estimate", str(directory))
    assert result.code == 0
    box, notes = result.out.split("┘\n", 1)
    assert box + "┘" == expected  # accelerate's table exactly; vramplan's notes on its units follow it
    assert notes.startswith("Largest Layer: a whole block") and "1 GB in accelerate's tables is 2^30 bytes" in notes


def test_same_config_builds_once():
    from vramplan.build import _BUILT

    vramplan.estimate(["dinov3-vitl16", "dinov3-vitl16-sat493m"])
    before = len(_BUILT)
    run = vramplan.estimate(["dinov3-vitl16", "dinov3-vitl16-sat493m"])
    assert len(_BUILT) == before
    a, b = run.models
    assert a.weights == b.weights
