"""Accuracy and cost of every strategy (and BatchMixup's losses) on one task, via the trainer.

Runs cells exactly as ``python -m trainers.run_cell`` does (same config, same loop), over
seeds and ratios, and prints a markdown table: accuracy mean ± std over seeds, mean epoch
seconds, and the mean norm of the representations v(x) and of the label vectors W at the end
(the paper's dot-product loss is unbounded in both norms; this shows what each loss does).

Command (the numbers in docs/design.md, "Choosing batchmixup's loss")::

    python -m benchmarks.cell_table --task banking77 --ratios 0.01,0.1 --seeds 0,1,2 \\
        --data-dir ../shared/data --mode frozen --epochs 10
"""

from __future__ import annotations

import argparse
import statistics

import torch

from trainers.config import CellConfig
from trainers.device import pick_device
from trainers.loop import CellTrainer
from trainers.precision import PRECISIONS
from trainers.prepare import prepare_cell

ARMS = [
    ("none", {}),
    ("mixup", {}),
    ("nonlinear_mixup", {}),
    ("batchmixup", {"loss": "soft_ce"}),
    ("batchmixup", {"loss": "dot"}),
    ("batchmixup", {"loss": "cosine"}),
    ("batchmixup", {"loss": "dot", "clean_loss": False}),
    ("batchmixup", {"loss": "soft_ce", "clean_loss": False}),
]


def run(config: CellConfig) -> dict[str, float]:
    torch.set_num_threads(1)  # as trainers.loop.train_cell does for frozen features
    device = pick_device(config.device)
    trainer = CellTrainer(config, prepare_cell(config.validate(), device), device)
    history = []
    for epoch in range(1, config.epochs + 1):
        history.append({**trainer.train_epoch(epoch), **trainer.evaluate()})
    with torch.no_grad():
        trainer.model.eval()
        v = trainer.model.represent(trainer.data.eval_inputs[:512])
        v_norm = float(v.norm(dim=-1).mean())
        w_norm = float(trainer.model.label_vectors.norm(dim=-1).mean())
    return {"accuracy": history[-1]["accuracy"],
            "epoch_seconds": statistics.mean(h["epoch_seconds"] for h in history),
            "v_norm": v_norm, "w_norm": w_norm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="banking77")
    parser.add_argument("--ratios", default="0.01,0.1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--mode", default="frozen")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--mlp-hidden", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="encoder precision (frozen: of the cached features)")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"task={args.task} mode={args.mode} model={args.model} epochs={args.epochs} "
          f"head_lr={args.head_lr} mlp_hidden={args.mlp_hidden} precision={args.precision} "
          f"seeds={seeds}; torch threads "
          f"{torch.get_num_threads()}")
    print("| strategy | loss | clean CE | ratio | accuracy % | epoch s | mean ‖v‖ | mean ‖w‖ |")
    print("|---|---|---|---|---|---|---|---|")
    for ratio in ratios:
        for strategy, extra in ARMS:
            rows = [run(CellConfig(task=args.task, ratio=ratio, strategy=strategy, seed=seed,
                                   mode=args.mode, model=args.model, epochs=args.epochs,
                                   max_length=args.max_length, head_lr=args.head_lr,
                                   mlp_hidden=args.mlp_hidden, data_dir=args.data_dir,
                                   precision=args.precision, **extra)) for seed in seeds]
            config = CellConfig(strategy=strategy, **extra)
            acc = [r["accuracy"] * 100 for r in rows]
            std = statistics.stdev(acc) if len(acc) > 1 else 0.0
            print(f"| {strategy} | {config.resolved_loss} | {config.clean_loss} | {ratio:g} | "
                  f"{statistics.mean(acc):.2f} ± {std:.2f} | "
                  f"{statistics.mean(r['epoch_seconds'] for r in rows):.3f} | "
                  f"{statistics.mean(r['v_norm'] for r in rows):.1f} | "
                  f"{statistics.mean(r['w_norm'] for r in rows):.1f} |", flush=True)


if __name__ == "__main__":
    main()
