"""The hand-written frozen-head update (trainers.fused_head) against autograd, on real features."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.conftest import FAST
from trainers.config import CellConfig
from trainers.errors import CellError, TrainingDiverged
from trainers.fused_head import HeadAdamW, clip_grad_norm_, supports
from trainers.loop import CellTrainer, train_cell
from trainers.prepare import prepare_cell
from trainers.strategies import builtin_names, get_strategy
from trainers.updaters import AutogradUpdater

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def banking(data_dir, cache_dir):
    """Real Banking77 MiniLM features (5 % of the training set) and a base config."""
    config = CellConfig(**FAST, task="banking77", ratio=0.05, data_dir=str(data_dir),
                        cache_dir=str(cache_dir), head_lr=3e-3, device="cpu")
    return config, prepare_cell(config, CPU)


def trainer_for(banking, fused: bool | None = None, **overrides) -> CellTrainer:
    base, prepared = banking
    config = dataclasses.replace(base, **overrides).validate()
    return CellTrainer(config, dataclasses.replace(prepared), CPU, fused=fused)


CASES = [
    dict(strategy="none"),
    dict(strategy="none", mlp_hidden=0, dropout=0.0),
    dict(strategy="mixup"),
    dict(strategy="mixup", clean_loss=False, alpha=0.3),
    dict(strategy="mixup", mix_samples=4, mixup_variant="shared", alpha=2.0),
    dict(strategy="mixup", mix_samples=15, mixup_variant="faithful", mlp_hidden=0),
    dict(strategy="nonlinear_mixup"),
    dict(strategy="nonlinear_mixup", mix_samples=3, mixup_variant="shared", clean_loss=False,
         dropout=0.0, alpha=0.5),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_update_matches_autograd_loss_and_gradients(banking, case):
    trainer = trainer_for(banking, **{"mlp_hidden": 64, **case})
    trainer.model.train()
    features, targets = next(trainer.batches(1))
    params = trainer.optimizer.param_groups[0]["params"]

    torch.manual_seed(11)
    trainer.optimizer.zero_grad(set_to_none=True)
    reference = AutogradUpdater(trainer.context).loss(features, targets)
    reference.backward()
    expected = [p.grad.clone() for p in params]

    torch.manual_seed(11)  # the same dropout mask, coefficients and partners
    trainer.optimizer.zero_grad(set_to_none=True)
    loss = trainer.updater.loss(features, targets)
    assert loss.requires_grad is False
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-5, atol=1e-6)
    assert all(p.grad is not None for p in params)
    for got, want in zip([p.grad for p in params], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # A different draw gives a different loss: the draws are really used.
    torch.manual_seed(12)
    if case["strategy"] != "none" or case.get("dropout", 0.1) > 0:
        assert not torch.allclose(trainer.updater.loss(features, targets), loss)


@pytest.mark.parametrize("strategy", ["mixup", "nonlinear_mixup"])
def test_fused_epochs_follow_the_autograd_trajectory(banking, strategy):
    settings = dict(strategy=strategy, mix_samples=3, mixup_variant="faithful", mlp_hidden=64,
                    epochs=2)
    fused = trainer_for(banking, **settings)
    plain = trainer_for(banking, fused=False, **settings)
    assert (fused.updater.path, plain.updater.path) == ("fused", "autograd")  # fused by default
    for epoch in (1, 2):
        a, b = fused.train_epoch(epoch), plain.train_epoch(epoch)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    for (name, p), q in zip(fused.model.named_parameters(), plain.model.parameters(),
                            strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5, msg=name)
    assert fused.evaluate()["accuracy"] == pytest.approx(plain.evaluate()["accuracy"],
                                                         abs=2 / len(plain.splits["test"][1]))


def test_head_adamw_and_clip_equal_torch_bit_for_bit():
    torch.manual_seed(0)
    shapes = [(16, 8), (16,), (5, 16)]
    mine = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    opts = [torch.optim.AdamW([{"params": ps, "lr": 1e-2, "weight_decay": 0.1}], fused=True)
            for ps in (mine, ref)]
    fast = HeadAdamW(opts[0])
    for step in range(5):
        grads = [torch.randn(s) * (10 if step % 2 else 0.01) for s in shapes]
        for p, q, g in zip(mine, ref, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        clip_grad_norm_([p.grad for p in mine], 1.0)
        torch.nn.utils.clip_grad_norm_(ref, 1.0)
        assert all(torch.equal(p.grad, q.grad) for p, q in zip(mine, ref, strict=True))
        opts[0].param_groups[0]["lr"] = opts[1].param_groups[0]["lr"] = 1e-2 / (step + 1)
        fast.step()
        opts[1].step()
        assert all(torch.equal(p, q) for p, q in zip(mine, ref, strict=True)), step
    assert torch.equal(opts[0].state[mine[0]]["exp_avg_sq"], opts[1].state[ref[0]]["exp_avg_sq"])
    with pytest.raises(ValueError, match="one parameter group"):
        HeadAdamW(torch.optim.AdamW([{"params": mine[:1]}, {"params": mine[1:]}], fused=True))


@pytest.mark.parametrize("norm", [0.5, 1 - 1e-4, 1 - 1e-6, 1.0, 1 + 1e-6, 3.0, float("nan")])
def test_clip_equals_torch_at_the_threshold(norm):
    """Around max_norm (where clip_grad_norm_ skips its multiplication) and for NaN."""
    torch.manual_seed(1)
    grads = [torch.randn(s) for s in [(16, 8), (16,), (5, 16)]]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    grads = [g * (norm / total) for g in grads]
    ref = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(ref, grads, strict=True):
        p.grad = g.clone()
    clip_grad_norm_(grads, 1.0)
    torch.nn.utils.clip_grad_norm_(ref, 1.0)
    assert all(torch.equal(g, p.grad) or (g.isnan().all() and p.grad.isnan().all())
               for g, p in zip(grads, ref, strict=True))


def test_scope_other_cells_use_autograd(banking):
    fused = {name: get_strategy(name).fused for name in builtin_names()}
    assert supports(fused["mixup"], "soft_ce", frozen=True)
    assert supports(fused["none"], "ce", frozen=True)
    assert not supports(fused["batchmixup"], "soft_ce", frozen=True)
    assert not supports(fused["tmix"], "soft_ce", frozen=True)
    assert not supports(fused["mixup"], "dot", frozen=True)
    assert not supports(fused["mixup"], "soft_ce", frozen=False)
    assert trainer_for(banking, strategy="batchmixup").updater.path == "autograd"
    assert trainer_for(banking, strategy="nonlinear_mixup", loss="cosine").updater.path \
        == "autograd"
    with pytest.raises(CellError, match="fused head update covers"):
        trainer_for(banking, strategy="batchmixup", fused=True)


def test_non_finite_loss_in_the_fused_path_names_epoch_and_step(banking):
    config, _ = banking
    diverging = dataclasses.replace(config, strategy="mixup", head_lr=1e30, grad_clip=0.0,
                                    epochs=3)
    assert trainer_for(banking, strategy="mixup", head_lr=1e30, grad_clip=0.0).updater.path \
        == "fused"
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, step \d+"):
        train_cell(diverging, log=lambda _: None)


def test_fused_update_without_the_direct_kernel_steps_the_optimizer_identically(banking):
    settings = dict(strategy="mixup", mix_samples=2, mixup_variant="faithful", mlp_hidden=32)
    direct, through_step = trainer_for(banking, **settings), trainer_for(banking, **settings)
    assert direct.updater.head_adamw is not None
    through_step.updater.head_adamw = None  # what a torch without CPU fused AdamW kernels does
    direct.train_epoch(1)
    through_step.train_epoch(1)
    for p, q in zip(direct.model.parameters(), through_step.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_an_unknown_head_layout_is_not_fused(banking):
    from trainers.fused_head import head_layout_known

    trainer = trainer_for(banking, strategy="mixup", mlp_hidden=16)
    assert head_layout_known(trainer.model)
    trainer.model.mlp[1] = torch.nn.ReLU()  # a head this module's backward does not describe
    assert not head_layout_known(trainer.model)


def test_mixup_scores_logits_and_nonlinear_mixup_rows(banking, monkeypatch):
    """Both paths give the same numbers, so check which one ran: mixup (one coefficient per
    pair) must take the cheaper mixed-logits path, nonlinear mixup the row path."""
    import trainers.fused_head as fused_head

    calls = []

    def spy(name):
        original = getattr(fused_head, name)

        def recorded(*args):
            calls.append(name)
            return original(*args)
        return recorded

    for name in ("_scalar_mix_backward", "_row_mix_backward"):
        monkeypatch.setattr(fused_head, name, spy(name))
    for strategy in ("mixup", "nonlinear_mixup", "none"):
        trainer = trainer_for(banking, strategy=strategy, mlp_hidden=16)
        features, targets = next(trainer.batches(1))
        trainer.updater.loss(features, targets)
    assert calls == ["_scalar_mix_backward", "_row_mix_backward", "_scalar_mix_backward"]


def test_onehot_is_reused_for_one_batch_and_remade_when_it_changes(banking):
    trainer = trainer_for(banking, strategy="mixup")
    _, targets = next(trainer.batches(1))
    first = trainer.updater.onehot(targets)
    assert trainer.updater.onehot(targets) is first  # the n updates of one batch share it
    targets.copy_(targets.flip(0))  # the same tensor changed in place: not stale
    torch.testing.assert_close(trainer.updater.onehot(targets).argmax(1), targets)
    fresh = targets.clone()
    assert trainer.updater.onehot(fresh) is not trainer.updater.onehot(targets)
