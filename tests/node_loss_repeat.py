"""Repeat the two-node node-loss scenario N times and count the runs where every cell ended
FINISHED with each epoch logged once (``tests/node_loss.py``).

    HF_HUB_OFFLINE=1 BATCHMIXUP_DATA_DIR=../shared/data python -m tests.node_loss_repeat --runs 10

Each run gets a fresh folder (kept with ``--keep``, else removed when it passed); a failing
run's sweep output is kept in ``<out>/run-<i>/`` for diagnosis. Exit 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.node_loss_repeat",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="repetitions (default: 10)")
    parser.add_argument("--data-dir", default=os.environ.get("BATCHMIXUP_DATA_DIR"),
                        help="default: $BATCHMIXUP_DATA_DIR")
    parser.add_argument("--out", help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep passing runs' folders too")
    args = parser.parse_args(argv)
    if not args.data_dir or not Path(args.data_dir).is_dir():
        print("error: pass --data-dir (or set BATCHMIXUP_DATA_DIR) to the shared data folder",
              file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("RAY_ADDRESS", None)
    data_dir = Path(args.data_dir).resolve()
    out = Path(args.out or tempfile.mkdtemp(prefix="node-loss-")).resolve()
    cache = out / "cache"  # one feature cache for all runs: extraction happens once
    cache.mkdir(parents=True, exist_ok=True)

    from tests.node_loss import two_node_scenario

    passed = 0
    for i in range(1, args.runs + 1):
        workdir = out / f"run-{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        try:
            problems, output = two_node_scenario(workdir, data_dir, cache)
        except BaseException as exc:  # noqa: BLE001 - a failed wait is a failed run
            if isinstance(exc, KeyboardInterrupt):
                raise
            problems, output = [f"{type(exc).__name__}: {str(exc)[:500]}"], ""
        (workdir / "sweep-output.log").write_text(output)
        seconds = time.monotonic() - start
        if problems:
            print(f"run {i}: FAILED in {seconds:.0f}s: {'; '.join(problems)}", flush=True)
        else:
            passed += 1
            print(f"run {i}: every cell FINISHED once in {seconds:.0f}s", flush=True)
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
    print(f"{passed}/{args.runs} runs ended with every cell FINISHED once ({out})", flush=True)
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
