"""The unpadded encoder forward (trainers/unpadded.py) computes the encoder's own function:
same hidden states at real tokens, same gradients, on BERT (MiniLM) and RoBERTa; other
encoders and mixing inside the encoder keep the encoder's own forward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, BertConfig, MPNetConfig, RobertaConfig

from trainers.cache import pad_batch, tokenize
from trainers.model import CellModel, load_encoder
from trainers.unpadded import ROWS_MULTIPLE, hidden_states, supports

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64, vocab_size=100, max_position_embeddings=64)
CONFIGS = {"bert": BertConfig, "roberta": RobertaConfig, "mpnet": MPNetConfig}


def encoder(kind: str, dropout: float = 0.0, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModel.from_config(CONFIGS[kind](
        **SIZES, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **extra))


def batch(pairs: bool = False) -> dict[str, torch.Tensor]:
    """Four rows of lengths 7, 7, 4, 2 (pad id 1), with segment ids when ``pairs``."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (4, 7), generator=gen)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[2, 4:] = 0
    mask[3, 2:] = 0
    ids[mask == 0] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if pairs:
        out["token_type_ids"] = (torch.arange(7) >= 3).long().expand(4, 7) * mask
    return out


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("pairs", [False, True])
def test_same_hidden_states_and_gradients(kind: str, pairs: bool) -> None:
    model = encoder(kind).train()  # dropout 0: training mode, deterministic
    inputs = batch(pairs)
    real = inputs["attention_mask"].bool()
    ref = model(**inputs).last_hidden_state
    ref[real].pow(2).sum().backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    got = hidden_states(model, **inputs)
    got[real].pow(2).sum().backward()
    assert supports(model)
    torch.testing.assert_close(got[real], ref[real], rtol=1e-5, atol=1e-5)
    assert not got[~real].any()  # zeros at padding
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) >= {n for n in ref_grads if "pooler" not in n}
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_minilm_on_real_rows_in_bf16() -> None:
    """The packaged MiniLM on BANKING77-like rows: eval-mode outputs match the encoder's own
    under bf16 autocast too, and CellModel's pooled v(x) is the same."""
    enc = load_encoder("minilm")
    texts = ["I lost my card", "why was I charged a fee for this transfer yesterday?", "hi"]
    rows = [dict(zip(("input_ids",), (ids,), strict=True))
            for ids in tokenize(enc.tokenizer, texts, None, 64)["input_ids"]]
    inputs = pad_batch(rows, enc.tokenizer.pad_token_id)
    real = inputs["attention_mask"].bool()
    plain = CellModel(enc.hidden_size, 5, enc.model, "mean").eval()
    fast = CellModel(enc.hidden_size, 5, enc.model, "mean", unpadded=True).eval()
    assert fast.unpadded and not plain.unpadded
    with torch.no_grad():
        torch.testing.assert_close(fast.encode(inputs), plain.encode(inputs),
                                   rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = enc.model(**inputs).last_hidden_state.float()
            got = hidden_states(enc.model, **inputs).float()
    assert (got[real] - ref[real]).abs().max() < 0.05  # bf16 rounding of the same function


def test_dropout_draws_only_real_tokens_at_the_same_rate() -> None:
    """In training mode dropout is on: outputs differ between calls, the pads stay zero, and
    the hidden dropout after the embeddings zeroes about p of the real positions."""
    model = encoder("bert", dropout=0.5).train()
    inputs = batch()
    real = inputs["attention_mask"].bool()
    a, b = hidden_states(model, **inputs), hidden_states(model, **inputs)
    assert not torch.equal(a[real], b[real])
    assert not a[~real].any()
    seen = []
    handle = model.embeddings.dropout.register_forward_hook(
        lambda m, i, o: seen.append(((o == 0).float().mean().item(), o.shape)))
    for _ in range(50):
        hidden_states(model, **inputs)
    handle.remove()
    rows = -(-int(real.sum()) // ROWS_MULTIPLE) * ROWS_MULTIPLE  # real tokens + filler rows
    assert all(shape[:2] == (1, rows) for _, shape in seen) and rows < real.numel() + 32
    assert abs(sum(rate for rate, _ in seen) / len(seen) - 0.5) < 0.03


@pytest.mark.parametrize("make", [
    lambda: encoder("mpnet"),  # another layer structure
    lambda: encoder("bert", is_decoder=True),
    lambda: encoder("bert", chunk_size_feed_forward=7),
])
def test_other_encoders_keep_their_own_forward(make) -> None:
    model = make().eval()
    assert not supports(model)
    cell = CellModel(32, 3, model, "mean", unpadded=True).eval()
    assert not cell.unpadded
    inputs = batch()
    with torch.no_grad():
        torch.testing.assert_close(cell.encode(inputs),
                                   CellModel(32, 3, model, "mean").eval().encode(inputs))
