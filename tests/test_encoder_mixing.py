"""Mixing inside the encoder (trainers/encoder_mixing.py) on BERT, RoBERTa and MPNet, and the
two built-in strategies that use it (tmix, embed_mixup)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, BertConfig, MPNetConfig, RobertaConfig

from trainers.config import CellConfig
from trainers.encoder_mixing import EncoderMix, encoder_depth, encoder_layers, mixing
from trainers.errors import ConfigError
from trainers.model import CellModel
from trainers.strategies.builtin.tmix import layer_set

DEPTH = 3
SIZES = dict(hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2,
             intermediate_size=64, vocab_size=100, max_position_embeddings=64,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CONFIGS = {"bert": BertConfig, "roberta": RobertaConfig, "mpnet": MPNetConfig}


def encoder(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModel.from_config(CONFIGS[kind](**SIZES)).eval()


def batch(padded: bool = True) -> dict[str, torch.Tensor]:
    """Four sequences; with ``padded`` the last two are shorter (pad id 1, mask 0)."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (4, 7), generator=gen)
    mask = torch.ones(4, 7, dtype=torch.long)
    if padded:
        mask[2, 4:] = 0
        mask[3, 2:] = 0
        ids[mask == 0] = 1
    return {"input_ids": ids, "attention_mask": mask}


def first(output):
    return output[0] if isinstance(output, tuple) else output


def layer_io(model: torch.nn.Module, inputs: dict, mix: EncoderMix | None = None):
    """(input hidden states, attention-mask argument, output) of every layer in one pass."""
    layers = encoder_layers(model)
    seen: dict[int, dict] = {i: {} for i in range(len(layers))}
    handles = []

    def pre(i):
        def hook(module, args, kwargs):
            seen[i]["in"] = args[0] if args else kwargs["hidden_states"]
            seen[i]["mask"] = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        return hook

    def post(i):
        def hook(module, args, kwargs, output):
            seen[i]["out"] = first(output)
        return hook

    def run():
        return model(**inputs).last_hidden_state

    try:
        if mix is None:
            for i, layer in enumerate(layers):
                handles.append(layer.register_forward_pre_hook(pre(i), with_kwargs=True))
                handles.append(layer.register_forward_hook(post(i), with_kwargs=True))
            last = run()
        else:
            with mixing(model, mix):  # capture hooks after the mixing hooks: they see the mix
                for i, layer in enumerate(layers):
                    handles.append(layer.register_forward_pre_hook(pre(i), with_kwargs=True))
                    handles.append(layer.register_forward_hook(post(i), with_kwargs=True))
                last = run()
    finally:
        for handle in handles:
            handle.remove()
    return seen, last


PARTNER = torch.tensor([2, 3, 0, 1])
LAM = torch.tensor([[0.7], [0.25], [0.5], [0.9]])


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("k", [0, 1, 2])
def test_layer_k_input_is_the_convex_combination_and_layers_below_are_unchanged(kind, k):
    model, inputs = encoder(kind), batch()
    with torch.no_grad():
        clean, _ = layer_io(model, inputs)
        mixed, _ = layer_io(model, inputs, EncoderMix(k, PARTNER, LAM))
    for i in range(k):  # layers 1..k: exactly the clean pass
        torch.testing.assert_close(mixed[i]["out"], clean[i]["out"], rtol=0, atol=0)
    h = clean[k]["in"]  # the output of layer k (k = 0: of the embeddings)
    expected = LAM.view(-1, 1, 1) * h + (1 - LAM.view(-1, 1, 1)) * h[PARTNER]
    torch.testing.assert_close(mixed[k]["in"], expected)
    # layers above k receive the union of each pair's masks, whatever form the model uses
    for i in range(k, DEPTH):
        mask, union = clean[i]["mask"], mixed[i]["mask"]
        if mask is None:
            assert union is None
            continue
        both = mask | mask[PARTNER] if mask.dtype == torch.bool \
            else torch.maximum(mask, mask[PARTNER])
        torch.testing.assert_close(union, both)
        assert not torch.equal(union, mask)  # the padded rows' partners were longer


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_gradients_reach_both_examples_of_each_pair_below_k(kind):
    model, inputs = encoder(kind), batch()
    captured = {}

    def keep(module, args, output):
        out = first(output)
        out.retain_grad()
        captured["h1"] = out

    handle = encoder_layers(model)[0].register_forward_hook(keep)
    try:
        with mixing(model, EncoderMix(2, PARTNER, LAM)):
            last = model(**inputs).last_hidden_state
    finally:
        handle.remove()
    # the first mixed sequence only (example 0 and its partner 2), through a random direction
    # (the plain sum of a LayerNorm output is constant)
    direction = torch.randn(last.shape[-1], generator=torch.Generator().manual_seed(2))
    (last[0, 0] * direction).sum().backward()
    grad = captured["h1"].grad.abs().sum(dim=(1, 2))
    assert grad[0] > 0 and grad[2] > 0
    assert grad[1] == 0 and grad[3] == 0


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_cell_model_mixes_the_last_layer_and_pools_over_the_union(kind):
    model = encoder(kind)
    cell = CellModel(SIZES["hidden_size"], 3, encoder=model, pooling="mean", dropout=0.0).eval()
    inputs = batch()
    mix = EncoderMix(encoder_depth(model), PARTNER, LAM)
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
        pooled = cell.encode(inputs, mix=mix)
    union = torch.maximum(inputs["attention_mask"], inputs["attention_mask"][PARTNER])
    mixed = LAM.view(-1, 1, 1) * hidden + (1 - LAM.view(-1, 1, 1)) * hidden[PARTNER]
    weights = union.unsqueeze(-1).float()
    torch.testing.assert_close(pooled, (mixed * weights).sum(1) / weights.sum(1))
    assert not any(layer._forward_pre_hooks for layer in encoder_layers(model))  # removed


def test_a_batch_without_padding_mixes_too():
    model, inputs = encoder("bert"), batch(padded=False)
    with torch.no_grad():
        clean, _ = layer_io(model, inputs)
        mixed, _ = layer_io(model, inputs, EncoderMix(1, PARTNER, LAM))
    h = clean[1]["in"]
    torch.testing.assert_close(mixed[1]["in"], LAM.view(-1, 1, 1) * h
                               + (1 - LAM.view(-1, 1, 1)) * h[PARTNER])


def test_tmix_layer_sets():
    assert layer_set("auto", 12) == (7, 9, 12)  # MixText's own set on its 12 layers
    assert layer_set("auto", 6) == (4, 5, 6)
    assert layer_set("auto", 24) == (14, 18, 24)
    assert layer_set("0,3", 6) == (0, 3)
    with pytest.raises(ValueError, match="above the encoder's 6 layers"):
        layer_set("7,9", 6)


def test_encoder_strategies_need_finetuning_and_a_layer_within_depth():
    with pytest.raises(ConfigError, match="needs mode=finetune"):
        CellConfig(strategy="tmix", mode="frozen").validate()
    with pytest.raises(ConfigError, match="needs mode=finetune"):
        CellConfig(strategy="embed_mixup", task="toy2d").validate()
    with pytest.raises(ConfigError, match="above the encoder's 2 layers"):
        CellConfig(strategy="tmix", mode="finetune", model="random:tiny",
                   mix_layers="3").validate()
    with pytest.raises(ConfigError, match="mix_layers must be 'auto' or layers"):
        CellConfig.from_dict({"strategy": "tmix", "mix_layers": "7;9"})
    config = CellConfig.from_dict({"strategy": "tmix", "mode": "finetune",
                                   "model": "random:tiny", "mix_layers": " 2, 1"}).validate()
    assert config.mix_layers == "1,2"


def test_mix_layers_are_logged_and_fingerprinted_only_for_tmix(tmp_path, data_dir):
    from trainers.prepare import cell_fingerprint

    base = dict(task="rte", ratio=0.05, mode="finetune", model="random:tiny",
                data_dir=str(data_dir), cache_dir=str(tmp_path))
    one = CellConfig(strategy="tmix", mix_layers="1", **base).validate()
    two = CellConfig(strategy="tmix", mix_layers="2", **base).validate()
    assert one.applicable()["mix_layers"] == "1"
    assert cell_fingerprint(one) != cell_fingerprint(two)
    embed = CellConfig(strategy="embed_mixup", mix_layers="1", **base).validate()
    assert "mix_layers" not in embed.applicable()
    assert cell_fingerprint(embed) == cell_fingerprint(
        CellConfig(strategy="embed_mixup", mix_layers="2", **base).validate())


@pytest.mark.parametrize("strategy", ["tmix", "embed_mixup"])
def test_encoder_strategies_train_a_cell(strategy, tmp_path, data_dir):
    from trainers.loop import train_cell

    config = CellConfig(task="rte", ratio=0.05, strategy=strategy, mode="finetune",
                        model="random:tiny", epochs=1, max_length=32, mix_layers="1,2",
                        data_dir=str(data_dir), cache_dir=str(tmp_path), seed=3).validate()
    result = train_cell(config, log=lambda line: None)
    summary = result.summary()
    assert summary["updates"] == summary["selected_updates"] > 0
    assert torch.isfinite(torch.tensor(summary["train_loss"]))
    assert 0 <= summary["test_accuracy"] <= 1
