"""A mixing point inside a Hugging Face encoder: after layer k, or at the embedding output.

TMix (Chen, Yang, Yang. "MixText: Linguistically-Informed Interpolation of Hidden Space for
Semi-Supervised Text Classification". ACL 2020) runs both examples of a pair through the
encoder up to layer k, interpolates their hidden states there and runs the remaining layers on
the mix; wordMixup (Guo, Mao, Zhang. "Augmenting Data with Mixup for Sentence Classification:
An Empirical Study". 2019) interpolates the word embeddings. Both are one mixing point,
``k`` counted as MixText counts it: ``k = 0`` mixes the embedding output (the input of layer
1), ``1 <= k < L`` the output of layer k, ``k = L`` the last layer's output (before pooling).

How: the partner of example i is ``partner[i]``, another row of the same batch, so the batch
runs through layers 1..k once, and a forward pre-hook on layer k+1 replaces its input
``h`` by ``lam * h + (1 - lam) * h[partner]`` (for ``k = L`` the model mixes the encoder's
output itself, :meth:`EncoderMix.apply`). Layers 1..k are untouched, and gradients reach both
examples' lower layers through ``h`` and ``h[partner]``.

The attention mask of a mixed sequence is the **union of the pair's masks**: position t of
the mix is attended to when it is a real token of either example (MixText passes no mask at
all, so its mixed sequences attend to padding; truncating to the first example's mask would
drop the partner's tokens that lie beyond the first's length). Layers above k receive that
union (each layer's mask argument is replaced, whatever its form: a boolean or additive 4-D
mask, or None when the batch has no padding), and mean pooling uses the union of the 2-D
masks. Positions that are padding in one example carry that example's hidden states of its
pad tokens, weighted as any other.

Works for every encoder whose layers sit in one ``nn.ModuleList`` of ``num_hidden_layers``
modules called as ``layer(hidden_states, attention_mask, ...)``: BERT/MiniLM, RoBERTa, MPNet,
ELECTRA, DeBERTa (tests/test_encoder_mixing.py checks BERT, RoBERTa and MPNet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class EncoderMix:
    """One mixing point for one batch.

    Attributes:
        layer: k, in ``0..L`` (0: the embedding output; L: the last layer's output).
        partner: ``[b]`` index of each example's partner in the batch.
        lam: ``[b, 1]`` the weight of each example itself (``1 - lam`` its partner's).
    """

    layer: int
    partner: Tensor
    lam: Tensor

    def apply(self, hidden: Tensor) -> Tensor:
        """``lam * h + (1 - lam) * h[partner]`` for hidden states ``[b, t, d]``."""
        lam = self.lam.to(hidden.dtype).view(-1, *([1] * (hidden.dim() - 1)))
        return lam * hidden + (1 - lam) * hidden[self.partner]

    def union(self, mask: Tensor | None) -> Tensor | None:
        """The union of each row's mask and its partner's: OR for boolean masks, the maximum
        for numeric ones (1/0 keep masks and additive 0/-inf masks alike)."""
        if mask is None or mask.dim() == 0 or mask.shape[0] != self.partner.shape[0]:
            return mask  # no padding, or one mask broadcast over the batch
        if mask.dtype == torch.bool:
            return mask | mask[self.partner]
        return torch.maximum(mask, mask[self.partner])


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers: the ``nn.ModuleList`` of ``num_hidden_layers``
    modules (``encoder.layer`` in BERT, RoBERTa, MPNet)."""
    depth = getattr(getattr(encoder, "config", None), "num_hidden_layers", None)
    for _, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise ValueError(f"cannot find the {depth} transformer layers of {type(encoder).__name__} "
                     "(no nn.ModuleList of num_hidden_layers modules)")


def encoder_depth(encoder: nn.Module) -> int:
    """L, the number of transformer layers."""
    return len(encoder_layers(encoder))


def _replace(args: tuple, kwargs: dict, index: int, name: str,
             change: Callable[[Any], Any]) -> tuple[tuple, dict]:
    """``args[index]`` (or ``kwargs[name]``) replaced by ``change`` of it."""
    if name in kwargs:
        return args, {**kwargs, name: change(kwargs[name])}
    if len(args) > index:
        return (*args[:index], change(args[index]), *args[index + 1:]), kwargs
    return args, kwargs


@contextmanager
def mixing(encoder: nn.Module, mix: EncoderMix) -> Iterator[None]:
    """While active, a forward pass of ``encoder`` mixes at ``mix.layer`` (k < L; the caller
    mixes the output for k = L) and gives layers above k the union of the pair's masks."""
    layers = encoder_layers(encoder)
    if not 0 <= mix.layer <= len(layers):
        raise ValueError(f"mixing layer {mix.layer} outside 0..{len(layers)}")
    unions: dict[int, tuple[Any, Any]] = {}  # id(mask) -> (mask, union): one per forward

    def union(mask: Any) -> Any:
        if not isinstance(mask, Tensor):
            return mask
        key = id(mask)
        if key not in unions or unions[key][0] is not mask:
            unions[key] = (mask, mix.union(mask))
        return unions[key][1]

    def first(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        args, kwargs = _replace(args, kwargs, 0, "hidden_states", mix.apply)
        return _replace(args, kwargs, 1, "attention_mask", union)

    def above(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _replace(args, kwargs, 1, "attention_mask", union)

    handles = []
    try:
        for index in range(mix.layer, len(layers)):
            hook = first if index == mix.layer else above
            handles.append(layers[index].register_forward_pre_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()
