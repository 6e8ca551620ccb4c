"""``none``: no mixing, the cross-entropy of the batch (the baseline of every comparison)."""

from trainers.strategies.registry import Strategy, register_strategy
from trainers.strategies.sites import plain_loss

NONE = register_strategy(Strategy(
    name="none",
    label="none",
    family="unmixed",
    site="nowhere",
    loss=plain_loss,
    reads=(),
    default_loss="ce",
    fused="plain",
    cite="",
))
