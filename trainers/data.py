"""Dataset loading, subsampling and validation splits for the BatchMixup tasks.

Every task loads into a :class:`TaskData`: a label list (index -> name) and train/test lists of
:class:`Example` (``text``, optional ``text_pair``, integer ``label``).

Sources
-------
A task is read from a local folder laid out like ``shared/data`` when one is given (``--data-dir``
flag, else the ``BATCHMIXUP_DATA_DIR`` environment variable, see :func:`resolve_data_dir`).
Without a folder it is downloaded from the Hugging Face hub with ``datasets.load_dataset``; the
hub is probed first (:func:`trainers.hub.hub_reachable`) so an offline machine gets a one-line
:class:`~trainers.errors.DataError` naming both options within seconds. Hub names are settings
(``hub_names={"banking77": "PolyAI/banking77"}``; ``"path:config"`` picks a config). Nothing is
ever cached into the data folder, which may be read-only.

Local formats
-------------
* ``rte/train.tsv`` and ``rte/dev.tsv`` (GLUE RTE): tab-separated, header
  ``index sentence1 sentence2 label``. Read with ``csv.QUOTE_NONE`` because sentences contain
  unbalanced double quotes. Labels are ordered ``["entailment", "not_entailment"]``. The test
  labels are not public, so ``TaskData.test`` is the dev set.
* ``banking77/train.csv`` and ``banking77/test.csv``: standard CSV quoting, columns
  ``text,category``. Label order comes from ``categories.json`` when present, else the sorted
  categories of the training file.
* ``fewrel/val_wiki.json`` (16 relations) and, when present, ``fewrel/train_wiki.json``
  (64 relations; users online get all 80 and they are merged): ``{relation id: [example]}`` with
  example ``{"tokens": [...], "h": [name, qid, [[token indices], ...]], "t": [...]}``.

FewRel protocol
---------------
* Text: the tokens joined by single spaces, with the head span wrapped as ``@ ... @`` and the
  tail span as ``# ... #`` (the first mention of each; typed-free punctuation entity markers
  in the style of Zhou & Chen 2021). Punctuation markers are already in every tokenizer's
  vocabulary, so a frozen encoder needs no new embeddings.
* Labels: every relation present; ``none_relations`` of them are relabelled ``"None"`` (the
  paper's "75+None" uses 5 of 80). They are drawn without replacement from the *sorted*
  relation ids by ``numpy.random.default_rng(fewrel_split_seed)``. Labels are the sorted
  remaining relation ids followed by ``"None"`` (no ``"None"`` when ``none_relations == 0``).
  Label names are the relation ids (``pid2name.json`` holds their descriptions).
* Split: per relation, a seeded permutation (``default_rng([fewrel_split_seed,
  crc32(relation id)])``) puts ``round(fewrel_test_fraction * n)`` examples in test, the rest in
  train. The seed is fixed per task, not per cell, so every cell shares one test set.

Custom task
-----------
``train_file`` and ``test_file`` are CSV (``.csv``; ``.tsv`` is tab-separated with
``QUOTE_NONE``) or JSON lines (``.jsonl``; ``.json`` may also be one JSON array), with keys
``text``, optional ``text_pair`` and ``label``. Labels are the sorted string labels of the
training file; a test label unseen in training is an error.

Subsampling
-----------
:func:`subsample_indices` draws a *uniform* random subset (not stratified, like the paper's
"random sampling") as the first ``k`` entries of one permutation seeded by ``(seed, task)``.
Hence for a given ``(task, seed)`` the subsets are nested across ratios, and every strategy
trains on the identical subset (a paired comparison).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainers.errors import ConfigError, DataError
from trainers.hub import hub_reachable

ENV_DATA_DIR = "BATCHMIXUP_DATA_DIR"
RTE_LABELS = ("entailment", "not_entailment")
NONE_LABEL = "None"
HEAD_MARKER = "@"
TAIL_MARKER = "#"

# task -> (hub dataset path, config name or None)
DEFAULT_HUB_NAMES: dict[str, tuple[str, str | None]] = {
    "rte": ("nyu-mll/glue", "rte"),
    "banking77": ("PolyAI/banking77", None),
    "fewrel": ("thunlp/few_rel", None),
}


@dataclass(frozen=True)
class Example:
    """One labelled input; ``text_pair`` is the second sentence of pair tasks, else None."""

    text: str
    text_pair: str | None
    label: int


@dataclass
class TaskData:
    """A loaded task: label names, train and test examples, and where they came from."""

    name: str
    labels: list[str]
    train: list[Example]
    test: list[Example]
    is_pair: bool
    source: str
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def fingerprint(self) -> str:
        """Short sha256 (16 hex chars) of the name, labels and every train and test example.

        Computed once per object (the examples are not meant to change after loading)."""
        if self._fingerprint is None:
            self._fingerprint = self._digest()
        return self._fingerprint

    def _digest(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([self.name, self.labels]).encode())
        for split, examples in (("train", self.train), ("test", self.test)):
            digest.update(split.encode())
            for ex in examples:
                digest.update(json.dumps([ex.text, ex.text_pair, ex.label]).encode())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class LoadOptions:
    """Task-specific options passed to every loader."""

    none_relations: int = 1
    fewrel_test_fraction: float = 0.2
    fewrel_split_seed: int = 20210601
    train_file: Path | None = None
    test_file: Path | None = None
    hub_names: Mapping[str, str] | None = None


# A loader gets the resolved data folder (or None) and the options.
Loader = Callable[[Path | None, LoadOptions], TaskData]


# --------------------------------------------------------------------------- public entry points


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The data folder: the flag if given, else ``$BATCHMIXUP_DATA_DIR``, else None (hub)."""
    chosen = data_dir if data_dir not in (None, "") else os.environ.get(ENV_DATA_DIR) or None
    return Path(chosen).expanduser() if chosen is not None else None


def load_task(
    task: str,
    data_dir: str | Path | None = None,
    *,
    none_relations: int = 1,
    fewrel_test_fraction: float = 0.2,
    fewrel_split_seed: int = 20210601,
    train_file: str | Path | None = None,
    test_file: str | Path | None = None,
    hub_names: dict[str, str] | None = None,
) -> TaskData:
    """Load ``task`` from a local folder (flag or env var) or, without one, from the hub."""
    loader = _REGISTRY.get(task)
    if loader is None:
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(_REGISTRY)}")
    options = LoadOptions(
        none_relations=none_relations,
        fewrel_test_fraction=fewrel_test_fraction,
        fewrel_split_seed=fewrel_split_seed,
        train_file=Path(train_file) if train_file is not None else None,
        test_file=Path(test_file) if test_file is not None else None,
        hub_names=hub_names,
    )
    return loader(resolve_data_dir(data_dir), options)


def subsample_indices(n: int, ratio: float, seed: int, task: str) -> list[int]:
    """Sorted uniform random subset of ``max(1, round(ratio * n))`` of ``range(n)``.

    The subset is the first k entries of a permutation drawn by
    ``default_rng([seed, crc32(task)])``: not stratified, nested across ratios for a fixed
    ``(task, seed)``, and identical for every strategy.
    """
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"ratio must be in (0, 1], got {ratio}")
    if n < 1:
        raise ConfigError(f"cannot subsample an empty training set for task {task!r}")
    k = min(n, max(1, round(ratio * n)))
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    return sorted(int(i) for i in rng.permutation(n)[:k])


def validation_split(
    indices: list[int], fraction: float, seed: int, min_val: int = 1, max_fraction: float = 1.0
) -> tuple[list[int], list[int]]:
    """Seeded split of ``indices`` into ``(train_part, val_part)``, both sorted.

    ``len(val_part) = min(floor(max_fraction * n), max(min_val, round(fraction * n)))`` for
    ``n = len(indices)``, capped so that at least one training example remains; a split that
    would leave no validation example is an error.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"validation fraction must be in [0, 1), got {fraction}")
    if min_val < 0:
        raise ConfigError(f"min_val must be >= 0, got {min_val}")
    n = len(indices)
    if n < 2:
        raise ConfigError(
            f"training subset of {n} example(s) is too small to carve a validation split"
        )
    n_val = min(n - 1, int(max_fraction * n + 1e-9), max(min_val, round(fraction * n)))
    if n_val < 1:
        raise ConfigError(f"validation split of a {n}-example training subset would be empty "
                          f"(val_fraction={fraction:g}, val_max_fraction={max_fraction:g})")
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(indices[i] for i in order[:n_val])
    train = sorted(indices[i] for i in order[n_val:])
    return train, val


# --------------------------------------------------------------------------- shared helpers


def _need_file(path: Path) -> Path:
    if not path.parent.is_dir():
        raise DataError(f"missing directory {path.parent}")
    if not path.is_file():
        raise DataError(f"missing file {path}")
    if path.stat().st_size == 0:
        raise DataError(f"empty file {path}")
    return path


def _task_dir(data_dir: Path, task: str) -> Path:
    if not data_dir.is_dir():
        raise DataError(f"missing data directory {data_dir}")
    folder = data_dir / task
    if not folder.is_dir():
        raise DataError(f"missing directory {folder} (expected a '{task}' folder in {data_dir})")
    return folder


def _check_text(value: Any, path: Path, where: str, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: empty {column!r} at {where}")
    return value


def _label_index(label: str, label_ids: Mapping[str, int], path: Path, where: str) -> int:
    if label not in label_ids:
        known = ", ".join(list(label_ids)[:10]) + (", ..." if len(label_ids) > 10 else "")
        raise DataError(f"{path}: label {label!r} at {where} is not in the label set ({known})")
    return label_ids[label]


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, a leading byte-order mark dropped (Excel writes one); other
    encodings are a :class:`DataError` naming the line of the first undecodable byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as "
            "UTF-8 (e.g. 'iconv -f latin1 -t utf-8')"
        ) from None


def _read_rows(path: Path, *, delimiter: str, quoting: int) -> list[dict[str, str]]:
    """Rows of a delimited file with a header, each as a dict; columns checked by the caller.

    UTF-8 with or without a byte-order mark; LF or CRLF line ends (what Excel writes)."""
    _need_file(path)
    with io.StringIO(_read_text(path), newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
        line_no = 1
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"empty file {path}")
            twice = sorted({name for name in header if header.count(name) > 1})
            if twice:  # a dict would keep the last one, silently
                shown = ", ".join(repr(name[:40]) for name in twice[:5])
                raise DataError(f"{path}: column(s) {shown} appear more than once in the header")
            rows = []
            for line_no, fields in enumerate(reader, start=2):
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise DataError(f"{path}: line {line_no} has {len(fields)} fields, "
                                    f"expected {len(header)}")
                rows.append(dict(zip(header, fields, strict=True)))
        except csv.Error as exc:  # e.g. a field over csv's size limit, a NUL byte
            raise DataError(f"{path}: line {line_no + 1}: {str(exc)[:200]}") from None
    if not rows:
        raise DataError(f"{path} has a header but no data rows")
    return rows


def _require_columns(rows: Sequence[Mapping[str, Any]], path: Path, columns: Iterable[str]):
    present = set(rows[0])
    for column in columns:
        if column not in present:
            raise DataError(
                f"{path}: missing column {column!r} (found: {', '.join(sorted(present))})"
            )


def _hub_spec(task: str, options: LoadOptions) -> tuple[str, str | None]:
    default_path, default_config = DEFAULT_HUB_NAMES[task]
    override = (options.hub_names or {}).get(task)
    if not override:
        return default_path, default_config
    path, sep, config = override.partition(":")
    return path, (config if sep else default_config)


def _load_hub(task: str, options: LoadOptions) -> tuple[Any, str]:
    """The hub ``DatasetDict`` for ``task`` and its source tag; fails fast when offline."""
    path, config = _hub_spec(task, options)
    if not hub_reachable():
        raise DataError(
            f"no data for task {task!r}: pass --data-dir (or set {ENV_DATA_DIR}) to a folder "
            f"laid out like shared/data, or go online so the hub dataset {path!r} can be "
            "downloaded"
        )
    import datasets  # heavy import, only needed online

    try:
        dataset = datasets.load_dataset(path, config) if config else datasets.load_dataset(path)
    except Exception as exc:  # any hub failure becomes one clear line
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"could not load hub dataset {path!r} for task {task!r}: {first_line}"
        ) from exc
    return dataset, f"hub:{path}" + (f":{config}" if config else "")


# --------------------------------------------------------------------------- RTE


def _rte_examples(path: Path, label_ids: Mapping[str, int]) -> list[Example]:
    rows = _read_rows(path, delimiter="\t", quoting=csv.QUOTE_NONE)
    _require_columns(rows, path, ("sentence1", "sentence2", "label"))
    examples = []
    for line_no, row in enumerate(rows, start=2):
        where = f"line {line_no}"
        examples.append(
            Example(
                text=_check_text(row["sentence1"], path, where, "sentence1"),
                text_pair=_check_text(row["sentence2"], path, where, "sentence2"),
                label=_label_index(row["label"], label_ids, path, where),
            )
        )
    return examples


def _load_rte(data_dir: Path | None, options: LoadOptions) -> TaskData:
    labels = list(RTE_LABELS)
    if data_dir is None:
        return _load_rte_hub(options)
    folder = _task_dir(data_dir, "rte")
    label_ids = {name: i for i, name in enumerate(labels)}
    return TaskData(
        name="rte",
        labels=labels,
        train=_rte_examples(folder / "train.tsv", label_ids),
        test=_rte_examples(folder / "dev.tsv", label_ids),
        is_pair=True,
        source=f"local:{folder}",
    )


def _load_rte_hub(options: LoadOptions) -> TaskData:
    dataset, source = _load_hub("rte", options)
    names = list(dataset["train"].features["label"].names)

    def convert(split: str) -> list[Example]:
        return [
            Example(text=row["sentence1"], text_pair=row["sentence2"], label=int(row["label"]))
            for row in dataset[split]
            if int(row["label"]) >= 0
        ]

    return TaskData("rte", names, convert("train"), convert("validation"), True, source)


# --------------------------------------------------------------------------- BANKING77


def _banking77_labels(folder: Path, train_rows: Sequence[Mapping[str, str]]) -> list[str]:
    path = folder / "categories.json"
    if not path.is_file():
        return sorted({row["category"] for row in train_rows})
    try:
        categories = json.loads(_read_text(_need_file(path)))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise DataError(f"{path}: expected a JSON list of category names")
    if len(set(categories)) != len(categories):
        raise DataError(f"{path}: duplicate category names")
    return categories


def _banking77_examples(
    path: Path, rows: Sequence[Mapping[str, str]], label_ids: Mapping[str, int]
) -> list[Example]:
    examples = []
    for line_no, row in enumerate(rows, start=2):
        where = f"row {line_no}"
        text = _check_text(row["text"], path, where, "text")
        examples.append(Example(text, None, _label_index(row["category"], label_ids, path, where)))
    return examples


def _load_banking77(data_dir: Path | None, options: LoadOptions) -> TaskData:
    if data_dir is None:
        return _load_banking77_hub(options)
    folder = _task_dir(data_dir, "banking77")
    splits = {}
    for split in ("train", "test"):
        path = folder / f"{split}.csv"
        rows = _read_rows(path, delimiter=",", quoting=csv.QUOTE_MINIMAL)
        _require_columns(rows, path, ("text", "category"))
        splits[split] = (path, rows)
    labels = _banking77_labels(folder, splits["train"][1])
    label_ids = {name: i for i, name in enumerate(labels)}
    train, test = (_banking77_examples(*splits[s], label_ids) for s in ("train", "test"))
    return TaskData("banking77", labels, train, test, False, f"local:{folder}")


def _load_banking77_hub(options: LoadOptions) -> TaskData:
    dataset, source = _load_hub("banking77", options)
    names = list(dataset["train"].features["label"].names)

    def convert(split: str) -> list[Example]:
        return [Example(row["text"], None, int(row["label"])) for row in dataset[split]]

    return TaskData("banking77", names, convert("train"), convert("test"), False, source)


# --------------------------------------------------------------------------- FewRel


def _first_span(entity: Any, path: Path, where: str) -> tuple[int, int]:
    """(start, end) token positions, inclusive, of an entity's first mention."""
    try:
        mention = [int(i) for i in entity[2][0]]
    except (TypeError, IndexError, ValueError):
        raise DataError(
            f"{path}: malformed entity at {where} (expected [name, id, [[idx]]])"
        ) from None
    if not mention:
        raise DataError(f"{path}: entity with no token indices at {where}")
    return min(mention), max(mention)


def fewrel_text(tokens: Sequence[str], head: tuple[int, int], tail: tuple[int, int]) -> str:
    """Tokens joined by spaces with the head wrapped as ``@ ... @`` and the tail as ``# ... #``."""
    out: list[str] = []
    for i, token in enumerate(tokens):
        for (start, _), marker in ((head, HEAD_MARKER), (tail, TAIL_MARKER)):
            if i == start:
                out.append(marker)
        out.append(token)
        for (_, end), marker in ((tail, TAIL_MARKER), (head, HEAD_MARKER)):
            if i == end:
                out.append(marker)
    return " ".join(out)


def _fewrel_instance_text(raw: Any, path: Path, where: str) -> str:
    if not isinstance(raw, dict) or not {"tokens", "h", "t"} <= raw.keys():
        raise DataError(f"{path}: {where} lacks 'tokens', 'h' or 't'")
    tokens = raw["tokens"]
    if not isinstance(tokens, list) or not tokens:
        raise DataError(f"{path}: empty text (no tokens) at {where}")
    head, tail = _first_span(raw["h"], path, where), _first_span(raw["t"], path, where)
    if max(head[1], tail[1]) >= len(tokens) or min(head[0], tail[0]) < 0:
        raise DataError(f"{path}: entity token index out of range at {where}")
    return fewrel_text([str(t) for t in tokens], head, tail)


def _read_fewrel_file(path: Path) -> dict[str, list[str]]:
    """Relation id -> texts with entity markers, from one FewRel JSON file."""
    _need_file(path)
    try:
        raw = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path}: expected a non-empty JSON object of relation id -> examples")
    texts: dict[str, list[str]] = {}
    for relation, instances in raw.items():
        if not isinstance(instances, list) or not instances:
            raise DataError(f"{path}: relation {relation!r} has no list of examples")
        texts[relation] = [
            _fewrel_instance_text(inst, path, f"relation {relation} example {i}")
            for i, inst in enumerate(instances)
        ]
    return texts


def _none_relations(relations: Sequence[str], count: int, seed: int) -> set[str]:
    """``count`` relation ids drawn (seeded, without replacement) from the sorted ids."""
    ordered = sorted(relations)
    if not 0 <= count <= len(ordered) - 1:
        raise ConfigError(
            f"none_relations must be in [0, {len(ordered) - 1}] for {len(ordered)} relations, "
            f"got {count}"
        )
    chosen = np.random.default_rng(seed).choice(len(ordered), size=count, replace=False)
    return {ordered[int(i)] for i in chosen}


def _fewrel_task(texts: Mapping[str, list[str]], options: LoadOptions, source: str) -> TaskData:
    """Relabel, split per relation (seeded) and build the FewRel :class:`TaskData`."""
    fraction, seed = options.fewrel_test_fraction, options.fewrel_split_seed
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fewrel_test_fraction must be in (0, 1), got {fraction}")
    none = _none_relations(list(texts), options.none_relations, seed)
    labels = sorted(set(texts) - none) + ([NONE_LABEL] if none else [])
    label_ids = {name: i for i, name in enumerate(labels)}
    train: list[Example] = []
    test: list[Example] = []
    for relation in sorted(texts):
        rel_texts = texts[relation]
        label = label_ids[NONE_LABEL if relation in none else relation]
        n = len(rel_texts)
        n_test = min(n - 1, round(fraction * n)) if n > 1 else 0
        order = np.random.default_rng([seed, zlib.crc32(relation.encode())]).permutation(n)
        test_pos = set(int(i) for i in order[:n_test])
        for i, text in enumerate(rel_texts):
            (test if i in test_pos else train).append(Example(text, None, label))
    return TaskData("fewrel", labels, train, test, False, source)


def _load_fewrel(data_dir: Path | None, options: LoadOptions) -> TaskData:
    if data_dir is None:
        return _load_fewrel_hub(options)
    folder = _task_dir(data_dir, "fewrel")
    texts = _read_fewrel_file(folder / "val_wiki.json")
    train_wiki = folder / "train_wiki.json"
    if train_wiki.exists():
        extra = _read_fewrel_file(train_wiki)
        clash = sorted(set(extra) & set(texts))
        if clash:
            raise DataError(f"{train_wiki}: relations {clash[:5]} also appear in val_wiki.json")
        texts.update(extra)
    return _fewrel_task(texts, options, f"local:{folder}")


def _load_fewrel_hub(options: LoadOptions) -> TaskData:
    """Hub rows ``{relation, tokens, head: {indices}, tail: {indices}}`` of both wiki splits."""
    dataset, source = _load_hub("fewrel", options)
    texts: dict[str, list[str]] = {}
    hub_path = Path(source)
    for split in ("train_wiki", "val_wiki"):
        if split not in dataset:
            continue
        for i, row in enumerate(dataset[split]):
            raw = {
                "tokens": row["tokens"],
                "h": [row["head"]["text"], row["head"]["type"], row["head"]["indices"]],
                "t": [row["tail"]["text"], row["tail"]["type"], row["tail"]["indices"]],
            }
            text = _fewrel_instance_text(raw, hub_path, f"{split} row {i}")
            texts.setdefault(row["relation"], []).append(text)
    if not texts:
        raise DataError(f"{source}: no 'train_wiki' or 'val_wiki' split found")
    return _fewrel_task(texts, options, source)


# --------------------------------------------------------------------------- custom


def _read_json_records(path: Path) -> list[dict[str, Any]]:
    """JSON lines (or, for ``.json``, one JSON array) of objects."""
    _need_file(path)
    content = _read_text(path)
    if not content.strip():
        raise DataError(f"empty file {path}")
    if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
        try:
            records = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    else:
        records = []
        for line_no, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: invalid JSON on line {line_no} ({exc.msg})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: expected JSON objects with 'text' and 'label' keys")
    if not records:
        raise DataError(f"{path} has no records")
    return records


def _read_custom_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_rows(path, delimiter=",", quoting=csv.QUOTE_MINIMAL)
    if suffix == ".tsv":
        return _read_rows(path, delimiter="\t", quoting=csv.QUOTE_NONE)
    if suffix in (".jsonl", ".json"):
        return _read_json_records(path)
    raise DataError(f"{path}: unsupported extension {suffix!r} (use .csv, .tsv, .jsonl or .json)")


def _custom_raw(path: Path) -> list[tuple[str, str | None, str]]:
    """(text, text_pair or None, label as str) for every record of a custom file."""
    records = _read_custom_records(path)
    out = []
    for i, rec in enumerate(records):
        where = f"record {i + 1}"
        for column in ("text", "label"):
            if column not in rec:
                raise DataError(f"{path}: missing column {column!r} at {where}")
        text = _check_text(rec["text"], path, where, "text")
        pair = rec.get("text_pair")
        pair = None if pair is None or pair == "" else _check_text(pair, path, where, "text_pair")
        label = rec["label"]
        if label is None or str(label).strip() == "":
            raise DataError(f"{path}: empty 'label' at {where}")
        out.append((text, pair, str(label)))
    return out


def _load_custom(data_dir: Path | None, options: LoadOptions) -> TaskData:
    del data_dir  # custom files are given explicitly
    if options.train_file is None or options.test_file is None:
        raise ConfigError("task 'custom' needs both --train-file and --test-file")
    train_raw = _custom_raw(options.train_file)
    test_raw = _custom_raw(options.test_file)
    labels = sorted({label for _, _, label in train_raw})
    label_ids = {name: i for i, name in enumerate(labels)}
    for i, (_, _, label) in enumerate(test_raw):
        if label not in label_ids:
            raise DataError(
                f"{options.test_file}: label {label!r} (record {i + 1}) does not occur in the "
                f"training file {options.train_file}"
            )

    def build(raw: list[tuple[str, str | None, str]]) -> list[Example]:
        return [Example(text, pair, label_ids[label]) for text, pair, label in raw]

    return TaskData(
        name="custom",
        labels=labels,
        train=build(train_raw),
        test=build(test_raw),
        is_pair=any(pair is not None for _, pair, _ in train_raw),
        source=f"local:{options.train_file}",
    )


# --------------------------------------------------------------------------- registry

# To add a text task, write a ``Loader``, register it here and in trainers/tasks.py.
_REGISTRY: dict[str, Loader] = {
    "rte": _load_rte,
    "banking77": _load_banking77,
    "fewrel": _load_fewrel,
    "custom": _load_custom,
}
