"""``embed_mixup``: mixup of the embedding output, wordMixup-style (Guo, Mao, Zhang.
"Augmenting Data with Mixup for Sentence Classification: An Empirical Study". arXiv 2019,
Section 2, "wordMixup").

wordMixup interpolates the word-embedding matrices of a pair (padded to one length) and the
labels with the same weight:

    B~ = lam B_i + (1 - lam) B_j,   y~ = lam y_i + (1 - lam) y_j,   lam ~ Beta(alpha, alpha)

Here B is the transformer's embedding output (token + position + segment embeddings after
their LayerNorm: the input of layer 1, k = 0 in :mod:`trainers.encoder_mixing`), one ``lam``
per pair as in ``mixup``, partners from a random permutation of the batch, the attention mask
of a mix the union of the pair's masks. The whole encoder then runs on the mixed sequences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trainers.encoder_mixing import EncoderMix
from trainers.strategies.mixing import draw_pair
from trainers.strategies.registry import Batch, Strategy, register_strategy
from trainers.strategies.sites import in_encoder

if TYPE_CHECKING:
    from trainers.config import CellConfig


def draw_embedding_mix(batch: Batch) -> EncoderMix:
    """This batch's mixing point: the embedding output, one ``lam`` per pair."""
    lam, partner = draw_pair(batch.targets.shape[0], 1, batch.config.alpha,
                             batch.targets.device)
    return EncoderMix(0, partner, lam)


def forward_passes(config: CellConfig) -> int:
    """The mixed forward pass, and an unmixed one for the clean loss."""
    return 2 if config.clean_loss else 1


EMBED_MIXUP = register_strategy(Strategy(
    name="embed_mixup",
    label="embedding mixup",
    family="pairwise",
    site="embeddings",
    loss=in_encoder(draw_embedding_mix),
    reads=("alpha", "loss", "clean_loss"),
    default_loss="soft_ce",
    forward_passes=forward_passes,
    cite="Guo, Mao, Zhang, arXiv 2019 (wordMixup)",
))
