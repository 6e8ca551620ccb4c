"""Every preset cell's fingerprint, logged params and name, to compare two checkouts.

A refactor that must not change what trains (the strategy registry did this) is checked by
dumping this before and after and comparing the files: equal files mean every cell of every
preset keeps its fingerprint (so MLflow and Tune reuse its runs), its params and its name.

Command (docs/strategies.md, "Bit-identity of the registry")::

    python -m benchmarks.preset_fingerprints /tmp/before.json   # in the old checkout
    python -m benchmarks.preset_fingerprints /tmp/after.json    # in the new one
    cmp /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import json

from orchestrator.spaces import load_sweep, preset_names, resolve_source
from trainers.prepare import cell_fingerprint, resolved_params


def dump(data_dir: str) -> dict[str, dict[str, object]]:
    """``preset|cell`` -> fingerprint, resolved params, applicable settings, cell name."""
    out: dict[str, dict[str, object]] = {}
    for preset in preset_names():
        sweep = load_sweep(resolve_source(preset, None), {"settings": {"data_dir": data_dir}})
        for cell in sweep.cells():
            config = cell.config
            out[f"{preset}|{cell.name}"] = {
                "fp": cell_fingerprint(config), "params": resolved_params(config),
                "applicable": config.applicable(), "cell_name": config.cell_name}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preset_fingerprints",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="JSON file to write")
    parser.add_argument("--data-dir", default="../shared/data",
                        help="the data_dir the cells carry (it is not part of the fingerprint)")
    args = parser.parse_args(argv)
    cells = dump(args.data_dir)
    with open(args.out, "w") as f:
        json.dump(cells, f, sort_keys=True, indent=0, default=str)
    print(f"{len(cells)} cells of {len(preset_names())} presets -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
