"""An encoder forward pass over the real tokens of a padded batch only ("unpadded").

A dynamically padded batch of MiniLM fine-tuning on BANKING77 is ~64 % padding (256 examples:
16.4 real tokens per row, padded to 44.8; ``benchmarks/trainer_throughput.py``), and a
Hugging Face encoder runs every linear layer, LayerNorm, activation and dropout on the padded
positions too, though nothing at a real position depends on them (attention masks them out).
Here the position-wise parts of each layer run on the packed ``[tokens, d]`` rows of the real
tokens; only attention goes back to the padded ``[b, heads, L, L]`` form (with the same boolean
key mask and attention-probability dropout that the encoder's SDPA attention uses), the way
padding-free / variable-length attention kernels do it on GPUs.

The result is the encoder's ``last_hidden_state`` at the real positions (zeros at the padded
ones, which pooling ignores): the same function as the encoder's own forward, up to float
rounding in eval mode (``tests/test_unpadded.py`` compares them), with dropout drawing its
masks for the real positions only (same rate, same independence, a different random stream
than the padded forward's). The encoder's own modules are called (its ``query``/``key``/
``value`` linears, ``attention.output``, ``intermediate``, ``output``, embeddings), so their
weights, hooks and autocast behave as usual.

Covers the BERT-layer encoders (``model_type`` ``bert``, as MiniLM, and ``roberta``): absolute
positions, no decoder or cross-attention, no feed-forward chunking. Anything else, and mixing
inside the encoder (:mod:`trainers.encoder_mixing`, whose hooks expect the padded layers),
uses the encoder's own forward (:func:`supports`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MODEL_TYPES = ("bert", "roberta")
ROWS_MULTIPLE = 32
"""Packed rows are padded to a multiple of this: a fine-tuning run then meets a few dozen
matrix shapes, not one per distinct token count. With one shape per count the worker's
memory grew ~12 MB per epoch (oneDNN primitives and allocator pages kept per shape) until a
45-cell sweep whose trials reuse their processes ran out of memory; the extra rows compute
nothing that reaches the output."""


def supports(encoder: nn.Module | None) -> bool:
    """Whether :func:`hidden_states` computes ``encoder``'s forward: a BERT or RoBERTa encoder
    with absolute positions, no decoder parts and no feed-forward chunking."""
    config = getattr(encoder, "config", None)
    if config is None or getattr(config, "model_type", None) not in MODEL_TYPES:
        return False
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    return (hasattr(encoder, "embeddings") and isinstance(layers, nn.ModuleList)
            and not getattr(config, "is_decoder", False)
            and not getattr(config, "add_cross_attention", False)
            and not getattr(config, "chunk_size_feed_forward", 0)
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and all(hasattr(layer, name) for layer in layers
                    for name in ("attention", "intermediate", "output")))


def positions(encoder: nn.Module, attention_mask: Tensor) -> Tensor:
    """Position ids ``[b, L]`` as the encoder's own forward computes them: ``0..L-1`` on every
    row for BERT; for RoBERTa ``padding_idx + 1 + (index among the row's real tokens)``."""
    if encoder.config.model_type == "roberta":
        pad = encoder.embeddings.padding_idx
        mask = attention_mask.long()
        return torch.cumsum(mask, dim=1) * mask + pad
    length = attention_mask.shape[1]
    return torch.arange(length, device=attention_mask.device).expand_as(attention_mask)


def attend(self_attention: nn.Module, packed: Tensor, index: Tensor, key_mask: Tensor,
           shape: tuple[int, int]) -> Tensor:
    """Multi-head self-attention of one layer on packed rows: ``[tokens, d]`` -> same.

    Args:
        self_attention: the layer's ``attention.self`` (``query``, ``key``, ``value``,
            ``dropout``, ``num_attention_heads``, ``attention_head_size``).
        packed: the real tokens' hidden states.
        index: their flat positions in the ``b * L`` padded grid.
        key_mask: ``[b, 1, 1, L]`` boolean, True at real tokens.
        shape: ``(b, L)``.
    """
    b, length = shape
    heads, size = self_attention.num_attention_heads, self_attention.attention_head_size

    def padded(x: Tensor) -> Tensor:  # [tokens, d] -> [b, heads, L, size], zeros at padding
        grid = x.new_zeros(b * length, x.shape[-1]).index_copy(0, index, x)
        return grid.view(b, length, heads, size).transpose(1, 2)

    real = len(index)
    q, k, v = (padded(lin(packed)[:real]) for lin in (self_attention.query,
                                                          self_attention.key,
                                                          self_attention.value))
    dropout = self_attention.dropout.p if self_attention.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout,
                                         scale=getattr(self_attention, "scaling", None))
    out = out.transpose(1, 2).reshape(b * length, heads * size).index_select(0, index)
    extra = packed.shape[0] - real  # the filler rows (ROWS_MULTIPLE) stay zero
    return torch.cat([out, out.new_zeros(extra, out.shape[1])]) if extra else out


def hidden_states(encoder: nn.Module, input_ids: Tensor, attention_mask: Tensor,
                  token_type_ids: Tensor | None = None, **_: Any) -> Tensor:
    """The encoder's ``last_hidden_state`` ``[b, L, d]`` computed on the real tokens only
    (zeros at padded positions). ``encoder`` must pass :func:`supports`."""
    b, length = input_ids.shape
    flat = attention_mask.reshape(-1).bool()
    index = flat.nonzero().squeeze(1)
    real = len(index)
    rows = -(-real // ROWS_MULTIPLE) * ROWS_MULTIPLE
    fill = index[:1].expand(rows - real)  # filler rows repeat the first token; discarded

    def packed(grid: Tensor) -> Tensor:
        return grid.reshape(-1)[torch.cat([index, fill])].unsqueeze(0)

    ids = packed(input_ids)
    pos = packed(positions(encoder, attention_mask))
    types = packed(token_type_ids) if token_type_ids is not None else torch.zeros_like(ids)
    hidden = encoder.embeddings(input_ids=ids, token_type_ids=types, position_ids=pos)[0]
    key_mask = attention_mask.bool()[:, None, None, :]
    for layer in encoder.encoder.layer:
        attended = attend(layer.attention.self, hidden, index, key_mask, (b, length))
        hidden = layer.attention.output(attended, hidden)
        hidden = layer.output(layer.intermediate(hidden), hidden)
    out = hidden.new_zeros(b * length, hidden.shape[-1]).index_copy(0, index, hidden[:real])
    return out.view(b, length, -1)
