"""Tests of trainers.data on the real shared data files and on malformed copies of them."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.data import (
    Example,
    TaskData,
    fewrel_text,
    load_task,
    resolve_data_dir,
    subsample_indices,
    validation_split,
)
from trainers.errors import ConfigError, DataError
from trainers.tasks import TASKS

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rte(data_dir: Path) -> TaskData:
    return load_task("rte", data_dir)


@pytest.fixture(scope="module")
def banking77(data_dir: Path) -> TaskData:
    return load_task("banking77", data_dir)


@pytest.fixture(scope="module")
def fewrel(data_dir: Path) -> TaskData:
    return load_task("fewrel", data_dir)


def copy_task(data_dir: Path, tmp_path: Path, task: str) -> Path:
    """A writable copy of one task folder; returns the new data root."""
    root = tmp_path / "data"
    shutil.copytree(data_dir / task, root / task)
    for path in (root / task).iterdir():
        path.chmod(0o644)
    return root


# ----------------------------------------------------------------------------- real files


def test_tasks_registry() -> None:
    assert set(TASKS) >= {"rte", "banking77", "fewrel", "custom"}


def test_rte_real(rte: TaskData) -> None:
    assert (len(rte.train), len(rte.test)) == (2490, 277)
    assert rte.labels == ["entailment", "not_entailment"]
    assert rte.is_pair and rte.source.startswith("local:")
    assert all(ex.text and ex.text_pair for ex in rte.train + rte.test)
    assert set(Counter(ex.label for ex in rte.train)) == {0, 1}
    first = rte.train[0]
    assert first.text == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert first.label == 1
    # sentences with double quotes stay intact under QUOTE_NONE
    assert any('"' in ex.text for ex in rte.train)


def test_banking77_real(banking77: TaskData, data_dir: Path) -> None:
    assert (len(banking77.train), len(banking77.test)) == (10003, 3080)
    assert len(banking77.labels) == 77
    categories = json.loads((data_dir / "banking77" / "categories.json").read_text())
    assert banking77.labels == categories
    assert not banking77.is_pair
    assert {ex.label for ex in banking77.train} == set(range(77))
    assert all(ex.text_pair is None and ex.text for ex in banking77.train)
    assert any("," in ex.text for ex in banking77.train)  # quoted commas survive


def test_fewrel_real(fewrel: TaskData) -> None:
    assert len(fewrel.train) + len(fewrel.test) == 16 * 700
    assert (len(fewrel.train), len(fewrel.test)) == (16 * 560, 16 * 140)
    assert len(fewrel.labels) == 16 and fewrel.labels[-1] == "None"
    assert fewrel.labels[:-1] == sorted(fewrel.labels[:-1])
    counts = Counter(ex.label for ex in fewrel.test)
    assert set(counts.values()) == {140}  # one None relation, so every label has 140
    for ex in fewrel.train[:200] + fewrel.test[:200]:
        assert ex.text.count(" @ ") + ex.text.startswith("@ ") + ex.text.endswith(" @") == 2
        assert ex.text.count("#") >= 2


def test_fewrel_split_is_seeded_per_task(data_dir: Path, fewrel: TaskData) -> None:
    again = load_task("fewrel", data_dir)
    assert again.test == fewrel.test and again.fingerprint() == fewrel.fingerprint()
    other = load_task("fewrel", data_dir, fewrel_split_seed=7)
    assert {ex.text for ex in other.test} != {ex.text for ex in fewrel.test}


def test_fewrel_none_relations(data_dir: Path) -> None:
    none0 = load_task("fewrel", data_dir, none_relations=0)
    assert len(none0.labels) == 16 and "None" not in none0.labels
    none5 = load_task("fewrel", data_dir, none_relations=5)
    assert len(none5.labels) == 12 and none5.labels[-1] == "None"
    assert Counter(ex.label for ex in none5.test)[11] == 5 * 140
    for bad in (-1, 16):
        with pytest.raises(ConfigError, match="none_relations"):
            load_task("fewrel", data_dir, none_relations=bad)


def test_fewrel_merges_train_wiki(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "fewrel")
    inst = {"tokens": ["A", "is", "in", "B", "."], "h": ["a", "Q1", [[0]]], "t": ["b", "Q2", [[3]]]}
    (root / "fewrel" / "train_wiki.json").write_text(json.dumps({"P9998": [inst] * 10}))
    data = load_task("fewrel", root)
    assert len(data.train) + len(data.test) == 16 * 700 + 10
    assert len(data.labels) == 17
    assert "A @ is in # B # ." not in {ex.text for ex in data.train}
    assert "@ A @ is in # B # ." in {ex.text for ex in data.train + data.test}


def test_fewrel_text_markers() -> None:
    tokens = ["Paris", "is", "in", "France"]
    assert fewrel_text(tokens, (0, 0), (3, 3)) == "@ Paris @ is in # France #"
    assert fewrel_text(tokens, (2, 3), (0, 1)) == "# Paris is # @ in France @"


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BATCHMIXUP_DATA_DIR", raising=False)
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("BATCHMIXUP_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir("/elsewhere") == Path("/elsewhere")


# ----------------------------------------------------------------------------- malformed input


def test_unknown_task() -> None:
    with pytest.raises(ConfigError, match="unknown task 'mnli'.*rte, banking77, fewrel"):
        load_task("mnli", "/nonexistent")


def test_missing_file(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "rte")
    (root / "rte" / "dev.tsv").unlink()
    with pytest.raises(DataError, match=r"missing file .*rte/dev\.tsv"):
        load_task("rte", root)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing directory .*banking77"):
        load_task("banking77", tmp_path)
    with pytest.raises(DataError, match="missing data directory"):
        load_task("banking77", tmp_path / "nowhere")


def test_empty_file(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "banking77")
    (root / "banking77" / "test.csv").write_text("")
    with pytest.raises(DataError, match=r"empty file .*banking77/test\.csv"):
        load_task("banking77", root)


def test_missing_column(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "banking77")
    path = root / "banking77" / "train.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("text,intent\n" + "".join(lines[1:]))
    with pytest.raises(DataError, match=r"train\.csv: missing column 'category'"):
        load_task("banking77", root)


def test_truncated_json(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "fewrel")
    path = root / "fewrel" / "val_wiki.json"
    path.write_text(path.read_text()[:5000])
    with pytest.raises(DataError, match=r"val_wiki\.json: invalid JSON"):
        load_task("fewrel", root)


def test_bad_label(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "rte")
    path = root / "rte" / "train.tsv"
    lines = path.read_text().splitlines(keepends=True)
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\tmaybe\n"
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"train\.tsv: label 'maybe' at line 6"):
        load_task("rte", root)


def test_wrong_field_count(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "rte")
    path = root / "rte" / "dev.tsv"
    path.write_text(path.read_text() + "999\tonly one sentence\n")
    with pytest.raises(DataError, match=r"dev\.tsv: line 279 has 2 fields, expected 4"):
        load_task("rte", root)


def test_empty_text(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "banking77")
    path = root / "banking77" / "test.csv"
    path.write_text(path.read_text() + ",card_arrival\n")
    with pytest.raises(DataError, match=r"test\.csv: empty 'text'"):
        load_task("banking77", root)


def test_banking77_without_categories(data_dir: Path, tmp_path: Path) -> None:
    root = copy_task(data_dir, tmp_path, "banking77")
    (root / "banking77" / "categories.json").unlink()
    data = load_task("banking77", root)
    assert data.labels == sorted(data.labels) and len(data.labels) == 77


def test_fewrel_bad_entity(tmp_path: Path) -> None:
    (tmp_path / "fewrel").mkdir()
    bad = {"tokens": ["a", "b"], "h": ["a", "Q1", [[0]]], "t": ["b", "Q2", [[5]]]}
    (tmp_path / "fewrel" / "val_wiki.json").write_text(json.dumps({"P1": [bad], "P2": [bad]}))
    with pytest.raises(DataError, match=r"val_wiki\.json: entity token index out of range"):
        load_task("fewrel", tmp_path)


# ----------------------------------------------------------------------------- hub fallback


def test_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BATCHMIXUP_DATA_DIR", raising=False)
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_task("rte")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert "--data-dir" in message and "BATCHMIXUP_DATA_DIR" in message
    assert "'nyu-mll/glue'" in message
    with pytest.raises(DataError, match="'my/fewrel'"):
        load_task("fewrel", hub_names={"fewrel": "my/fewrel"})


def test_hub_rows_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub code path, with load_dataset replaced by in-memory datasets."""
    datasets = pytest.importorskip("datasets")
    label = datasets.ClassLabel(names=["entailment", "not_entailment"])
    glue = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "label": label,
        }
    )
    rte_rows = {"sentence1": ["a b", "c d"], "sentence2": ["a", "e"], "label": [0, 1]}
    test_rows = {"sentence1": ["x"], "sentence2": ["y"], "label": [-1]}
    entity = {"text": "a", "type": "Q1", "indices": [[0]]}
    fewrel_rows = {
        "relation": ["P1", "P1", "P2", "P2", "P3", "P3"],
        "tokens": [["A", "in", "B"]] * 6,
        "head": [entity] * 6,
        "tail": [{"text": "b", "type": "Q2", "indices": [[2]]}] * 6,
    }
    hub = {
        ("nyu-mll/glue", "rte"): datasets.DatasetDict(
            train=datasets.Dataset.from_dict(rte_rows, features=glue),
            validation=datasets.Dataset.from_dict(rte_rows, features=glue),
            test=datasets.Dataset.from_dict(test_rows, features=glue),
        ),
        ("thunlp/few_rel", None): datasets.DatasetDict(
            val_wiki=datasets.Dataset.from_dict(fewrel_rows)
        ),
    }
    calls: list[tuple[str, str | None]] = []

    def fake_load(path: str, config: str | None = None) -> object:
        calls.append((path, config))
        return hub[(path, config)]

    monkeypatch.setattr("trainers.data.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.delenv("BATCHMIXUP_DATA_DIR", raising=False)
    rte_hub = load_task("rte")
    assert rte_hub.source == "hub:nyu-mll/glue:rte" and rte_hub.is_pair
    assert rte_hub.labels == ["entailment", "not_entailment"]
    assert rte_hub.test == [Example("a b", "a", 0), Example("c d", "e", 1)]
    fewrel_hub = load_task("fewrel", fewrel_test_fraction=0.5)
    assert fewrel_hub.labels[-1] == "None" and len(fewrel_hub.labels) == 3
    assert len(fewrel_hub.train) == len(fewrel_hub.test) == 3
    assert fewrel_hub.train[0].text == "@ A @ in # B #"
    assert calls == [("nyu-mll/glue", "rte"), ("thunlp/few_rel", None)]


# ----------------------------------------------------------------------------- custom task


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PAIR_ROWS = [
    {"text": 'He said "hi", then left', "text_pair": "He left", "label": "yes"},
    {"text": "It rains", "text_pair": "It is dry", "label": "no"},
]
SINGLE_ROWS = [{"text": "good, really", "label": "pos"}, {"text": "bad", "label": "neg"}]


@pytest.mark.parametrize("writer,suffix", [(write_csv, ".csv"), (write_jsonl, ".jsonl")])
def test_custom_pair_and_single(tmp_path: Path, writer, suffix: str) -> None:
    train = writer(tmp_path / f"train{suffix}", PAIR_ROWS)
    test = writer(tmp_path / f"test{suffix}", PAIR_ROWS[:1])
    pair = load_task("custom", train_file=train, test_file=test)
    assert pair.is_pair and pair.labels == ["no", "yes"]
    assert pair.train[0] == Example('He said "hi", then left', "He left", 1)
    assert pair.test == pair.train[:1]

    train = writer(tmp_path / f"strain{suffix}", SINGLE_ROWS)
    single = load_task("custom", train_file=train, test_file=train)
    assert not single.is_pair and single.labels == ["neg", "pos"]
    assert single.train[0] == Example("good, really", None, 1)


def test_custom_unseen_test_label(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", SINGLE_ROWS)
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "meh", "label": "neutral"}])
    with pytest.raises(DataError, match=r"test\.jsonl: label 'neutral'.*train\.jsonl"):
        load_task("custom", train_file=train, test_file=test)


def test_custom_errors(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", SINGLE_ROWS)
    with pytest.raises(ConfigError, match="--train-file and --test-file"):
        load_task("custom", train_file=train)
    nolabel = write_csv(tmp_path / "nolabel.csv", [{"text": "x"}])
    with pytest.raises(DataError, match=r"nolabel\.csv: missing column 'label'"):
        load_task("custom", train_file=nolabel, test_file=train)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": "x"}\n{"text": "b", "lab')
    with pytest.raises(DataError, match=r"broken\.jsonl: invalid JSON on line 2"):
        load_task("custom", train_file=broken, test_file=train)
    with pytest.raises(DataError, match=r"missing file .*absent\.csv"):
        load_task("custom", train_file=tmp_path / "absent.csv", test_file=train)
    odd = tmp_path / "data.parquet"
    odd.write_text("x")
    with pytest.raises(DataError, match="unsupported extension"):
        load_task("custom", train_file=odd, test_file=train)


# ----------------------------------------------------------------------------- subsampling


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 5000),
    ratio=st.floats(0.001, 1.0),
    seed=st.integers(0, 2**31),
    task=st.sampled_from(["rte", "banking77", "fewrel"]),
)
def test_subsample_properties(n: int, ratio: float, seed: int, task: str) -> None:
    subset = subsample_indices(n, ratio, seed, task)
    assert len(subset) == max(1, round(ratio * n))
    assert subset == sorted(set(subset)) and 0 <= subset[0] and subset[-1] < n
    assert subsample_indices(n, ratio, seed, task) == subset  # same for every strategy


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 3000),
    ratios=st.lists(st.floats(0.001, 1.0), min_size=2, max_size=4),
    seed=st.integers(0, 1000),
)
def test_subsample_nested_across_ratios(n: int, ratios: list[float], seed: int) -> None:
    subsets = [set(subsample_indices(n, r, seed, "rte")) for r in sorted(ratios)]
    for smaller, larger in zip(subsets, subsets[1:], strict=False):
        assert smaller <= larger


def test_subsample_seeds_and_tasks_differ() -> None:
    base = subsample_indices(2490, 0.1, 1, "rte")
    assert subsample_indices(2490, 0.1, 2, "rte") != base
    assert subsample_indices(2490, 0.1, 1, "banking77") != base
    assert subsample_indices(2490, 1.0, 1, "rte") == list(range(2490))
    assert len(subsample_indices(2490, 0.01, 1, "rte")) == 25


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_subsample_bad_ratio(ratio: float) -> None:
    with pytest.raises(ConfigError, match="ratio"):
        subsample_indices(100, ratio, 0, "rte")


# ----------------------------------------------------------------------------- validation split


@settings(max_examples=200, deadline=None)
@given(
    indices=st.lists(st.integers(0, 10**6), min_size=2, max_size=500, unique=True),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**31),
    min_val=st.integers(1, 5),
)
def test_validation_split_properties(
    indices: list[int], fraction: float, seed: int, min_val: int
) -> None:
    train, val = validation_split(indices, fraction, seed, min_val)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(indices)
    assert len(train) >= 1
    assert len(val) == min(len(indices) - 1, max(min_val, round(fraction * len(indices))))
    assert validation_split(indices, fraction, seed, min_val) == (train, val)


def test_validation_split_seed_and_errors() -> None:
    indices = list(range(0, 400, 2))
    assert validation_split(indices, 0.1, 0) != validation_split(indices, 0.1, 1)
    assert validation_split([3, 9], 0.5, 0, min_val=5)[0] != []
    with pytest.raises(ConfigError, match="too small"):
        validation_split([7], 0.1, 0)
    with pytest.raises(ConfigError, match="fraction"):
        validation_split(indices, 1.0, 0)


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_sensitive(rte: TaskData, data_dir: Path) -> None:
    fp = rte.fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert load_task("rte", data_dir).fingerprint() == fp
    changed_example = dataclasses.replace(rte.test[0], label=1 - rte.test[0].label)
    variants = [
        dataclasses.replace(rte, test=[changed_example, *rte.test[1:]]),
        dataclasses.replace(rte, train=rte.train[:-1]),
        dataclasses.replace(rte, labels=rte.labels[::-1]),
        dataclasses.replace(rte, name="rte2"),
        dataclasses.replace(rte, train=rte.test, test=rte.train),
    ]
    assert len({fp, *(v.fingerprint() for v in variants)}) == len(variants) + 1


def test_a_worker_reloads_a_task_only_when_its_files_change(data_dir: Path,
                                                             tmp_path: Path) -> None:
    from trainers.config import CellConfig
    from trainers.prepare import load_cell_data

    shutil.copytree(data_dir / "rte", tmp_path / "rte")
    config = CellConfig(task="rte", data_dir=str(tmp_path))
    first = load_cell_data(config)
    assert load_cell_data(config) is first  # the same worker, the same files: kept
    fingerprint = first.fingerprint()
    train = tmp_path / "rte" / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    train.write_text("".join(lines[:-1]), encoding="utf-8")  # drop the last example
    second = load_cell_data(config)
    assert second is not first
    assert len(second.train) == len(first.train) - 1
    assert second.fingerprint() != fingerprint
    # A malformed edit is reported, not hidden by the kept copy.
    train.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty file"):
        load_cell_data(config)
