"""The strategy registry: one declaration per strategy, read by every layer; plug-ins by
``module:NAME`` and by entry point; no strategy name outside trainers/ (and the paper's
tables)."""

from __future__ import annotations

import ast
import dataclasses
import sys
import textwrap
from pathlib import Path

import pytest

from tests.sweep_helpers import REPO_ROOT
from trainers.budget import updates_per_batch
from trainers.config import STRATEGY_SETTINGS, CellConfig
from trainers.errors import ConfigError
from trainers.strategies import (
    Strategy,
    StrategyError,
    builtin_names,
    canonical_name,
    get_strategy,
    known_names,
    plugin_paths,
    registry,
    strategy_tags,
)
from trainers.updaters import draws_per_update

PLUGIN = '''
from trainers.strategies import Strategy, plain_loss

MY_MIX = Strategy(name="my_mix", label="My mix", family="pairwise", site="pooled",
                  loss=plain_loss, reads=("alpha", "mix_samples"), cite="{cite}")
NOT_A_STRATEGY = 3
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plug-in module ``mixes_<n>`` in a folder on sys.path; returns a function that
    (re)writes it with another citation (another content hash)."""
    name = f"mixes_{abs(hash(tmp_path)) % 10**8}"
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(cite: str = "v1") -> str:
        (tmp_path / f"{name}.py").write_text(PLUGIN.format(cite=cite))
        sys.modules.pop(name, None)
        registry._LOADED.clear()
        return name

    yield write
    sys.modules.pop(name, None)
    registry._LOADED.clear()


def test_every_builtin_declares_what_the_layers_read():
    assert builtin_names()[:4] == ("none", "mixup", "nonlinear_mixup", "batchmixup")
    assert {"tmix", "embed_mixup"} <= set(builtin_names())
    for name in builtin_names():
        spec = get_strategy(name)
        assert spec.name == name and spec.builtin and spec.identity() is None
        assert set(spec.reads) <= set(STRATEGY_SETTINGS), name
        config = CellConfig(strategy=name, mode="finetune", model="random:tiny").validate()
        assert set(config.applicable()) & set(STRATEGY_SETTINGS) == set(spec.reads)


def test_updates_and_draws_follow_the_declarations():
    faithful = CellConfig(strategy="mixup", mix_samples=15, mixup_variant="faithful")
    shared = dataclasses.replace(faithful, mixup_variant="shared")
    assert (updates_per_batch(faithful), draws_per_update(faithful)) == (15, 1)
    assert (updates_per_batch(shared), draws_per_update(shared)) == (1, 15)
    # a strategy that does not read mix_samples is not changed by it (the old else-branches
    # gave 1 update and 15 draws to any unlisted name)
    for name in ("batchmixup", "tmix", "none"):
        config = dataclasses.replace(faithful, strategy=name)
        assert (updates_per_batch(config), draws_per_update(config)) == (1, 1)
    tags = strategy_tags(get_strategy("tmix"), CellConfig(strategy="tmix", clean_loss=True))
    assert tags == {"strategy_label": "TMix", "strategy_family": "pairwise",
                    "strategy_site": "layer", "updates_per_batch": "1",
                    "forward_passes_per_batch": "2"}


def test_a_bad_declaration_is_refused_in_one_line():
    with pytest.raises(StrategyError, match="family 'pair' is not one of"):
        Strategy(name="x", label="x", family="pair", site="pooled", loss=len)
    with pytest.raises(StrategyError, match="must match"):
        Strategy(name="My-Mix", label="x", family="pairwise", site="pooled", loss=len)
    with pytest.raises(StrategyError, match="exactly when its family is unmixed"):
        Strategy(name="x", label="x", family="unmixed", site="pooled", loss=len)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ConfigError) as err:
        CellConfig.from_dict({"strategy": "manifold"})
    message = str(err.value)
    assert "unknown strategy 'manifold'" in message and "tmix" in message
    assert "package.module:NAME" in message and "\n" not in message


def test_module_name_plugins_load_and_carry_their_code_into_the_fingerprint(plugin):
    from trainers.prepare import cell_fingerprint

    name = plugin("v1")
    ref = f"{name}:MY_MIX"
    config = CellConfig.from_dict({"strategy": ref, "task": "toy2d"}).validate()
    spec = config.strategy_spec
    assert (spec.name, spec.ref, config.cell_name) == ("my_mix", ref, "toy2d/1/my_mix/0")
    assert set(config.applicable()) & set(STRATEGY_SETTINGS) == {"alpha", "mix_samples"}
    assert strategy_tags(spec, config)["strategy_source"].startswith(f"{ref}@")
    first = cell_fingerprint(config)
    assert cell_fingerprint(config) == first
    plugin("v2")  # the plug-in is edited: its cells are new cells
    assert cell_fingerprint(CellConfig.from_dict({"strategy": ref, "task": "toy2d"})) != first
    assert plugin_paths([ref, "mixup"]) == [Path(sys.modules[name].__file__)]

    for bad, expected in [(f"{name}:NOT_A_STRATEGY", "is a int, not a"),
                          (f"{name}:MISSING", "is nothing, not a"),
                          ("no_such_module_xyz:MIX", "cannot import no_such_module_xyz"),
                          (f"{name}:", "expected package.module:NAME")]:
        with pytest.raises(ConfigError, match=expected):
            CellConfig.from_dict({"strategy": bad})


def test_installed_entry_points_resolve_to_their_module(plugin, tmp_path, monkeypatch):
    name = plugin()
    dist = tmp_path / "my_mixes-1.0.dist-info"  # what pip install leaves for a package
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-mixes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[batchmixup_lab.strategies]\nmy_mix = {name}:MY_MIX\n")
    assert "my_mix" in known_names()
    assert canonical_name("my_mix") == f"{name}:MY_MIX"
    config = CellConfig.from_dict({"strategy": "my_mix", "task": "toy2d"}).validate()
    assert config.strategy == f"{name}:MY_MIX"  # resolvable where the metadata is not


def test_sweep_files_take_plugins_and_name_arms_after_them(plugin, tmp_path):
    from orchestrator.spaces import SweepError, load_sweep

    name = plugin()
    sweep_file = tmp_path / "mine.yaml"
    sweep_file.write_text(textwrap.dedent(f"""
        tasks: [toy2d]
        ratios: [1.0]
        strategies: [none, "{name}:MY_MIX", {{name: tmix_9, strategy: tmix, mix_layers: "9"}}]
        seeds: [0]
        settings: {{mode: finetune}}
        strategy_settings:
          "{name}:MY_MIX": {{alpha: 0.4}}
    """))
    with pytest.raises(SweepError, match="tmix mixes inside the encoder"):
        load_sweep(sweep_file).cells()  # toy2d has no encoder for TMix
    sweep = load_sweep(sweep_file, {"strategies": ["none", f"{name}:MY_MIX"]})
    cells = {c.arm: c.config for c in sweep.cells()}
    assert set(cells) == {"none", "my_mix"} and cells["my_mix"].alpha == 0.4
    sweep_file.write_text(sweep_file.read_text().replace(f'"{name}:MY_MIX": ', "bogus: "))
    with pytest.raises(SweepError, match="field 'strategy_settings.bogus': unknown strategy"):
        load_sweep(sweep_file)


# ----------------------------------------------------------------- no names outside trainers/
ALLOWED = {"results/paper.py", "results/figure1.py"}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            found.add(id(node.value))  # attribute docstrings
    return found


def test_orchestrator_and_results_hold_no_strategy_name():
    names = set(builtin_names())
    offenders = []
    for folder in ("orchestrator", "results"):
        for path in sorted((REPO_ROOT / folder).glob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if relative in ALLOWED:
                continue
            tree = ast.parse(path.read_text())
            skip = _docstrings(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and id(node) not in skip \
                        and isinstance(node.value, str) and node.value in names:
                    offenders.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders
