"""The settings schema (trainers/schema.py): one declaration per setting, strict, one-line errors.

CellConfig's fields carry their types and ranges; the sweep file's ``settings``, its arms and
``--set`` are checked against those same declarations, and the search plan has its own model.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator import search_plan as sp
from orchestrator.spaces import CELL_AXES, Settings, SweepError, load_sweep, parse_set
from trainers.config import FIELD_TYPES, CellConfig, check_setting
from trainers.errors import ConfigError
from trainers.schema import bounds_of

GRID = "tasks: [rte]\nratios: [0.5]\nstrategies: [none]\nseeds: [0]\n"


def test_sweep_settings_are_declared_once_on_cellconfig():
    # every CellConfig field but the cell's axes is a sweep setting, with the same type
    assert set(Settings.model_fields) == set(FIELD_TYPES) - CELL_AXES
    for name, info in Settings.model_fields.items():
        assert bounds_of(info) == bounds_of(FIELD_TYPES[name]), name


@pytest.mark.parametrize(("values", "expected"), [
    ({"seed": np.int64(2)}, {"seed": 2}),                       # Ray Tune's numpy samples
    ({"alpha": np.float32(0.5)}, {"alpha": 0.5}),
    ({"ratio": 1}, {"ratio": 1.0}),                             # an int where a float goes
    ({"data_dir": Path("/x")}, {"data_dir": "/x"}),
    ({"epochs": "5", "clean_loss": "false", "head_lr": "1e-3"},  # command-line text
     {"epochs": 5, "clean_loss": False, "head_lr": 1e-3}),
])
def test_accepted_values_are_converted_to_the_declared_type(values, expected):
    config = CellConfig.from_dict(values).validate()
    for name, value in expected.items():
        assert getattr(config, name) == value
        assert type(getattr(config, name)) is type(value), name


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": True}, "epochs must be of type int, got True"),
    ({"epochs": 2.0}, "epochs must be of type int, got 2.0"),
    ({"epochs": "2.0"}, "epochs must be of type int, got '2.0'"),
    ({"clean_loss": 1}, "clean_loss must be of type bool, got 1"),
    ({"clean_loss": "0.7"}, "clean_loss must be of type bool, got '0.7'"),
    ({"alpha": True}, "alpha must be of type float, got True"),
    ({"alpha": math.nan}, "alpha must be > 0, got nan"),
    ({"lr": math.inf}, "lr must be > 0, got inf"),
    ({"ratio": None}, "ratio must be of type float, got None"),
    ({"model": 3}, "model must be of type str, got 3"),
    ({"task": "mnist"}, "unknown task 'mnist'; choose from rte, banking77"),
    ({"val_fraction": 1.0}, "val_fraction must be in (0, 1), got 1.0"),
    ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
    ({"nope": 1}, "unknown setting(s) nope"),
])
def test_refused_values_name_the_field_in_one_line(values, message):
    with pytest.raises(ConfigError) as info:
        CellConfig.from_dict(values)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("values", [{"clean_loss": 0.7}, {"model": 3}, {"data_dir": 3},
                                    {"loss": "mse"}])
def test_validate_checks_every_field_of_a_built_config(values):
    # a config built directly (not from a mapping) is checked field by field too
    name = next(iter(values))
    with pytest.raises(ConfigError, match=name):
        CellConfig(**values).validate()


@pytest.mark.parametrize("name", sorted(n for n, t in FIELD_TYPES.items() if bounds_of(t)))
def test_every_declared_range_is_enforced(name):
    """Just outside each declared end: refused, with the range in words; at the end: kept."""
    bounds = bounds_of(FIELD_TYPES[name])
    kind = int if bounds.get("int") else float
    outside = {"gt": lambda b: b, "ge": lambda b: b - 1, "lt": lambda b: b, "le": lambda b: b + 1}
    inside = {"gt": lambda b: b + (1 if kind is int else 1e-6), "ge": lambda b: b,
              "lt": lambda b: b - (1 if kind is int else 1e-6), "le": lambda b: b}
    for end, bound in bounds.items():
        if end == "int":
            continue
        with pytest.raises(ConfigError, match=f"^{name} must be "):
            check_setting(name, kind(outside[end](bound)))
        assert check_setting(name, kind(inside[end](bound))) == inside[end](bound)
        # and the same declaration refuses it in a whole config
        with pytest.raises(ConfigError, match=f"^{name} must be "):
            CellConfig(**{name: kind(outside[end](bound))}).validate()


def test_set_and_sweep_file_use_the_same_declarations(tmp_path):
    assert parse_set(["epochs=5", "alpha=1e-1", "data_dir=/x"]) == {
        "epochs": 5, "alpha": 0.1, "data_dir": "/x"}
    with pytest.raises(SweepError, match=r"^--set mix_samples=0: mix_samples must be an "
                                         r"integer >= 1, got 0$"):
        parse_set(["mix_samples=0"])
    file = tmp_path / "s.yaml"
    file.write_text(GRID.replace("[none]", "[none, {name: m5, strategy: mixup, "
                                           "mix_samples: 0}]"))
    with pytest.raises(SweepError, match=r"field 'strategies\[1\]\.mix_samples': mix_samples "
                                         r"must be an integer >= 1, got 0$"):
        load_sweep(file)


@pytest.mark.parametrize(("extra", "message"), [
    ("resources: {max_concurrent: 1.5}\n",
     "field 'resources.max_concurrent': max_concurrent must be of type int, got 1.5"),
    ("resources: {max_concurrent: 0}\n", "max_concurrent must be an integer >= 1, got 0"),
    ("resources: {cpus: 2}\n", "field 'resources.cpus': unknown setting; allowed: "
                               "cpus_per_trial, gpus_per_trial, max_concurrent"),
    ("description: [1]\n", "field 'description': description must be of type str"),
    ("tasks: []\n", "field 'tasks': tasks must not be empty"),
    ("tasks: [rte, rte]\n", "field 'tasks' has duplicates: ['rte', 'rte']"),
    ("tasks: [rte]\nratios: [0.5, 0.5]\n", "field 'ratios' has duplicates: [0.5, 0.5]"),
    ("tasks: [rte]\nname: 3\n", "field 'name': name must be of type str, got 3"),
])
def test_sweep_file_fields_are_typed(extra, message, tmp_path):
    file = tmp_path / "s.yaml"
    given = {line.split(":", 1)[0] for line in extra.splitlines()}  # each key once (strict YAML)
    text = "".join(line + "\n" for line in GRID.splitlines()
                   if line.split(":", 1)[0] not in given)
    file.write_text(text + extra)
    with pytest.raises(SweepError) as info:
        load_sweep(file)
    assert message in str(info.value) and str(file) in str(info.value)


def test_empty_sections_are_empty(tmp_path):
    file = tmp_path / "s.yaml"
    file.write_text(GRID + "settings:\nstrategy_settings:\nresources:\nsearch:\n")
    sweep = load_sweep(file)
    assert (sweep.settings, sweep.strategy_settings, sweep.resources, sweep.search) == (
        {}, {}, {}, {})


def test_sweep_file_resources_are_read():
    from orchestrator.spaces import resolve_source

    sweep = load_sweep(resolve_source("paper_table1", None))
    assert sweep.resources == {"cpus_per_trial": 4.0, "gpus_per_trial": 1.0}


SPACE = {"alpha": {"distribution": "loguniform", "low": 0.05, "high": 4.0}}
NO_FLAGS = argparse.Namespace(num_samples=None, search_seed=None)


@pytest.mark.parametrize(("search", "message"), [
    ({}, "field 'search.space' must map setting names to distributions"),
    ({"space": {}}, "field 'search.space': space must not be empty"),
    ({"space": SPACE, "num_samples": 0}, "field 'search.num_samples': num_samples must be an "
                                         "integer >= 1, got 0"),
    ({"space": SPACE, "include_default": 1}, "include_default must be of type bool, got 1"),
    ({"space": SPACE, "reduction_factor": 1}, "reduction_factor must be > 1, got 1"),
    ({"space": SPACE, "max_val_fraction": 1}, "max_val_fraction must be in (0, 1), got 1"),
    ({"space": SPACE, "bogus": 1}, "field 'search': unknown key bogus; allowed:"),
    ({"space": {"seed": {"distribution": "choice", "values": [1]}}},
     "field 'search.space.seed': not a searchable setting"),
    ({"space": {"alpha": {"distribution": "loguniform", "low": 0, "high": 1}}},
     "field 'search.space.alpha': need 0 < low < high, got low=0, high=1"),
    ({"space": {"alpha": {"distribution": "uniform", "low": True, "high": 2}}},
     "field 'search.space.alpha': low must be of type float, got True"),
    ({"space": {"alpha": {"distribution": "choice"}}}, "a choice needs a non-empty 'values'"),
    ({"space": {"mix_samples": {"distribution": "randint", "low": 1, "high": 2.5}}},
     "randint bounds must be integers"),
    ({"space": {"alpha": {**SPACE["alpha"], "strategies": ["cutmix"]}}},
     "field 'search.space.alpha': unknown strategy 'cutmix'"),
    ({"space": {"alpha": {**SPACE["alpha"], "step": 1}}},
     "field 'search.space.alpha': unknown key step; allowed: distribution, high, low"),
])
def test_search_plan_is_typed(search, message):
    from orchestrator.spaces import resolve_source

    sweep = dataclasses.replace(load_sweep(resolve_source("smoke", None)), search=search)
    with pytest.raises(SweepError) as info:
        sp.parse_plan(sweep, NO_FLAGS)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_search_plan_defaults_and_flags():
    from orchestrator.spaces import resolve_source

    sweep = dataclasses.replace(load_sweep(resolve_source("smoke", None)),
                                search={"space": SPACE})
    plan = sp.parse_plan(sweep, NO_FLAGS)
    assert (plan.num_samples, plan.seed, plan.reduction_factor) == (16, 0, 3.0)
    assert [p.name for p in plan.params] == ["alpha"]
    plan = sp.parse_plan(sweep, argparse.Namespace(num_samples=4, search_seed=2))
    assert (plan.num_samples, plan.seed) == (4, 2)
