"""The toy experiment of the paper's Figure 1: 5-shot classification of two 2-D Gaussians.

Yin et al. (Section 5, "Results and Analysis") generate two Gaussian classes in 2-D, sample 5
training examples per class and train an MLP for 100 epochs; Figure 1 compares the learned
hyperplanes without mixing and with BatchMixup. The paper gives neither the means nor the
covariances, so this module fixes its own.

Distribution
------------
Two anisotropic, rotated and overlapping Gaussians (class 0 ``orange``, class 1 ``blue``).
Each covariance is ``R(theta) diag(major**2, minor**2) R(theta)^T``:

=========  ==============  =============  =============  ==========================
class      mean            major std      minor std      major axis angle (theta)
=========  ==============  =============  =============  ==========================
orange     (-1.2, 0.0)     3.0            0.7            60 degrees
blue       ( 1.2, 0.0)     2.4            0.6            50 degrees
=========  ==============  =============  =============  ==========================

i.e. ``Sigma_orange = [[2.6175, 3.6849], [3.6849, 6.8725]]`` and
``Sigma_blue = [[2.5911, 2.6590], [2.6590, 3.5289]]`` (see :data:`COVARIANCES`).

The long axes point up and to the right while the means differ along x, so the classes overlap
heavily along x and are separated only along the (rotated) minor axes. Five points per class
scatter mostly along the long axes, so a boundary fitted to them is often tilted away from the
Bayes boundary. Measured with 200,000 points per class (numpy seed 0):

* Bayes-optimal accuracy (QDA with the true parameters): **0.932** (0.937 on the fixed
  4,000-point test set).
* A hard-margin linear SVM on 5 shots per class (200 draws): mean 0.877, median 0.899,
  10th percentile 0.803 -- hard but learnable, with room for a regulariser to help.

Sampling
--------
* Training set of a cell: ``shots`` points per class from
  ``numpy.random.default_rng([seed, TRAIN_STREAM])``, orange first then blue. Different seeds
  give different training points; the same seed always gives the same points.
* Test set: ``test_per_class`` points per class from ``default_rng([TEST_SEED, TEST_STREAM])``,
  *independent of the cell seed*, so every seed and strategy is evaluated on the same test set
  (seed-to-seed variance then comes only from the 10 training points and the training run).

The loop of ``task == "toy2d"`` (see :mod:`trainers.prepare`) feeds ``features`` as the raw
input of the model; the MLP block ``mlp_hidden`` produces v(x), which the strategies mix.
:func:`decision_grid` / :func:`write_decision_grid` export the learned decision function on a
grid for a Figure 1-style plot.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.data import TaskData

LABELS = ("orange", "blue")
TRAIN_STREAM = 2021_0801  # second entropy word of the per-seed training stream
TEST_SEED = 2021  # the test set's fixed seed (independent of the cell seed)
TEST_STREAM = 7  # second entropy word of the test stream


def _rotated_covariance(major: float, minor: float, degrees: float) -> np.ndarray:
    """``R diag(major^2, minor^2) R^T`` with R the rotation by ``degrees``."""
    theta = math.radians(degrees)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return rot @ np.diag([major**2, minor**2]) @ rot.T


# (major std, minor std, major axis angle in degrees) of each class, index = label.
SHAPES: tuple[tuple[float, float, float], ...] = ((3.0, 0.7, 60.0), (2.4, 0.6, 50.0))
MEANS: np.ndarray = np.array([[-1.2, 0.0], [1.2, 0.0]])
COVARIANCES: np.ndarray = np.stack([_rotated_covariance(*shape) for shape in SHAPES])


@dataclass(frozen=True)
class ToyExample:
    """One labelled 2-D point (``label`` 0 = orange, 1 = blue).

    ``text`` and ``text_pair`` make it quack like :class:`trainers.data.Example` so that
    :meth:`trainers.data.TaskData.fingerprint` works.
    """

    features: tuple[float, float]
    label: int

    @property
    def text(self) -> str:
        """The features' repr (exact float round trip), for fingerprinting."""
        return repr(self.features)

    @property
    def text_pair(self) -> None:
        """Always None: a toy point is never a sentence pair."""
        return None


def _sample(rng: np.random.Generator, per_class: int) -> list[ToyExample]:
    """``per_class`` points of each class, orange first."""
    examples: list[ToyExample] = []
    for label in range(len(LABELS)):
        points = rng.multivariate_normal(MEANS[label], COVARIANCES[label], size=per_class)
        examples += [ToyExample((float(a), float(b)), label) for a, b in points]
    return examples


def load_toy2d(seed: int, shots: int = 5, test_per_class: int = 2000) -> TaskData:
    """The toy task of one seed: ``shots`` training points per class and the fixed test set.

    Args:
        seed: the cell seed; picks the training points (the test set does not depend on it).
        shots: training points per class (the paper: 5).
        test_per_class: test points per class.

    Returns:
        ``TaskData`` named ``toy2d`` with labels ``["orange", "blue"]``; its examples are
        :class:`ToyExample`.
    """
    if shots < 1 or test_per_class < 1:
        raise ValueError(f"shots and test_per_class must be >= 1, got {shots}, {test_per_class}")
    train = _sample(np.random.default_rng([seed, TRAIN_STREAM]), shots)
    test = _sample(np.random.default_rng([TEST_SEED, TEST_STREAM]), test_per_class)
    return TaskData(name="toy2d", labels=list(LABELS), train=train,  # type: ignore[arg-type]
                    test=test, is_pair=False, source="synthetic:toy2d")  # type: ignore[arg-type]


def decision_grid(
    model: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    resolution: int = 150,
    margin: float = 1.0,
) -> dict[str, Any]:
    """The model's P(blue) on a regular grid covering the training points and class means.

    Args:
        model: a :class:`trainers.model.CellModel` (anything with ``represent`` and ``scores``)
            trained on raw 2-D inputs.
        train_x: ``[N, 2]`` training inputs.
        train_y: ``[N]`` training labels.
        resolution: grid points per axis.
        margin: added on every side of the bounding box of training points and means.

    Returns:
        JSON-serializable dict: ``x`` and ``y`` (grid coordinates, ``resolution`` each),
        ``prob_blue`` (``resolution x resolution``, row i is ``y[i]``, column j is ``x[j]``),
        ``train`` (``{"x": [[a, b], ...], "label": [...]}``), ``labels``, ``means`` and
        ``covariances`` of the generating Gaussians.
    """
    points = train_x.detach().cpu().double().numpy().reshape(-1, 2)
    box = np.vstack([points, MEANS])
    low, high = box.min(axis=0) - margin, box.max(axis=0) + margin
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    gx, gy = np.meshgrid(xs, ys)  # [resolution (y), resolution (x)]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.float32,
                        device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            scores = model.scores(model.represent(grid)).float()  # type: ignore[operator]
            prob = torch.softmax(scores, dim=-1)[:, 1].cpu().numpy()
    finally:
        model.train(was_training)
    return {
        "x": xs.tolist(),
        "y": ys.tolist(),
        "prob_blue": prob.reshape(resolution, resolution).astype(float).tolist(),
        "train": {"x": points.tolist(),
                  "label": [int(v) for v in train_y.detach().cpu().reshape(-1).tolist()]},
        "labels": list(LABELS),
        "means": MEANS.tolist(),
        "covariances": COVARIANCES.tolist(),
    }


def _round(value: Any, digits: int) -> Any:
    """``value`` with every float rounded to ``digits`` decimals (lists and dicts recursed)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, list):
        return [_round(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    return value


def write_decision_grid(
    model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, path: Path
) -> Path:
    """Write :func:`decision_grid` as compact JSON (floats rounded to 4 decimals) to ``path``.

    Parent directories are created. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _round(decision_grid(model, train_x, train_y), 4)
    path.write_text(json.dumps(data, separators=(",", ":")))
    return path
