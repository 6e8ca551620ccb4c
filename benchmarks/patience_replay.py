"""Replay early stopping with a smaller patience on a finished sweep's recorded epochs.

A cell trained with ``selection=best_val`` and patience P logged every epoch's validation and
test accuracy. With a patience P' <= P (same epoch budget, so the same learning-rate schedule)
the cell would have followed exactly the same epochs and stopped at the first epoch where
:func:`trainers.budget.should_stop` says so: this script finds that epoch for every cell and
prints, per task × ratio × arm and in total, the training seconds (the sum of the logged
``epoch_seconds`` up to the stop), epochs run, the test accuracy at the epoch P' would select,
and converged cells. Exact for P' <= P; nothing is retrained.

Example (the measurement behind cpu_table1's patience, docs/budget.md)::

    python -m benchmarks.patience_replay --tracking-uri sqlite:///ct1/mlflow.db \\
        --experiment cpu_table1 --patience 2,3,4,5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections import defaultdict

from mlflow import MlflowClient

from trainers import budget
from trainers.config import CellConfig

KEYS = ("val_accuracy", "val_loss", "accuracy", "epoch_seconds")


def histories(client: MlflowClient, experiment: str) -> list[tuple[dict, list[dict]]]:
    """(params, per-epoch metrics) of every FINISHED cell run of the experiment."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r}")
    out = []
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'cell' and "
                              "attributes.status = 'FINISHED'", max_results=5000)
    for run in runs:
        by_step: dict[int, dict] = defaultdict(dict)
        for key in KEYS:
            for m in client.get_metric_history(run.info.run_id, key):
                by_step[m.step][key] = m.value
        out.append((run.data.params, [by_step[s] for s in sorted(by_step)]))
    return out


def replay(params: dict, history: list[dict], patience: int) -> tuple[int, list[dict]]:
    """The epochs a cell trains with ``patience``: (n_train, the history prefix)."""
    config = CellConfig(strategy=params["strategy"], selection="best_val", patience=patience,
                        epochs=int(params["epochs"]), min_updates=int(params["min_updates"]),
                        batch_size=int(params["batch_size"]),
                        mix_samples=int(params.get("mix_samples", 1)),
                        mixup_variant=params.get("mixup_variant", "faithful"))
    n_train = int(params["n_train"])
    for stop in range(1, len(history) + 1):
        if budget.should_stop(config, history[:stop], n_train):
            return n_train, history[:stop]
    return n_train, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--patience", default="2,3,4,5")
    args = parser.parse_args()
    cells = histories(MlflowClient(args.tracking_uri), args.experiment)
    recorded = {int(p["patience"]) for p, _ in cells}
    print(f"{len(cells)} finished cells, recorded with patience {sorted(recorded)}")
    for patience in (int(p) for p in args.patience.split(",")):
        if patience > min(recorded):
            print(f"patience {patience}: larger than recorded, cannot replay")
            continue
        groups: dict[tuple, list] = defaultdict(list)
        for params, history in cells:
            _, kept = replay(params, history, patience)
            config = dataclasses.replace(CellConfig(), selection="best_val", patience=patience)
            chosen = kept[budget.select(kept, "best_val")]
            groups[(params["task"], float(params["ratio"]), params["arm"])].append({
                "seconds": sum(h["epoch_seconds"] for h in kept), "epochs": len(kept),
                "acc": chosen["accuracy"] * 100,
                "converged": budget.converged(config, kept)})
        total = sum(r["seconds"] for rows in groups.values() for r in rows)
        print(f"\npatience {patience}: {total:.0f} s of training in all")
        for (task, ratio, arm), rows in sorted(groups.items()):
            acc = [r["acc"] for r in rows]
            epochs = statistics.mean(r["epochs"] for r in rows)
            std = statistics.stdev(acc) if len(acc) > 1 else 0.0
            print(f"  {task:<10} {ratio:>5g} {arm:<16} epochs {epochs:6.1f}"
                  f"  s {sum(r['seconds'] for r in rows):7.1f}  acc {statistics.mean(acc):6.2f}"
                  f" ± {std:5.2f}  converged {sum(bool(r['converged']) for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
