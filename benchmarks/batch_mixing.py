"""BatchMixup's mixing (Eq. 3-4): einsum vs the broadcast product of ``mix_batch``, in one process.

What it measures, with the two forms interleaved (A, B, A, B, ... medians):

1. The mixing alone, forward + backward, at MiniLM's and RoBERTa-large's widths
   (n = b = 32): ``einsum`` (``torch.einsum("ndb,bd->nd", ...)`` for inputs and labels, as
   ``trainers.strategies.mix_batch`` computed them before, kept here verbatim) against the
   current ``mix_batch`` (product with the transposed batch, summed over the batch axis). Both
   must give the same mixed points and the same gradients (checked, printed).
2. A whole frozen-mode BatchMixup update of ``search_spaces/cpu_table1.yaml``'s cell
   (MiniLM features, 256-wide MLP head, batch 32, one thread): ``CellTrainer.train_epoch``'s
   ``epoch_seconds`` with ``mix_batch`` swapped for the einsum form vs as shipped, and the
   training loss each ended with (same draws, so the same trajectory up to rounding).

Run (about a minute on a 2-core CPU)::

    HF_HUB_OFFLINE=1 python -m benchmarks.batch_mixing --data-dir ../shared/data
    python -m benchmarks.batch_mixing --device cuda --skip-update
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

import trainers.strategies as strategies
import trainers.strategies.builtin.batchmixup as batchmixup_module
from benchmarks._common import (
    cpu_table1_config,
    default_data_dir,
    hardware_line,
    median,
    pick_device,
    table,
    timed,
)
from trainers.strategies import MixedBatch


def einsum_mix_batch(weights: Tensor, representations: Tensor, label_vectors: Tensor,
                     onehot: Tensor) -> MixedBatch:
    """``mix_batch`` before commit "BatchMixup mixing as a broadcast product", verbatim."""
    weights = weights.to(representations.dtype)
    inputs = torch.einsum("ndb,bd->nd", weights, representations)
    labels = torch.einsum("ndb,bd->nd", weights, label_vectors)
    class_weights = weights.mean(dim=1).to(onehot.dtype) @ onehot
    return MixedBatch(inputs=inputs, labels=labels, class_weights=class_weights)


FORMS = {"einsum": einsum_mix_batch, "mix_batch": strategies.mix_batch}


def mixing_step(form, weights: Tensor, v: Tensor, w: Tensor, onehot: Tensor):
    """Forward and backward of one mixing (soft-CE-like use: inputs and labels both used)."""
    v.grad = w.grad = None
    mixed = form(weights, v, w, onehot)
    (mixed.inputs * mixed.labels).sum().backward()
    return mixed.inputs.detach(), v.grad, w.grad


def bench_mixing(device: torch.device, rounds: int) -> list[list[str]]:
    rows = []
    for label, d in (("MiniLM", 384), ("RoBERTa-large", 1024)):
        n = b = 32
        torch.manual_seed(0)
        weights = strategies.batchmixup_policy(n, d, b, alpha=1.0, device=device)
        v = torch.randn(b, d, device=device, requires_grad=True)
        w = torch.randn(b, d, device=device, requires_grad=True)
        onehot = F.one_hot(torch.randint(0, 8, (b,), device=device), 8).float()
        outs = {name: [t.clone() for t in mixing_step(form, weights, v, w, onehot)]
                for name, form in FORMS.items()}
        same = all(torch.allclose(a, c, rtol=1e-4, atol=1e-5)
                   for a, c in zip(outs["einsum"], outs["mix_batch"], strict=True))
        seconds: dict[str, list[float]] = {name: [] for name in FORMS}
        for _ in range(rounds):
            for name, form in FORMS.items():
                args = (form, weights, v, w, onehot)
                seconds[name].append(timed(lambda a=args: mixing_step(*a), device, calls=20))
        before, after = median(seconds["einsum"]), median(seconds["mix_batch"])
        rows.append([f"{label} (n d b = {n} {d} {b})", f"{1e6 * before:.1f}",
                     f"{1e6 * after:.1f}", f"{before / after:.2f}x", "yes" if same else "NO"])
    return rows


def bench_update(data_dir: str, epochs: int) -> list[list[str]]:
    from trainers.loop import CellTrainer
    from trainers.prepare import prepare_cell

    torch.set_num_threads(1)  # as trainers.loop.train_cell does for frozen features
    device = torch.device("cpu")
    config = cpu_table1_config("banking77", 0.25, "batchmixup", data_dir)
    prepared = prepare_cell(config, device)
    trainers = {name: CellTrainer(config, dataclasses.replace(prepared), device)
                for name in FORMS}
    seconds: dict[str, list[float]] = {name: [] for name in FORMS}
    losses: dict[str, float] = {}
    shipped = batchmixup_module.mix_batch
    try:
        for epoch in range(1, epochs + 1):
            for name, trainer in trainers.items():
                # batchmixup() (trainers/strategies/builtin/batchmixup.py) looks it up at call time
                batchmixup_module.mix_batch = FORMS[name]
                metrics = trainer.train_epoch(epoch)
                seconds[name].append(metrics["epoch_seconds"])
                losses[name] = metrics["train_loss"]
    finally:
        batchmixup_module.mix_batch = shipped
    updates = trainers["einsum"].batches_per_epoch
    before = 1e3 * median(seconds["einsum"]) / updates
    after = 1e3 * median(seconds["mix_batch"]) / updates
    return [[f"banking77 25 %, {updates} updates/epoch", f"{before:.3f}", f"{after:.3f}",
             f"{before / after:.2f}x", f"{losses['einsum']:.4f} / {losses['mix_batch']:.4f}"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (mixing part)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (mixing)")
    parser.add_argument("--epochs", type=int, default=3, help="interleaved epochs (update)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--skip-update", action="store_true",
                        help="only the mixing part (no data or encoder needed)")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    print(hardware_line(device))
    print("Eq. 3-4 mixing, forward + backward (inputs and labels):")
    print(table(["shape", "einsum us", "mix_batch us", "speed-up", "same values and grads"],
                bench_mixing(device, args.rounds)))
    if not args.skip_update:
        print(f"\nFrozen-mode BatchMixup update (cpu_table1 head), {args.epochs} interleaved "
              "epochs each:")
        print(table(["cell", "einsum ms/update", "mix_batch ms/update", "speed-up",
                     f"train loss after epoch {args.epochs} (einsum / mix_batch)"],
                    bench_update(args.data_dir or default_data_dir(), args.epochs)))


if __name__ == "__main__":
    main()
