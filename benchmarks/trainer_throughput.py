"""Training throughput of our CellTrainer vs ``transformers.Trainer``, same model, data, batch.

What it measures: training examples per second in fine-tune mode (strategy ``none``), same
encoder weights (``--model``, default the packaged MiniLM), same tokenized training subset
(``--examples`` examples of ``--task``, truncated at ``--max-length``, dynamic padding to the
longest row of each batch in both), same batch size, same number of epochs, same machine, same
process, same example order in every epoch (the Trainer's sampler is replaced by CellTrainer's
seeded permutation, so dynamic padding costs the same: the table prints the padded tokens per
epoch of each loop). Contenders, interleaved (A, B, ..., then reversed, per repeat; each run
from freshly copied weights):

* ``ours``: ``trainers.loop.CellTrainer.train_epoch`` (its own batching: ``pad_batch`` + ``.to``;
  the encoder run over the real tokens only, :mod:`trainers.unpadded`), per-epoch
  ``epoch_seconds``.
* ``hf``: ``transformers.Trainer`` with the same model (``--hf-model wrapper``: our CellModel
  wrapped in a thin ``nn.Module`` returning ``{"loss", "logits"}``, i.e. identical compute;
  ``--hf-model auto``: ``AutoModelForSequenceClassification`` from the same weights),
  ``DataCollatorWithPadding``, no evaluation, no saving, no logging, ``report_to=[]``,
  default optimizer (``adamw_torch_fused`` in transformers 5); seconds per epoch from a
  callback (``on_epoch_begin``/``on_epoch_end``, device-synced).
* ``ours+padded`` (``--ours-patches``; also ``vecpad``): our loop with a patch applied by a
  benchmark-only subclass: ``padded`` runs the encoder's own forward over the padded batch,
  i.e. what ours was before :mod:`trainers.unpadded`, so the two rows show what unpadding buys.
* ``hf/adamw_torch`` (``--hf-optims default,adamw_torch``): the Trainer with the per-tensor
  AdamW, to separate optimizer from loop overhead.

Each row also prints the mean training loss of its runs (same examples, order and initial
weights; dropout draws differ), the check that the loops train the same function.

Needs ``accelerate>=1.1.0`` (``transformers.Trainer`` requires it; not a project dependency):
``pip install -e ".[bench]"``, ``pip install 'accelerate>=1.1.0'``, or
``pip install --no-deps --target DIR accelerate`` and ``PYTHONPATH=DIR``.

Run (2-core CPU, defaults: about 2 minutes; docs/performance.md has the measured table)::

    HF_HUB_OFFLINE=1 BATCHMIXUP_CACHE_DIR=/tmp/bmcache python -m benchmarks.trainer_throughput
    python -m benchmarks.trainer_throughput --profile   # + torch.profiler table of one epoch

Read: ``examples/s`` = training examples / median epoch seconds (all epochs of all repeats);
``ours / X`` > 1 means our loop is faster; PASS against ``hf`` at ``--target`` (1.2) with
the spreads (min-max epoch seconds) of ours and the Trainer apart.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks._common import (
    default_data_dir,
    hardware_line,
    median,
    pick_device,
    sync,
    table,
)
from trainers.config import CellConfig
from trainers.loop import CellTrainer
from trainers.model import CellModel
from trainers.precision import PRECISIONS, resolve_precision
from trainers.prepare import PreparedCell, prepare_cell


class LossWrapper(nn.Module):
    """Our CellModel behind the ``forward(**batch) -> {"loss", "logits"}`` Trainer contract."""

    def __init__(self, model: CellModel) -> None:
        super().__init__()
        self.cell = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None,
                **_: Any) -> dict[str, Tensor]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        logits = self.cell.scores(self.cell.represent(inputs))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.float(), labels)
        return out


class RowsDataset(torch.utils.data.Dataset):
    """Tokenized rows + labels, as the dicts DataCollatorWithPadding expects."""

    def __init__(self, rows: list[dict[str, list[int]]], labels: Tensor) -> None:
        self.rows, self.labels = rows, labels.tolist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.rows[i], "labels": self.labels[i]}


def vec_pad_batch(rows: list[dict[str, list[int]]], pad_id: int,
                  pin: bool = False) -> dict[str, Tensor]:
    """Proposed ``trainers.cache.pad_batch``: one flat tensor per key and a mask scatter
    instead of one ``torch.tensor`` + slice assignment per row and key; optionally pinned."""
    lengths = torch.tensor([len(r["input_ids"]) for r in rows])
    width = int(lengths.max())
    mask = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    out: dict[str, Tensor] = {}
    for key in rows[0]:
        flat = torch.tensor([t for r in rows for t in r[key]], dtype=torch.long)
        full = torch.full((len(rows), width), pad_id if key == "input_ids" else 0,
                          dtype=torch.long)
        full[mask] = flat
        out[key] = full
    out["attention_mask"] = mask.long()
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


class PatchedTrainer(CellTrainer):
    """CellTrainer with a patch applied (benchmark-only, for measuring what a change buys):
    ``padded`` runs the encoder's own forward instead of :mod:`trainers.unpadded`; ``vecpad``
    a vectorised, pinned ``pad_batch``."""

    def __init__(self, config: CellConfig, prepared: PreparedCell, device: torch.device,
                 patches: set[str]) -> None:
        super().__init__(config, prepared, device)
        self.patches = patches
        self.tokens = 0  # padded training tokens seen
        if "padded" in patches:
            self.model.unpadded = False

    def inputs(self, source: Any, idx: Tensor) -> Any:
        if "vecpad" not in self.patches or isinstance(source, Tensor):
            batch = super().inputs(source, idx)
        else:
            batch = vec_pad_batch([source[i] for i in idx.tolist()], self.data.pad_id,
                                  pin=self.device.type == "cuda")
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if source is self.data.train_inputs:
            self.tokens += batch["input_ids"].numel()
        return batch


def run_ours(config: CellConfig, prepared: PreparedCell, pristine: nn.Module,
             device: torch.device, epochs: int, offset: int,
             patches: set[str] | None = None) -> tuple[list[float], int, float]:
    """Epoch seconds of ``epochs`` epochs (numbered offset+1, ...), padded tokens seen and the
    mean training loss over all their updates."""
    encoder = dataclasses.replace(prepared.encoder, model=copy.deepcopy(pristine))
    mine = dataclasses.replace(prepared, encoder=encoder)
    trainer = PatchedTrainer(config, mine, device, patches or set())
    epochs_out = [trainer.train_epoch(offset + e) for e in range(1, epochs + 1)]
    return ([m["epoch_seconds"] for m in epochs_out], trainer.tokens,
            sum(m["train_loss"] for m in epochs_out) / len(epochs_out))


class SameOrderSampler(torch.utils.data.Sampler):
    """The example order of CellTrainer.batches: epoch k uses ``epoch_seed(seed, k)``."""

    def __init__(self, n: int, seed: int, offset: int) -> None:
        self.n, self.seed, self.epoch = n, seed, offset

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        from trainers.loop import epoch_seed

        self.epoch += 1
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=gen).tolist())


def run_hf(args: argparse.Namespace, prepared: PreparedCell, pristine: nn.Module,
           device: torch.device, optim: str | None, seed: int,
           offset: int = 0) -> tuple[list[float], int, float]:
    """Epoch seconds of a Trainer run, padded tokens seen and its mean training loss. Same
    example order as ours (its train sampler is replaced by :class:`SameOrderSampler`) so
    that dynamic padding does identical work in both loops."""
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = prepared.encoder.tokenizer
    if args.hf_model == "auto":
        from trainers.model import minilm_path

        source = str(minilm_path()) if args.model == "minilm" else args.model
        model: nn.Module = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=len(prepared.labels))
    else:
        torch.manual_seed(seed)
        model = LossWrapper(CellModel(prepared.input_dim, len(prepared.labels),
                                      copy.deepcopy(pristine), prepared.encoder.pooling))

    epoch_s: list[float] = []

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            sync(device)
            self.start = time.perf_counter()

        def on_epoch_end(self, *a: Any, **k: Any) -> None:
            sync(device)
            epoch_s.append(time.perf_counter() - self.start)

    extra = {} if optim is None else {"optim": optim}
    collator = DataCollatorWithPadding(tokenizer)
    tokens = [0]

    def collate(features: list[dict[str, Any]]) -> dict[str, Tensor]:
        batch = collator(features)
        tokens[0] += batch["input_ids"].numel()
        return batch

    n = len(prepared.train_inputs)

    class SameOrderTrainer(Trainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return SameOrderSampler(n, args.seed, offset)

    targs = TrainingArguments(
        output_dir="/tmp/bm-trainer-throughput", eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True,
        per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=2e-5, weight_decay=0.01, max_grad_norm=1.0, seed=seed,
        use_cpu=device.type == "cpu",
        bf16=resolve_precision(args.precision, device) == "bf16",
        remove_unused_columns=False, dataloader_num_workers=0, **extra)
    trainer = SameOrderTrainer(
        model=model, args=targs,
        train_dataset=RowsDataset(prepared.train_inputs, prepared.train_targets),
        data_collator=collate, callbacks=[EpochTimer()])
    out = trainer.train()
    return epoch_s, tokens[0], float(out.training_loss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="banking77", choices=("rte", "banking77", "fewrel"))
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="default $BATCHMIXUP_DATA_DIR or ../shared/data")
    parser.add_argument("--examples", type=int, default=256, help="fixed training subset size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (both loops)")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved runs per contender")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--hf-model", default="wrapper", choices=("wrapper", "auto"))
    parser.add_argument("--hf-optims", default="default",
                        help="Trainer optim settings to compare (default = Trainer's default)")
    parser.add_argument("--ours-patches", default="padded",
                        help="also run our loop with patches: padded (the encoder's own forward "
                             "instead of trainers.unpadded: what unpadding buys), vecpad "
                             "(vectorised pad_batch, pinned on CUDA); '' = none")
    parser.add_argument("--target", type=float, default=1.2,
                        help="PASS when ours is this many times the Trainer's speed and the "
                             "spreads do not overlap")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="encoder forward precision (trainers.precision); every contender "
                             "runs in the same one")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler table of one epoch of each loop")
    args = parser.parse_args(argv)

    import transformers
    from transformers.utils import logging as hf_logging

    try:
        import accelerate  # noqa: F401  (transformers.Trainer needs it)
    except ImportError:
        raise SystemExit("transformers.Trainer needs accelerate>=1.1.0: "
                         "pip install 'accelerate>=1.1.0'") from None

    hf_logging.set_verbosity_error()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(hardware_line(device) + f", transformers {transformers.__version__}")
    print(f"precision: {args.precision} -> {resolve_precision(args.precision, device)}")
    config = CellConfig(task=args.task, model=args.model, mode="finetune", seed=args.seed,
                        max_length=args.max_length, batch_size=args.batch_size,
                        epochs=args.epochs * (args.repeats + 1), device=device.type,
                        precision=args.precision, data_dir=args.data_dir).validate()
    full = prepare_cell(config, device)
    n_all = len(full.train_targets)
    subset = torch.randperm(n_all, generator=torch.Generator().manual_seed(args.seed))
    subset = subset[: args.examples].tolist()
    prepared = dataclasses.replace(full, train_inputs=[full.train_inputs[i] for i in subset],
                                   train_targets=full.train_targets[torch.tensor(subset)],
                                   eval_inputs=[], eval_targets=full.eval_targets[:0])
    pristine = copy.deepcopy(full.encoder.model)
    del full
    lengths = [len(r["input_ids"]) for r in prepared.train_inputs]
    print(f"task {args.task}: {len(subset)} examples (token lengths {min(lengths)}-"
          f"{max(lengths)}, mean {sum(lengths) / len(lengths):.1f}), {len(prepared.labels)} "
          f"classes; model {args.model}, hf model {args.hf_model}; batch {args.batch_size}, "
          f"max_length {args.max_length}, {args.epochs} epochs x {args.repeats} repeats\n")

    optims = [o.strip() for o in args.hf_optims.split(",") if o.strip()]
    patched = [p.strip() for p in args.ours_patches.split(",") if p.strip()]
    contenders = (["ours"] + [f"ours+{p}" for p in patched] +
                  [("hf" if o == "default" else f"hf/{o}") for o in optims])

    def run(name: str, r: int) -> tuple[list[float], int, float]:
        if name.startswith("ours"):
            patches = set(name.split("+")[1:])
            return run_ours(config, prepared, pristine, device, args.epochs, r * args.epochs,
                            patches)
        optim = None if name == "hf" else name.split("/", 1)[1]
        return run_hf(args, prepared, pristine, device, optim, args.seed + r, r * args.epochs)

    seconds: dict[str, list[float]] = {c: [] for c in contenders}
    tokens: dict[str, int] = {c: 0 for c in contenders}
    losses: dict[str, list[float]] = {c: [] for c in contenders}
    for r in range(args.repeats):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for name in order:
            times, seen, loss = run(name, r)
            seconds[name] += times
            tokens[name] += seen
            losses[name].append(loss)
        print(f"repeat {r + 1}/{args.repeats}: " +
              ", ".join(f"{c} " + "/".join(f"{s:.2f}" for s in seconds[c][-args.epochs:]) + "s"
                        for c in contenders), flush=True)

    n = len(subset)
    ours = median(seconds["ours"])
    rows = []
    for c in contenders:
        med = median(seconds[c])
        apart = max(seconds["ours"]) < min(seconds[c]) or max(seconds[c]) < min(seconds["ours"])
        rows.append([c, f"{med:.3f}", f"{min(seconds[c]):.2f}-{max(seconds[c]):.2f}",
                     "-" if c == "ours" else ("no" if apart else "yes"),
                     f"{n / med:.1f}", tokens[c] // (args.repeats * args.epochs),
                     f"{median(losses[c]):.4f}", f"{med / ours:.3f}",
                     "-" if not c.startswith("hf") else
                     "PASS" if med / ours >= args.target and apart else "FAIL"])
    print()
    print(table(["loop", "median epoch s", "spread", "spreads overlap ours", "examples/s",
                 "padded tokens/epoch", "train loss", "ours speed / loop speed",
                 f"target >= {args.target:g}"], rows))
    print("train loss: median over repeats of the mean loss of a run's updates (same examples, "
          "order and initial weights; dropout draws differ)")
    print(hardware_line(device).split(", ")[-1] + " (at the end)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                         else [])
        for name in ("ours", "hf"):
            with profile(activities=acts) as prof:
                if name == "ours":
                    run_ours(config, prepared, pristine, device, 1, 0)
                else:
                    args.epochs, epochs = 1, args.epochs
                    run_hf(args, prepared, pristine, device, None, args.seed)
                    args.epochs = epochs
            print(f"\n--- torch.profiler, one run of {name} (top 15 by self CPU time)")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
