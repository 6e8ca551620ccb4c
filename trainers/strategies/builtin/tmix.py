"""``tmix``: mixup of hidden states at an encoder layer (Chen, Yang, Yang. "MixText:
Linguistically-Informed Interpolation of Hidden Space for Semi-Supervised Text
Classification". ACL 2020, Section 3.1; code: SALT-NLP/MixText ``code/mixtext.py``).

For a pair (x, x') and a layer k, both run through layers 1..k, their hidden states are
interpolated and the mix runs through layers k+1..L (MixText Eq. 1-4):

    h^l = g_l(h^{l-1}),  h'^l = g_l(h'^{l-1})           for l in 1..k
    h~^k = lam h^k + (1 - lam) h'^k
    h~^l = g_l(h~^{l-1})                                for l in k+1..L
    y~ = lam y + (1 - lam) y'

As in MixText's training code, each batch draws one ``lam ~ Beta(alpha, alpha)`` for all its
pairs, takes ``lam = max(lam, 1 - lam)`` (the mix stays closer to its own example), draws the
layer k uniformly from ``mix_layers`` and the partners from a random permutation of the batch.
Here the pair shares one forward pass through layers 1..k (the partner is another row of the
batch) and the attention mask of a mix is the union of the pair's masks
(:mod:`trainers.encoder_mixing`). The labels mix as label vectors and soft labels (Eq. 2 of
Yin et al.), scored by ``loss``; MixText's KL divergence to the mixed label is ``soft_ce``
up to a constant.

``mix_layers``: ``auto`` is MixText's set {7, 9, 12} for its 12-layer BERT-base, scaled to the
encoder's depth L as ``ceil(k L / 12)`` ({4, 5, 6} for the 6-layer MiniLM, {14, 18, 24} for
RoBERTa-large); or layers listed as ``7,9,12`` (one layer: ``9``). k counts as MixText counts:
0 is the embedding output, L the last layer's output.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from trainers.encoder_mixing import EncoderMix, encoder_depth
from trainers.strategies.mixing import sample_beta
from trainers.strategies.registry import Batch, Strategy, register_strategy
from trainers.strategies.sites import in_encoder

if TYPE_CHECKING:
    from trainers.config import CellConfig

MIXTEXT_LAYERS = (7, 9, 12)
"""MixText's default layer set, for its 12-layer encoder."""
MIXTEXT_DEPTH = 12


def layer_set(mix_layers: str, depth: int) -> tuple[int, ...]:
    """The layers k a batch may mix at, for an encoder of ``depth`` layers.

    Args:
        mix_layers: ``auto`` or comma-separated layers (``7,9,12``; normalised by the schema).
        depth: L, the encoder's number of layers.

    Raises:
        ValueError: a listed layer above ``depth``.
    """
    if mix_layers == "auto":
        return tuple(sorted({math.ceil(k * depth / MIXTEXT_DEPTH) for k in MIXTEXT_LAYERS}))
    layers = tuple(int(k) for k in mix_layers.split(","))
    above = [k for k in layers if k > depth]
    if above:
        raise ValueError(f"mix_layers {mix_layers} has layer(s) {above} above the encoder's "
                         f"{depth} layers (k is in 0..{depth})")
    return layers


def draw_layer_mix(batch: Batch) -> EncoderMix:
    """This batch's mixing point: one ``lam = max(lam, 1 - lam)``, a layer, the partners."""
    if batch.model.encoder is None:
        raise ValueError("tmix mixes inside the encoder: it needs mode=finetune")
    layers = layer_set(batch.config.mix_layers, encoder_depth(batch.model.encoder))
    b, device = batch.targets.shape[0], batch.targets.device
    lam = sample_beta(batch.config.alpha, (1, 1), device=device)
    lam = torch.maximum(lam, 1 - lam).expand(b, 1)
    layer = layers[int(torch.randint(len(layers), (1,)))]
    return EncoderMix(layer, torch.randperm(b, device=device), lam)


def forward_passes(config: CellConfig) -> int:
    """The mixed forward pass, and an unmixed one for the clean loss."""
    return 2 if config.clean_loss else 1


def check(config: CellConfig) -> str | None:
    """``mix_layers`` within the encoder's depth (when it is known without loading it)."""
    from trainers.model import known_depth  # the model module imports transformers lazily

    depth = known_depth(config.model)
    if depth is None:
        return None
    try:
        layer_set(config.mix_layers, depth)
    except ValueError as exc:
        return f"{exc} of model {config.model!r}"
    return None


TMIX = register_strategy(Strategy(
    name="tmix",
    label="TMix",
    family="pairwise",
    site="layer",
    loss=in_encoder(draw_layer_mix),
    reads=("alpha", "mix_layers", "loss", "clean_loss"),
    default_loss="soft_ce",
    forward_passes=forward_passes,
    check=check,
    cite="Chen, Yang, Yang, ACL 2020 (MixText)",
))
