"""Tied weights: tie them as `from_pretrained` holds them, so each tied tensor is counted once.

`from_config` under accelerate's `init_empty_weights` builds transformers models with their tied
parameters as separate tensors (BART's `shared`, `encoder.embed_tokens` and
`decoder.embed_tokens`; T5's likewise). A loaded model shares them: `from_pretrained` ends with
`tie_weights()`, which follows the model's `_tied_weights_keys` and the config
(`tie_word_embeddings`, `tie_encoder_decoder`). Calling the model's own `tie_weights()` on a meta
copy gives the same sharing without data, so the weights table and every simulation count what
a loaded model holds. `accelerate estimate-memory` builds the untied way; where that changes its
figure, the weights estimate keeps accelerate's number beside the real one.

Known limitations:
    - Ties made by code outside `tie_weights()` (a model that shares a tensor in its own
      `from_pretrained` override) are not seen; they stay counted twice, an overestimate.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn


def tie_in_place(model: "nn.Module") -> tuple[tuple[str, str], ...]:
    """Tie `model`'s weights as from_pretrained does; return (tied name, name it shares with) pairs."""
    tie = getattr(model, "tie_weights", None)
    if not callable(tie):
        return ()
    try:
        tie()
    except Exception:  # a model whose tying needs more than the config: keep it untied (counts high)
        return ()
    return shared_parameters(model)


def tied_copy(model: "nn.Module") -> tuple["nn.Module", tuple[tuple[str, str], ...]]:
    """A tied meta copy of `model` and its shared names; `model` itself when tying shares nothing new."""
    before = shared_parameters(model)
    declared = getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None)
    if not declared or not callable(getattr(model, "tie_weights", None)):
        return model, before
    tied = copy.deepcopy(model)  # meta tensors: copies no data
    pairs = tie_in_place(tied)
    return (tied, pairs) if pairs != before else (model, before)


def shared_parameters(model: "nn.Module") -> tuple[tuple[str, str], ...]:
    """Pairs (name, first name of the same tensor) for every parameter reachable under two names."""
    first: dict[int, str] = {}
    pairs = []
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            pairs.append((name, first[id(param)]))
        else:
            first[id(param)] = name
    return tuple(pairs)
