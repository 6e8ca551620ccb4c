"""Frozen-mode head updates: the fused update (trainers.fused_head) vs autograd, in one process.

What it measures: ``CellTrainer.train_epoch``'s ``epoch_seconds`` for the cells of
``search_spaces/cpu_table1.yaml`` (MiniLM frozen features, 256-wide MLP head, batch 32, one
thread as the trainer uses for frozen cells), once with ``fused=False`` (autograd,
``optimizer.step()``, ``clip_grad_norm_``) and once with the fused update, epochs interleaved
(autograd, fused, autograd, fused, ...) so both see the same machine load. It prints seconds per
optimizer update for each and their ratio, and checks that both ended with the same training
loss (they make the same random draws, so they follow the same trajectory up to rounding).

Run (a few minutes on a 2-core CPU)::

    HF_HUB_OFFLINE=1 python -m benchmarks.head_update --data-dir ../shared/data

``--profile`` then runs one more fused faithful-mixup epoch under ``torch.profiler`` and prints
its operators (the kernel floor quoted in docs/performance.md, "Fused frozen-head updates").
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from benchmarks._common import cpu_table1_config, default_data_dir, hardware_line, median, table
from trainers.loop import CellTrainer, updates_per_batch
from trainers.prepare import prepare_cell

ARMS = [
    ("none", {}),
    ("mixup faithful n=15", {"strategy": "mixup", "mix_samples": 15,
                             "mixup_variant": "faithful"}),
    ("nonlinear_mixup faithful n=15", {"strategy": "nonlinear_mixup", "mix_samples": 15,
                                       "mixup_variant": "faithful"}),
    ("mixup shared n=15", {"strategy": "mixup", "mix_samples": 15, "mixup_variant": "shared"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="banking77")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per path and arm")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-length", type=int, default=None, help="default: cpu_table1's")
    parser.add_argument("--mlp-hidden", type=int, default=None, help="default: cpu_table1's")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one fused faithful-mixup epoch (torch.profiler)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as trainers.loop.train_cell does for frozen features
    device = torch.device("cpu")
    given = {k: v for k, v in (("max_length", args.max_length),
                               ("mlp_hidden", args.mlp_hidden)) if v is not None}
    base = cpu_table1_config(args.task, args.ratio, "none", args.data_dir or default_data_dir(),
                             **given)
    prepared = prepare_cell(base, device)
    print(hardware_line(device))
    print(f"task {args.task} ratio {args.ratio}: {len(prepared.train_targets)} training "
          f"examples, features d={prepared.input_dim}, MLP {base.mlp_hidden}, "
          f"batch {base.batch_size}; {args.epochs} interleaved epochs per path")
    rows = []
    for label, overrides in ARMS:
        config = dataclasses.replace(base, **overrides).validate()
        pair = {fused: CellTrainer(config, dataclasses.replace(prepared), device, fused=fused)
                for fused in (False, True)}
        seconds: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        for epoch in range(1, args.epochs + 1):
            for fused, trainer in pair.items():
                metrics = trainer.train_epoch(epoch)
                seconds[fused].append(metrics["epoch_seconds"])
                losses[fused] = metrics["train_loss"]
        updates = pair[True].batches_per_epoch * updates_per_batch(config)
        autograd_ms = 1e3 * median(seconds[False]) / updates
        fused_ms = 1e3 * median(seconds[True]) / updates
        rows.append([label, f"{updates}", f"{autograd_ms:.3f}", f"{fused_ms:.3f}",
                     f"{autograd_ms / fused_ms:.2f}x",
                     f"{losses[False]:.4f} / {losses[True]:.4f}"])
        print(f"  {label}: done", flush=True)
    print(table(["arm", "updates/epoch", "autograd ms/update", "fused ms/update", "speed-up",
                 f"train loss after epoch {args.epochs} (autograd / fused)"], rows))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        config = dataclasses.replace(base, **dict(ARMS)["mixup faithful n=15"]).validate()
        trainer = CellTrainer(config, dataclasses.replace(prepared), device, fused=True)
        trainer.train_epoch(1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train_epoch(2)
        updates = trainer.batches_per_epoch * updates_per_batch(config)
        print(f"fused faithful mixup, one epoch = {updates} updates; per-call averages:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
