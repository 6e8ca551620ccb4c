"""``python -m trainers.run_cell``: train and evaluate one cell, no Ray, no MLflow.

Prints one line per epoch and, at the end, one JSON line with the final metrics. Bad input
(unknown task/strategy/model, ratio outside (0, 1], alpha <= 0, epochs < 1, missing or malformed
data) prints one line ``error: ...`` on stderr and exits with code 2.

Example::

    python -m trainers.run_cell --task banking77 --ratio 0.01 --strategy batchmixup --seed 0 \\
        --epochs 3 --model minilm --mode frozen --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from trainers.config import (
    DEVICES,
    EVAL_SPLITS,
    MIXUP_VARIANTS,
    MODES,
    POOLINGS,
    CellConfig,
)
from trainers.errors import CellError, TrainingDiverged
from trainers.paths import check_writable_dir
from trainers.precision import PRECISIONS
from trainers.strategies import LOSSES, describe_strategies, known_names
from trainers.tasks import TASKS

HELP = {
    "task": f"task: {', '.join(TASKS)}",
    "ratio": "share of the training set, in (0, 1] (paper: 1, .75, .5, .25, .01)",
    "strategy": f"mixing strategy: {', '.join(known_names())}, or a plug-in as "
                "package.module:NAME (see below and docs/strategies.md)",
    "seed": "seed of the training subset, init, data order and mixing policies",
    "model": "minilm (packaged, offline), a hub name (roberta-large), a local directory, "
             "or random:<tiny|minilm|roberta-large> (random init, for tests/timing)",
    "mode": f"{' or '.join(MODES)}: train the encoder (paper) or only MLP+W on cached features",
    "pooling": f"{', '.join(POOLINGS)} (auto: mean for sentence-transformers, else CLS)",
    "mlp_hidden": "width of the optional MLP block before W (0 = none)",
    "max_length": "tokenizer truncation length (padding is dynamic)",
    "epochs": "epoch budget (>= 1): exact, unless --min-updates raises it or --patience "
              "stops earlier",
    "selection": "which epoch the result comes from: last (the paper) or best_val (best "
                 "validation accuracy on a split carved from the training subset)",
    "patience": "best_val: stop after this many epochs without a better validation score "
                "(0 = never stop early); best epoch >= patience epochs before the last = "
                "converged",
    "min_updates": "at least this many optimizer updates whatever the ratio (raises the epoch "
                   "budget; early stopping waits for them)",
    "val_min_examples": "smallest validation split (examples)",
    "val_max_fraction": "largest validation split (share of the training subset)",
    "checkpoint_every": "checkpoint every k epochs; 0 = at most every ~10 s",
    "batch_size": "mini-batch size b",
    "lr": "encoder learning rate (AdamW)",
    "head_lr": "learning rate of the MLP block and W",
    "weight_decay": "AdamW weight decay",
    "warmup_ratio": "share of steps with linear warmup, then linear decay",
    "grad_clip": "max gradient norm (0 = no clipping)",
    "alpha": "Beta(alpha, alpha) concentration of every mixing strategy (> 0)",
    "mix_samples": "n for (nonlinear) mixup: beta drawn n times per batch (paper: 15)",
    "mixup_variant": f"{' or '.join(MIXUP_VARIANTS)}: n forwards+updates per batch (paper) or "
                     "one forward, n losses, one update (beyond the paper)",
    "batchmix_points": "BatchMixup's n new points per batch (0 = batch size)",
    "temperature": "BatchMixup softmax temperature (1 = paper's Eq. 3)",
    "mix_layers": "encoder layers k a batch mixes at (tmix): auto (MixText's {7,9,12} scaled "
                  "to the encoder's depth) or a list such as 7,9,12; 0 = embedding output",
    "loss": f"mixed loss: {', '.join(LOSSES)} or auto (the strategy's default loss)",
    "clean_loss": "add cross-entropy on the original batch to the mixed loss (true/false)",
    "eval_split": f"{' or '.join(EVAL_SPLITS)}: evaluate on the test set, or on a validation "
                  "split carved from the training subset (test never touched)",
    "val_fraction": "share of the training subset held out as the validation split "
                    "(--eval-split val or --selection best_val)",
    "none_relations": "FewRel relations relabelled 'None' (paper: 5 of 80)",
    "dropout": "dropout on v(x)",
    "eval_batch_size": "batch size of evaluation and feature extraction",
    "device": f"{', '.join(DEVICES)}",
    "precision": f"{', '.join(PRECISIONS)}: encoder forward passes in fp32 or bf16 autocast "
                 "(auto: bf16 on GPUs and CPUs with native bf16, else fp32)",
    "data_dir": "folder laid out like shared/data (default: $BATCHMIXUP_DATA_DIR, else the "
                "Hugging Face hub)",
    "train_file": "task custom: training CSV/JSONL (text[, text_pair], label)",
    "test_file": "task custom: test CSV/JSONL",
    "cache_dir": "cache of frozen features and tokens (default: $BATCHMIXUP_CACHE_DIR or "
                 "~/.cache/batchmixup)",
}


class RawEpilogFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the options' help, the epilog's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.run_cell",
        description="Train and evaluate one BatchMixup cell (task, ratio, strategy, seed) and "
                    "print its metrics: one line per epoch, then a final JSON line.",
        formatter_class=RawEpilogFormatter,
        epilog="strategies (site; the settings each reads):\n" + describe_strategies(),
    )
    defaults = CellConfig()
    for f in fields(CellConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        # Values stay strings here; CellConfig.from_dict parses and checks them against each
        # field's declared type and range, so every error is one line naming the option.
        parser.add_argument(flag, dest=f.name, default=default, help=HELP.get(f.name, f.name),
                            metavar=f.name.upper())
    parser.add_argument("--checkpoint-dir", default=None,
                        help="write state.pt here after each epoch (default: a temp dir)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from --checkpoint-dir/state.pt if it exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    checkpoint_dir = args.pop("checkpoint_dir")
    resume = args.pop("resume")
    try:
        config = CellConfig.from_dict(args).validate()
        if checkpoint_dir:
            check_writable_dir("--checkpoint-dir", checkpoint_dir)
        check_writable_dir("--cache-dir", config.resolved_cache_dir())
        from trainers.loop import train_cell  # heavy imports only after the flags are valid

        result = train_cell(config, checkpoint_dir=checkpoint_dir,
                            resume_from=checkpoint_dir if resume else None,
                            log=lambda line: print(line, flush=True))
    except (CellError, TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary(), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
