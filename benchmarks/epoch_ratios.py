"""Epoch-time ratios of the mixing strategies vs ``none`` (fine-tune mode), in one process.

What it measures: ``CellTrainer.train_epoch``'s ``epoch_seconds`` (training steps only: no
evaluation, no checkpoint) of one epoch over a fixed training subset, for

* ``none`` (the baseline),
* ``batchmixup`` (n = b new points, one forward, one update): target ratio <= 1.05,
* ``mixup`` and ``nonlinear_mixup`` with ``mix_samples`` n (default 15), in both variants:
  ``faithful`` (the paper: n forward passes and n updates per batch): target ratio ~= n
  (within 15%), the mechanism of the paper's "1.5 min vs ~20 min per epoch on RTE with
  beta sampled 15 times"; ``shared`` (one forward, the mean of n mixed losses, one update):
  target <= 1.10.

Every strategy trains its own copy of the same encoder (same initial weights) on the same
subset (``--examples`` examples drawn once with ``--seed``), same batch size. By default every
batch is padded to exactly ``--max-length`` tokens (a benchmark-only subclass of CellTrainer
whose ``inputs`` indexes pre-padded tensors on the device), so all strategies do identical
encoder work per forward; ``--dynamic-padding`` uses the loop's own per-batch padding instead.
The strategies are interleaved after one untimed warm-up update each and one untimed epoch of
``none``, in a sandwich design:
every repeat runs ``none, X, none, Y, none, ...`` (X, Y, ... in a rotating order), and X's ratio
in that repeat is its epoch time over the mean of the two ``none`` epochs around it, which
cancels slow drifts of the load of a shared machine.

``--mfu`` adds each strategy's model FLOP utilisation (``benchmarks/mfu.py``: the FLOPs the
encoder needs for the subset's real tokens, times n forward passes for faithful mixup, over the
epoch time and the GPU's dense bf16 peak) and ``--epoch-target S`` checks ``none``'s epoch.

Run (2-core CPU, defaults: about 2-3 minutes)::

    HF_HUB_OFFLINE=1 BATCHMIXUP_CACHE_DIR=/tmp/bmcache python -m benchmarks.epoch_ratios

The GPU measurement of the performance issue (RoBERTa-large architecture, random init, the whole
RTE training set, bf16, one H100: epoch <= 4 s, MFU, and the batchmixup and mixup (n = 15)
ratios)::

    python -m benchmarks.epoch_ratios --device cuda --model random:roberta-large \\
        --examples 0 --max-length 128 --dynamic-padding --precision bf16 \\
        --strategies batchmixup,mixup/faithful --repeats 2 --mfu --epoch-target 4

Read: ``ratio vs none`` = median over repeats of the sandwiched ratio (what PASS/FAIL uses);
``ratio of medians`` = median epoch seconds / median epoch seconds of ``none`` (should agree on
a quiet machine); ``spread`` is min-max of the epoch seconds (noise on shared machines; the
load average is printed at the start and at the end). ``--threads 1`` can steady timings on a
loaded CPU.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from benchmarks._common import default_data_dir, hardware_line, median, pick_device, table
from benchmarks.mfu import encoder_training_flops, mfu, peak_tflops
from trainers.config import CellConfig
from trainers.loop import CellTrainer
from trainers.precision import PRECISIONS, resolve_precision
from trainers.prepare import PreparedCell, prepare_cell


class FixedLengthTrainer(CellTrainer):
    """CellTrainer whose training batches are pre-padded to exactly ``max_length`` tokens."""

    def __init__(self, config: CellConfig, prepared: PreparedCell, device: torch.device,
                 fixed: dict[str, Tensor] | None) -> None:
        super().__init__(config, prepared, device)
        self.fixed = None if fixed is None else {k: v.to(device) for k, v in fixed.items()}

    def inputs(self, source: Any, idx: Tensor) -> Any:
        if self.fixed is not None and source is self.data.train_inputs:
            rows = idx.to(self.device, non_blocking=True)
            return {k: v[rows] for k, v in self.fixed.items()}
        return super().inputs(source, idx)


def pad_fixed(rows: list[dict[str, list[int]]], pad_id: int, length: int) -> dict[str, Tensor]:
    """Tokenized rows (already truncated to ``length``) padded to exactly ``length``."""
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    types = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        mask[i, :k] = 1
        if "token_type_ids" in r:
            types[i, :k] = torch.tensor(r["token_type_ids"])
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in rows[0]:
        out["token_type_ids"] = types
    return out


def variants(n: int) -> list[tuple[str, str, str, int, str]]:
    """(label, strategy, mixup_variant, mix_samples, target) of every compared strategy."""
    return [
        ("none", "none", "-", 1, "1 (baseline)"),
        ("batchmixup", "batchmixup", "-", 1, "<= 1.05"),
        ("mixup/faithful", "mixup", "faithful", n, f"~= {n} (+-15%)"),
        ("mixup/shared", "mixup", "shared", n, "<= 1.10"),
        ("nonlinear/faithful", "nonlinear_mixup", "faithful", n, f"~= {n} (+-15%)"),
        ("nonlinear/shared", "nonlinear_mixup", "shared", n, "<= 1.10"),
    ]


def passes(ratio: float, target: str, n: int) -> bool:
    if target.startswith("<="):
        return ratio <= float(target.split()[1])
    if target.startswith("~="):
        return abs(ratio / n - 1) <= 0.15
    return True


def mfu_table(chosen: list[tuple[str, str, str, int, str]], seconds: dict[str, list[float]],
              model_config: object, lengths: list[int], peak: float | None) -> str:
    """Model FLOPs per epoch, achieved model TFLOP/s and MFU of every strategy (the encoder's
    FLOPs only: n passes per batch for faithful mixup, one otherwise)."""
    rows = []
    for label, _, variant, n, _ in chosen:
        n_passes = n if variant == "faithful" else 1
        flops = encoder_training_flops(model_config, lengths, n_passes)
        med = median(seconds[label])
        util = mfu(flops, med, peak)
        rows.append([label, f"{flops / 1e12:.4g}", f"{flops / med / 1e12:.4g}",
                     "-" if util is None else f"{100 * util:.4g} %"])
    peak_text = f"peak {peak:g} TFLOP/s (dense bf16)" if peak else "no peak known: --peak-tflops"
    return (table(["strategy", "model TFLOP per epoch", "model TFLOP/s", "MFU"], rows)
            + f"\n({peak_text}; real tokens only, {sum(lengths)} per epoch)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the measurement; print the tables; return the numbers (for benchmarks.gpu_check)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="rte", choices=("rte", "banking77", "fewrel"),
                        help="rte: the task of the paper's timing claim")
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="default $BATCHMIXUP_DATA_DIR or ../shared/data")
    parser.add_argument("--examples", type=int, default=64,
                        help="fixed training subset size (0: the whole training set)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per strategy")
    parser.add_argument("--model", default="minilm",
                        help="minilm (packaged), random:roberta-large, a hub name or directory")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--mix-samples", type=int, default=15, help="n of (nonlinear) mixup")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="Beta concentration (0.5: exercises the non-uniform sampler)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", default="",
                        help="comma-separated labels to run (default all; none always runs)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="encoder forward precision (trainers.precision); every contender "
                             "runs in the same one")
    parser.add_argument("--dynamic-padding", action="store_true",
                        help="use the loop's own per-batch dynamic padding")
    parser.add_argument("--mfu", action="store_true",
                        help="also print model TFLOP/s and MFU per strategy (benchmarks/mfu.py)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak for --mfu (default: datasheet value "
                             "of a known GPU)")
    parser.add_argument("--epoch-target", type=float, default=None,
                        help="check that none's median epoch takes at most this many seconds")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(hardware_line(device))
    print(f"precision: {args.precision} -> {resolve_precision(args.precision, device)}")
    base = CellConfig(task=args.task, model=args.model, mode="finetune", seed=args.seed,
                      max_length=args.max_length, batch_size=args.batch_size,
                      epochs=args.repeats + 1, alpha=args.alpha, device=device.type,
                      precision=args.precision, data_dir=args.data_dir).validate()
    t0 = time.perf_counter()
    prepared = prepare_cell(base, device)
    n_all = len(prepared.train_targets)
    if not 0 <= args.examples <= n_all:
        raise SystemExit(f"--examples must be in [0, {n_all}] (0: all training examples of "
                         f"{args.task}), got {args.examples}")
    args.examples = args.examples or n_all
    gen = torch.Generator().manual_seed(args.seed)
    subset = torch.randperm(n_all, generator=gen)[: args.examples].tolist()
    rows = [prepared.train_inputs[i] for i in subset]
    targets = prepared.train_targets[torch.tensor(subset)]
    fixed = None if args.dynamic_padding else pad_fixed(rows, prepared.pad_id, args.max_length)
    lengths = [len(r["input_ids"]) for r in rows]
    print(f"task {args.task}: {args.examples} of {n_all} training examples, "
          f"{len(prepared.labels)} classes; model {args.model} (d={prepared.input_dim}), "
          f"mode finetune, batch {args.batch_size}, "
          f"{'dynamic padding' if fixed is None else f'every batch padded to {args.max_length}'}"
          f" (token lengths {min(lengths)}-{max(lengths)}, mean {sum(lengths) / len(rows):.1f});"
          f" alpha {args.alpha}, n {args.mix_samples}; loaded in {time.perf_counter() - t0:.1f}s")

    wanted = {s.strip() for s in args.strategies.split(",") if s.strip()}
    chosen = [v for v in variants(args.mix_samples) if not wanted or v[0] in wanted or
              v[0] == "none"]
    pristine = prepared.encoder.model
    model_config = pristine.config
    trainers: dict[str, CellTrainer] = {}
    for label, strategy, variant, n, _ in chosen:
        config = dataclasses.replace(base, strategy=strategy, mix_samples=n,
                                     mixup_variant="faithful" if variant == "-" else variant)
        encoder = dataclasses.replace(prepared.encoder, model=copy.deepcopy(pristine))
        mine = dataclasses.replace(prepared, train_inputs=rows, train_targets=targets,
                                   encoder=encoder)
        trainer = FixedLengthTrainer(config.validate(), mine, device, fixed)
        inputs, y = next(trainer.batches(0))  # untimed warm-up update
        trainer.update(inputs, y)
        trainers[label] = trainer
    del prepared, pristine

    # Sandwich design: none, X, none, Y, none, ... per repeat; X's ratio in that repeat is
    # t_X / mean(the two none epochs around it), robust to slow drifts of machine load.
    seconds: dict[str, list[float]] = {label: [] for label in trainers}
    paired: dict[str, list[float]] = {label: [] for label in trainers}
    others = [label for label in trainers if label != "none"]
    epoch = 0

    def run(label: str) -> float:
        nonlocal epoch
        epoch += 1
        return trainers[label].train_epoch(epoch)["epoch_seconds"]

    # One untimed epoch of none first: a GPU's first pass over the batch shapes pays for
    # allocator growth and kernel selection, which would inflate repeat 1's first none epoch.
    run("none")
    for r in range(args.repeats):
        order = others[r % len(others):] + others[: r % len(others)] if others else []
        before = run("none")
        seconds["none"].append(before)
        for label in order:
            t = run(label)
            after = run("none")
            seconds[label].append(t)
            seconds["none"].append(after)
            paired[label].append(t / ((before + after) / 2))
            before = after
        print(f"repeat {r + 1}/{args.repeats}: " +
              ", ".join(f"{k} {seconds[k][-1]:.2f}s" for k in others) +
              f"; none {min(seconds['none']):.2f}-{max(seconds['none']):.2f}s", flush=True)

    base_s = median(seconds["none"])
    out = []
    result: dict[str, Any] = {"examples": args.examples, "hardware": hardware_line(device),
                              "none_epoch_seconds": base_s, "strategies": {}}
    for label, strategy, variant, n, target in chosen:
        med = median(seconds[label])
        ratio = median(paired[label]) if label != "none" else 1.0
        result["strategies"][label] = {
            "median_epoch_seconds": med, "ratio_vs_none": ratio, "target": target,
            "pass": passes(ratio, target, n), "seconds": seconds[label]}
        out.append([strategy, variant, n, f"{med:.3f}",
                    f"{min(seconds[label]):.2f}-{max(seconds[label]):.2f}",
                    f"{med / base_s:.3f}", f"{ratio:.3f}",
                    target, "PASS" if passes(ratio, target, n) else "FAIL"])
    print()
    print(table(["strategy", "variant", "n", "median epoch s", "spread", "ratio of medians",
                 "ratio vs none", "target", "result"], out))
    if args.mfu:
        peak = peak_tflops(device, args.peak_tflops)
        print()
        print(mfu_table(chosen, seconds, model_config, lengths, peak))
        for label, _, variant, n, _ in chosen:
            flops = encoder_training_flops(model_config, lengths, n if variant == "faithful"
                                           else 1)
            result["strategies"][label]["mfu"] = mfu(flops, median(seconds[label]), peak)
    if args.epoch_target is not None:
        verdict = "PASS" if base_s <= args.epoch_target else "FAIL"
        print(f"\nnone: one epoch of {args.examples} examples in {base_s:.3f} s (median); "
              f"target <= {args.epoch_target:g} s: {verdict}")
    print(hardware_line(device).split(", ")[-1] + " (at the end)")
    return result


if __name__ == "__main__":
    main()
