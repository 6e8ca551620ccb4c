"""Mixing strategies: the registry, the shared mathematics, and the built-in strategies.

* :mod:`trainers.strategies.registry`: :class:`Strategy`, one declaration per strategy, and
  how names resolve (built-ins, ``package.module:NAME``, entry points).
* :mod:`trainers.strategies.mixing`: Beta draws, pairwise and whole-batch interpolation, the
  losses (Yin et al. Eq. 1-4).
* :mod:`trainers.strategies.sites`: the loss of one update for a strategy that mixes the
  pooled output or inside the encoder.
* :mod:`trainers.strategies.builtin`: one file per built-in strategy (none, mixup,
  nonlinear_mixup, batchmixup, tmix, embed_mixup).

docs/strategies.md shows how to add one in a file of your own.
"""

from trainers.strategies import builtin  # noqa: F401 - registers the built-in strategies
from trainers.strategies.mixing import (
    DEFAULT_LABEL_VECTOR_LOSS,
    LOSSES,
    MixedBatch,
    batchmixup_policy,
    draw_pair,
    mix_batch,
    mix_pairs,
    mix_targets,
    mixed_loss,
    sample_beta,
)
from trainers.strategies.registry import (
    ENTRY_POINT_GROUP,
    FAMILIES,
    FROZEN_SITES,
    FUSED_KINDS,
    SITES,
    Batch,
    Strategy,
    StrategyError,
    builtin_names,
    canonical_name,
    describe_strategies,
    get_strategy,
    known_names,
    plugin_paths,
    register_strategy,
    strategy_tags,
)
from trainers.strategies.sites import in_encoder, plain_loss, pooled

__all__ = [
    "DEFAULT_LABEL_VECTOR_LOSS", "ENTRY_POINT_GROUP", "FAMILIES", "FROZEN_SITES", "FUSED_KINDS",
    "LOSSES", "SITES", "Batch", "MixedBatch", "Strategy", "StrategyError", "batchmixup_policy",
    "builtin_names", "canonical_name", "describe_strategies", "draw_pair", "get_strategy",
    "in_encoder", "known_names", "mix_batch", "mix_pairs", "mix_targets", "mixed_loss",
    "plain_loss", "plugin_paths", "pooled", "register_strategy", "sample_beta", "strategy_tags",
]
