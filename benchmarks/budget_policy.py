"""Measure training-budget policies on real cells: which one lets every arm converge, fairly.

For each (task, ratio, strategy) and seed it trains one cell per policy in-process (frozen
features, the ``cpu_table1`` head unless overridden) and prints, per policy, the test accuracy
of the reported epoch (mean ± std over seeds, percent), the optimizer updates made and at the
reported epoch, how many cells converged (``trainers.budget.converged``) and the training
seconds. Policies (``--policies``, comma-separated):

* ``epochs10``: 10 epochs, last epoch (the old ``cpu_table1``);
* ``equal600``: the last epoch after at least 600 updates (no validation split);
* ``long``: the last epoch of a long fixed run on the full subset (``--long-updates``, default
  3000 updates): the "trained to convergence" reference;
* ``policy``: the preset's policy (``--preset``, default ``cpu_table1``): whatever its
  ``selection``, ``patience``, ``min_updates`` and ``epochs`` say;
* ``policy_last``: the policy's training split and budget, but the last epoch reported
  (isolates what selection on validation does);
* ``policy_long``: the policy's training split (validation examples carved out, unused), the
  last epoch of ``--long-updates`` updates: "converged" on the same data as ``policy``, so
  ``policy`` − ``policy_long`` is what the policy's early stopping costs.

Example (the measurement behind the ``cpu_table1`` policy, docs/budget.md, "Measurements")::

    python -m benchmarks.budget_policy --data-dir ../shared/data --tasks banking77 \\
        --ratios 0.01,0.1 --strategies none,batchmixup,mixup --seeds 0,1,2 --workers 2
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from orchestrator.spaces import load_sweep, resolve_source

POLICIES = ("epochs10", "equal600", "long", "policy", "policy_last", "policy_long")


def policy_settings(policy: str, preset: dict[str, Any], long_updates: int) -> dict[str, Any]:
    """CellConfig overrides of one policy, on top of the preset's cell settings."""
    base = {"selection": "last", "patience": 0, "min_updates": 0, "checkpoint_every": 0}
    if policy == "epochs10":
        return {**base, "epochs": 10}
    if policy == "equal600":
        return {**base, "epochs": 1, "min_updates": 600}
    if policy == "long":
        return {**base, "epochs": 1, "min_updates": long_updates}
    keys = ("selection", "patience", "min_updates", "epochs", "val_fraction",
            "val_min_examples", "val_max_fraction")
    chosen = {k: preset[k] for k in keys if k in preset}
    if policy == "policy":
        return {**base, **chosen}
    last = {**base, **chosen, "selection": "last", "patience": 0, "eval_split": "test",
            "_carve": True}
    if policy == "policy_last":  # same split and budget, no selection or early stopping
        return last
    if policy == "policy_long":  # same split, a long fixed run, last epoch
        return {**last, "epochs": 1, "min_updates": long_updates}
    raise SystemExit(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")


def run_one(values: dict[str, Any]) -> dict[str, float]:
    """Train one cell in this process; its result metrics and training seconds."""
    import torch

    from trainers.config import CellConfig
    from trainers.loop import train_cell

    torch.set_num_threads(1)
    carve = values.pop("_carve", False)
    config = CellConfig.from_dict(values)
    if carve:  # the policy's validation carve without selecting on it: the last epoch
        config.selection = "best_val"
        config.patience = 0
        from trainers import budget, loop

        original, init = budget.select, loop.CellTrainer.__init__

        def test_every_epoch(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            self.test_every_epoch = True  # the last epoch is reported: test it

        budget.select = lambda history, selection: len(history) - 1  # type: ignore[assignment]
        loop.CellTrainer.__init__ = test_every_epoch  # type: ignore[method-assign]
        try:
            result = train_cell(config, log=lambda line: None)
        finally:
            budget.select = original  # type: ignore[assignment]
            loop.CellTrainer.__init__ = init  # type: ignore[method-assign]
    else:
        result = train_cell(config, log=lambda line: None)
    final = result.final
    return {"test_accuracy": final["test_accuracy"] * 100, "updates": final["updates"],
            "selected_updates": final["selected_updates"],
            "converged": final.get("converged", math.nan),
            "seconds": sum(h["epoch_seconds"] for h in result.history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("BATCHMIXUP_DATA_DIR"))
    parser.add_argument("--tasks", default="banking77")
    parser.add_argument("--ratios", default="0.01,0.1")
    parser.add_argument("--strategies", default="none,batchmixup,mixup")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--preset", default="cpu_table1", help="search_spaces preset whose "
                        "cell settings and policy are used")
    parser.add_argument("--long-updates", type=int, default=3000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a cell setting of every run (strings as in a sweep)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    sweep = load_sweep(resolve_source(args.preset, None))
    extra = dict(item.split("=", 1) for item in args.set)
    jobs: list[tuple[tuple, dict[str, Any]]] = []
    for task in args.tasks.split(","):
        for ratio in (float(r) for r in args.ratios.split(",")):
            for strategy in args.strategies.split(","):
                for policy in args.policies.split(","):
                    for seed in (int(s) for s in args.seeds.split(",")):
                        values = {**sweep.settings, **sweep.strategy_settings.get(strategy, {}),
                                  **policy_settings(policy, sweep.settings, args.long_updates),
                                  **extra, "task": task, "ratio": ratio, "strategy": strategy,
                                  "seed": seed, "data_dir": args.data_dir}
                        jobs.append(((task, ratio, strategy, policy), values))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run_one, [values for _, values in jobs]))
    groups: dict[tuple, list[dict[str, float]]] = {}
    for (key, _), res in zip(jobs, results, strict=True):
        groups.setdefault(key, []).append(res)
    print(f"{'task':<10} {'ratio':>6} {'strategy':<16} {'policy':<12} {'test acc %':<16} "
          f"{'updates':>8} {'at result':>9} {'converged':>9} {'train s':>8}")
    for (task, ratio, strategy, policy), rows in groups.items():
        acc = [r["test_accuracy"] for r in rows]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        conv = [r["converged"] for r in rows if not math.isnan(r["converged"])]
        print(f"{task:<10} {ratio:>6g} {strategy:<16} {policy:<12} "
              f"{statistics.mean(acc):6.2f} ± {std:5.2f}   "
              f"{statistics.mean(r['updates'] for r in rows):8.0f} "
              f"{statistics.mean(r['selected_updates'] for r in rows):9.0f} "
              f"{(f'{int(sum(conv))}/{len(conv)}' if conv else '—'):>9} "
              f"{statistics.mean(r['seconds'] for r in rows):8.1f}")
    print(f"({len(jobs)} cells in {time.perf_counter() - start:.0f} s, {args.workers} workers)")


if __name__ == "__main__":
    main()
