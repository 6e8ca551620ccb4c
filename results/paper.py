"""Published numbers from the BatchMixup paper, used as the reference column of the report.

Source: Wenpeng Yin, Huan Wang, Jin Qu and Caiming Xiong. "BatchMixup: Improving Training by
Interpolating Hidden States of the Entire Mini-batch". Findings of ACL-IJCNLP 2021.
Transcribed from the copy in ``shared/paper/batchmixup-paper.md``: Table 1 (test accuracy in
percent, mean ± std over three random seeds, RoBERTa-large encoder) and the efficiency remark in
the last paragraph of Section 5.

Paper names are mapped to this project's names:

* rows: "RoBERTa-large" -> ``none``, "w/ MIXUP" -> ``mixup``,
  "w/ Nonlinear Mixup" -> ``nonlinear_mixup``, "w/ BATCHMIXUP" -> ``batchmixup``;
* columns: "entailment" (RTE) -> ``rte``, "relation" (FewRel) -> ``fewrel``,
  "intent" (BANKING77) -> ``banking77``;
* "#training data" 100%, 75%, 50%, 25%, 1% -> ratios 1.0, 0.75, 0.5, 0.25, 0.01.
"""

from __future__ import annotations

CITATION = (
    "Yin, Wang, Qu and Xiong. BatchMixup: Improving Training by Interpolating Hidden States "
    "of the Entire Mini-batch. Findings of ACL-IJCNLP 2021 (Table 1; Section 5)."
)

TASKS: tuple[str, ...] = ("rte", "fewrel", "banking77")
"""The paper's tasks, in the paper's column order."""

STRATEGIES: tuple[str, ...] = ("none", "mixup", "nonlinear_mixup", "batchmixup")
"""The paper's systems, in the paper's row order."""
MARKERS: dict[str, str] = {"none": "o", "mixup": "s", "nonlinear_mixup": "^", "batchmixup": "D"}
"""Each paper strategy's fixed plot marker (other arms cycle through the rest)."""

RATIOS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.01)
"""The paper's training-data fractions, in the paper's row order."""

# (ratio, strategy) -> {task: (mean %, std %)}, Table 1.
TABLE1: dict[tuple[float, str], dict[str, tuple[float, float]]] = {
    (1.0, "none"): {"rte": (80.91, 1.47), "fewrel": (87.24, 1.52), "banking77": (93.77, 0.44)},
    (1.0, "mixup"): {"rte": (82.03, 1.69), "fewrel": (87.91, 0.34), "banking77": (93.41, 1.24)},
    (1.0, "nonlinear_mixup"): {
        "rte": (82.98, 1.17),
        "fewrel": (88.41, 0.73),
        "banking77": (94.29, 1.01),
    },
    (1.0, "batchmixup"): {
        "rte": (83.56, 0.90),
        "fewrel": (90.04, 0.33),
        "banking77": (94.94, 0.20),
    },
    (0.75, "none"): {"rte": (80.07, 1.27), "fewrel": (87.49, 0.31), "banking77": (90.31, 1.11)},
    (0.75, "mixup"): {"rte": (80.53, 1.31), "fewrel": (87.87, 0.12), "banking77": (92.44, 1.98)},
    (0.75, "nonlinear_mixup"): {
        "rte": (80.90, 0.39),
        "fewrel": (87.66, 0.81),
        "banking77": (93.00, 1.84),
    },
    (0.75, "batchmixup"): {
        "rte": (82.00, 0.91),
        "fewrel": (88.41, 0.54),
        "banking77": (93.55, 1.58),
    },
    (0.5, "none"): {"rte": (77.50, 0.82), "fewrel": (82.83, 4.92), "banking77": (85.11, 2.88)},
    (0.5, "mixup"): {"rte": (75.19, 6.07), "fewrel": (87.00, 0.18), "banking77": (87.09, 2.06)},
    (0.5, "nonlinear_mixup"): {
        "rte": (77.66, 1.90),
        "fewrel": (87.79, 0.29),
        "banking77": (88.13, 2.92),
    },
    (0.5, "batchmixup"): {
        "rte": (79.47, 2.07),
        "fewrel": (88.29, 0.22),
        "banking77": (90.13, 2.20),
    },
    (0.25, "none"): {"rte": (70.92, 4.04), "fewrel": (78.95, 0.33), "banking77": (80.95, 2.22)},
    (0.25, "mixup"): {"rte": (71.70, 5.66), "fewrel": (82.02, 0.59), "banking77": (84.95, 1.19)},
    (0.25, "nonlinear_mixup"): {
        "rte": (72.14, 4.27),
        "fewrel": (83.71, 0.12),
        "banking77": (85.44, 2.02),
    },
    (0.25, "batchmixup"): {
        "rte": (74.36, 2.82),
        "fewrel": (86.66, 0.26),
        "banking77": (87.71, 1.38),
    },
    (0.01, "none"): {"rte": (50.41, 0.29), "fewrel": (3.41, 0.74), "banking77": (42.21, 5.54)},
    (0.01, "mixup"): {"rte": (51.74, 0.84), "fewrel": (49.93, 2.71), "banking77": (50.21, 3.21)},
    (0.01, "nonlinear_mixup"): {
        "rte": (51.41, 0.43),
        "fewrel": (55.29, 4.78),
        "banking77": (52.21, 1.49),
    },
    (0.01, "batchmixup"): {
        "rte": (51.46, 1.43),
        "fewrel": (60.29, 2.18),
        "banking77": (55.21, 1.77),
    },
}

BASELINE: dict[str, float] = {"rte": 50.16, "fewrel": 1.31, "banking77": 1.29}
"""Table 1's last row, "random or majority baseline" (accuracy %, no std)."""

# Section 5, last paragraph: on one Tesla V100, one RTE epoch takes about 1.5 min for both
# RoBERTa-large and BatchMixup, and about 20 min for MIXUP and Nonlinear MIXUP when beta is
# sampled 15 times per point pair.
EFFICIENCY_HARDWARE = "Tesla V100"
EFFICIENCY_TASK = "rte"
EFFICIENCY_MIX_SAMPLES = 15
EFFICIENCY_MINUTES: dict[str, float] = {
    "none": 1.5,
    "batchmixup": 1.5,
    "mixup": 20.0,
    "nonlinear_mixup": 20.0,
}
"""Approximate minutes per RTE epoch ("about 1.5min", "~20 mins")."""
PAIRWISE = ("mixup", "nonlinear_mixup")
"""The paper's strategies whose ~20 min are for 15 samples per pair, each its own update."""

DESCRIPTIONS: dict[str, tuple[str, str, str]] = {
    "none": ("none", "unmixed", "nowhere"),
    "mixup": ("mixup", "pairwise", "pooled"),
    "nonlinear_mixup": ("nonlinear mixup", "pairwise", "pooled"),
    "batchmixup": ("BatchMixup", "batch", "pooled"),
}
"""(label, family, site) of the paper's strategies, for runs recorded before the strategy tags
(``strategy_label``, ``strategy_family``, ``strategy_site``) existed."""


def paper_cell(ratio: float, strategy: str, task: str) -> tuple[float, float] | None:
    """Return the paper's (mean %, std %) for one Table 1 cell, or None if the paper has none."""
    for paper_ratio in RATIOS:
        if abs(paper_ratio - ratio) < 1e-9:
            return TABLE1.get((paper_ratio, strategy), {}).get(task)
    return None


def paper_time_ratio(strategy: str, mix_samples: str = "",
                     variant: str = "") -> float | None:
    """Return the paper's epoch-time ratio of ``strategy`` to ``none`` (e.g. 20/1.5 for mixup),
    or None where the paper has none: another strategy, or (nonlinear) mixup with another
    sample count than 15 or not one update per sample (``mixup_variant=faithful``).

    Args:
        strategy: the run's strategy (tag ``strategy``).
        mix_samples, variant: its ``mix_samples`` and ``mixup_variant`` params ("" when the
            strategy does not read them).
    """
    if strategy not in EFFICIENCY_MINUTES:
        return None
    if strategy in PAIRWISE and (mix_samples != str(EFFICIENCY_MIX_SAMPLES)
                                 or variant not in ("faithful", "")):
        return None
    return EFFICIENCY_MINUTES[strategy] / EFFICIENCY_MINUTES["none"]


# The setting behind every number above (Section 4 "Baselines"; footnote 3): the pretrained
# RoBERTa-large encoder fine-tuned with a logistic-regression head, on the paper's label sets.
MODEL = "roberta-large"
MODE = "finetune"
LABELS: dict[str, int] = {"rte": 2, "fewrel": 76, "banking77": 77}
"""Label-set sizes: RTE entailment vs not; FewRel 80 relations of which 5 are relabelled
"None" ("75+None", 76 labels); BANKING77's 77 intents."""
SETTING = "RoBERTa-large fine-tuned"
SETTING_LONG = (
    "RoBERTa-large fine-tuned; labels: RTE 2, FewRel 76 (75 relations + None), BANKING77 77"
)


def is_paper_model(model: str) -> bool:
    """True for the pretrained RoBERTa-large under any hub spelling (``roberta-large``,
    ``FacebookAI/roberta-large``, a local copy named so); not for ``random:roberta-large``."""
    name = model.strip().lower().rstrip("/")
    if name.startswith("random:"):
        return False
    return name.rsplit("/", 1)[-1] == MODEL


def matches_setting(task: str, model: str, mode: str, num_labels: str | int | None) -> bool:
    """Whether a run's recorded setting is the paper's for ``task``: RoBERTa-large, fine-tuned,
    on the paper's label set (a run without a recorded label count never matches)."""
    if task not in LABELS or not is_paper_model(model) or mode != MODE:
        return False
    try:
        return int(str(num_labels)) == LABELS[task]
    except ValueError:
        return False
