"""``python -m orchestrator.search``: tune alpha (and BatchMixup's temperature), then test.

The paper gives no alpha, and BatchMixup adds a second knob: with Beta draws in [0, 1] a
softmax at temperature 1 gives weights within a factor e of uniform, so mixed points sit close
to the batch mean; the temperature controls how far they spread. This driver searches both
without ever looking at the test set, then reruns the chosen values on it.

Phases (``--phase search|final|both``, default both):

search
    One Ray Tune run per (task, ratio, strategy) group: ``num_samples`` trials proposed by
    Optuna TPE (``ray.tune.search.optuna.OptunaSearch``, seeded; the first trial is the default
    values when ``include_default``), stopped early by ASHA on per-epoch ``val_accuracy``
    (``time_attr=epoch``, ``max_t`` = the longest epoch budget). Every search trial trains
    the cell of seed ``search.seed`` with ``eval_split=val``: a seeded validation split carved
    from the training subset, of ``max(min_val_examples, val_fraction * subset)`` examples,
    capped at ``max_val_fraction`` of the subset (``--dry-run`` prints the sizes). The test
    split is then not even evaluated; the leakage guard refuses any search cell whose
    ``eval_split`` is not ``val`` and any search result carrying test metrics.

    Selection: the highest ``val_accuracy`` at the last epoch among the trials that trained
    every epoch (ASHA-stopped trials are scored only at an earlier epoch, so they compete only
    when no trial finished), ties broken by ``val_macro_f1``, then by the earlier trial. The
    choices go to ``results/<name>/chosen.json`` (``--choices-file``), written after each
    group, so an interrupted search keeps its finished groups (rerunning skips them unless
    ``--redo-search``).

final
    The sweep's cells with the chosen values, seeds ``--final-seeds`` (default: the file's
    ``seeds``), ``eval_split=test``, run exactly like ``python -m orchestrator.sweep`` (same
    trainable, tracker, skip-if-FINISHED, terminal table and report). Groups with nothing to
    tune (strategy ``none``) run with their settings as they are.

MLflow layout (one experiment, the sweep's name):
    * a parent run per group, ``<task>/<ratio>/<arm>/search`` (tags ``kind=search_group``,
      ``phase=search``): the search's settings, split sizes and, at the end, the chosen values
      (params ``chosen.alpha`` ...), ``best_val_accuracy`` and the chosen trial;
    * nested under it one run per trial, ``<task>/<ratio>/<arm>/search-<k>-<trial id>``
      (tags ``kind=cell``, ``phase=search``, params with the sampled values, metrics
      ``val_accuracy``/``val_macro_f1`` only). ASHA-stopped trials end FINISHED with
      ``early_stopped=true``; the selected one has ``chosen=true``;
    * the final runs ``<task>/<ratio>/<arm>/<seed>`` (``phase=final``), which Table 1 of the
      report uses; its search section lists the search trials.
    Filter ``tags.phase = 'final'`` (or ``'search'``) in the UI to compare either phase alone.

Exit codes as for the sweep: 0 everything FINISHED, 1 some trial or cell FAILED (or tracking
writes unsent), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from orchestrator import sweep as sweep_cli
from orchestrator.search_plan import (
    SELECTION_RULE,
    Choices,
    Group,
    SearchPlan,
    build_groups,
    check_no_leakage,
    parse_plan,
    val_settings,
)
from orchestrator.search_tune import search_group
from orchestrator.spaces import Cell, Sweep, SweepError, parse_list
from orchestrator.tracking import (
    SweepTracker,
    TrackingError,
    check_tracking_uri,
    default_tracking_uri,
    standard_tags,
)
from trainers.config import CellConfig
from trainers.errors import CellError, ConfigError

PHASES = ("search", "final", "both")
EPILOG = """examples:
  python -m orchestrator.search --preset alpha_search --data-dir ../shared/data
  python -m orchestrator.search --preset alpha_search --tasks banking77 --ratios 0.1 \\
      --strategies batchmixup --num-samples 8 --dry-run
  python -m orchestrator.search --preset alpha_search --phase search      # choose only
  python -m orchestrator.search --preset alpha_search --phase final --final-seeds 0,1,2
  # the defaults (alpha=1, temperature=1) with the same settings, for comparison:
  python -m orchestrator.sweep --preset alpha_search --name alpha_search-default

exit codes: 0 every trial and cell FINISHED, 1 something FAILED (see the tables), 2 bad input.
"""




def run_search(args: argparse.Namespace, sweep: Sweep, plan: SearchPlan, groups: list[Group],
               choices: Choices, tracking_uri: str, storage: str) -> int:
    todo = [g for g in groups if args.redo_search or g.key not in choices.groups]
    kept = len(groups) - len(todo)
    print(f"[{sweep.name}] search: {len(groups)} groups x {plan.num_samples} trials; {kept} "
          f"already chosen in {choices.path}, {len(todo)} to search", flush=True)
    if not todo:
        return 0
    tracker = SweepTracker(tracking_uri, sweep.name, phase="search",
                           base_tags={"sweep": sweep.name,
                                      **standard_tags("orchestrator.search")})
    ensure_ray(args)
    resources = sweep_cli.trial_resources(args, sweep)
    cells = [Cell(f"{g.key}/search", g.arm, CellConfig.from_dict(g.base)) for g in todo]
    sweep_cli.warm_caches(cells, resources)
    choices.data.update(name=sweep.name, source=sweep.source, selection=SELECTION_RULE)
    failed = 0
    for group in todo:
        try:
            entry = search_group(args, sweep, plan, group, tracker, storage, resources)
        except CellError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        choices.groups[group.key] = entry
        choices.save()
        if entry.get("failed"):
            failed += 1
        if tracker.queue.pending and not tracker.queue.drain(args.flush_timeout):
            print(f"error: {len(tracker.queue.pending)} MLflow writes could not be sent "
                  f"({tracker.queue.last_error})", file=sys.stderr)
            return 1
    print()
    print(choices_table(choices, groups))
    print(f"\n[{sweep.name}] choices written to {choices.path}")
    return 1 if failed else 0


def choices_table(choices: Choices, groups: list[Group]) -> str:
    lines = [f"{'task':<10} {'ratio':>6} {'strategy':<18} {'trials':>6} {'val n':>6} "
             f"{'val acc %':>9}  chosen"]
    for g in groups:
        e = choices.groups.get(g.key)
        if e is None:
            continue
        acc = e.get("val_accuracy")
        values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in e.get("values", {}).items()) or "(nothing to tune)"
        acc_text = f"{acc * 100:9.2f}" if isinstance(acc, (int, float)) else f"{'—':>9}"
        lines.append(f"{g.task:<10} {g.ratio:>6g} {g.arm:<18} {e.get('trials', 0):>6} "
                     f"{g.val_examples:>6} {acc_text}  {values}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- final phase


def final_cells(sweep: Sweep, plan: SearchPlan, groups: list[Group],
                choices: Choices) -> list[Cell]:
    """The sweep's cells (final seeds, eval_split=test) with each group's chosen values."""
    missing = [g.key for g in groups if g.key not in choices.groups]
    if missing:
        raise SweepError(f"no chosen values for {', '.join(missing)} in {choices.path}; run "
                         "--phase search first (or --phase both)")
    by_key = {g.key: g for g in groups}
    cells = []
    for cell in sweep.cells():
        key = cell.name.rsplit("/", 1)[0]
        values = dict(choices.groups[key].get("values", {}))
        unknown = sorted(set(values) - {p.name for p in by_key[key].space})
        if unknown:
            raise SweepError(f"{choices.path}: {key} chose {', '.join(unknown)}, which the "
                             "search space does not vary for this strategy")
        config = CellConfig.from_dict({**cell.config.to_dict(), **values,
                                       **val_settings(plan), "eval_split": "test"}).validate()
        cells.append(Cell(cell.name, cell.arm, config))
    return cells


def run_final(args: argparse.Namespace, sweep: Sweep, plan: SearchPlan, groups: list[Group],
              choices: Choices, tracking_uri: str, storage: str) -> int:
    cells = final_cells(sweep, plan, groups, choices)
    sweep_cli.check_inputs(cells)  # fingerprints of the cells with the chosen values
    tracker = SweepTracker(tracking_uri, sweep.name, phase="final",
                           base_tags={"sweep": sweep.name,
                                      **standard_tags("orchestrator.search")})
    # other chosen values are another configuration: new runs, never mixed with the old
    todo = sweep_cli.cells_to_run(sweep, cells, tracker, tracking_uri)
    if args.resume:
        sweep_cli.check_resume_manifest(f"{storage}/{sweep.name}-final", todo)
    tracker.record_launch({c.name: c.fingerprint for c in cells})
    resources: dict[str, float] = {}
    if todo:
        ensure_ray(args)
        resources = sweep_cli.trial_resources(args, sweep)
    run_as = dataclasses.replace(sweep, name=f"{sweep.name}-final")  # its own Tune folder
    outcome = sweep_cli.execute(args, run_as, todo, tracker, storage, resources) if todo else {}
    return sweep_cli.finish(args, sweep, cells, tracker, tracking_uri, outcome)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The sweep's flags (shared parent parsers, same meaning) plus the search's own."""
    p = argparse.ArgumentParser(
        prog="python -m orchestrator.search",
        description="Tune alpha, BatchMixup's temperature and every arm's learning rate per "
                    "(task, ratio, strategy) on a validation split with Optuna TPE + ASHA, "
                    "then rerun the chosen values on the test set with several seeds. Search "
                    "and final runs share one MLflow experiment, separated by the tag "
                    "phase=search|final.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[sweep_cli.grid_flags(
                     preset="alpha_search; the file needs a 'search:' field",
                     seeds="same as --final-seeds",
                     dry_run="list the search groups (with split sizes) and final cells, "
                             "then exit"),
                 sweep_cli.data_flags(),
                 sweep_cli.ray_flags(resume="final phase: continue an interrupted final run "
                                     "from its Tune state (the search phase always skips "
                                     "groups already chosen)"),
                 sweep_cli.tracking_flags()])
    p.set_defaults(preset="alpha_search")
    s = p.add_argument_group("search")
    s.add_argument("--phase", choices=PHASES, default="both",
                   help="search: choose values; final: test runs with the chosen values; "
                   "both (default)")
    s.add_argument("--num-samples", type=int, help="trials per (task, ratio, strategy) "
                   "(default: the file's search.num_samples)")
    s.add_argument("--final-seeds", help="comma-separated seeds of the final phase (default: "
                   "the file's seeds)")
    s.add_argument("--search-seed", type=int, help="cell seed of the search trials: their "
                   "training subset and validation split (default: search.seed)")
    s.add_argument("--choices-file", help="where the chosen values are written and read "
                   "(default: <report dir>/chosen.json, i.e. results/<name>/chosen.json)")
    s.add_argument("--redo-search", action="store_true", help="search groups again even if "
                   "the choices file has them (their earlier search runs are deleted)")
    return p


def check_args(args: argparse.Namespace) -> None:
    sweep_cli.check_ray_args(args)
    if args.num_samples is not None and args.num_samples < 1:
        raise SweepError("--num-samples must be >= 1")
    if args.search_seed is not None and args.search_seed < 0:
        raise SweepError("--search-seed must be >= 0")
    if args.final_seeds is not None:
        if args.seeds is not None and args.seeds != args.final_seeds:
            raise SweepError("--seeds and --final-seeds disagree; give one")
        args.seeds = args.final_seeds
    parse_list("--final-seeds", args.seeds, int)


def ensure_ray(args: argparse.Namespace) -> None:
    """Start (or connect to) Ray once, only when there is something to run."""
    import ray

    if not ray.is_initialized():
        sweep_cli.start_ray(args)


def run(args: argparse.Namespace) -> int:
    check_args(args)
    sweep = sweep_cli.build_sweep(args)
    if not sweep.search:
        raise SweepError(f"{sweep.source}: no 'search:' field; use a search file such as "
                         "search_spaces/alpha_search.yaml")
    plan = parse_plan(sweep, args)
    final = sweep.cells()
    sweep_cli.check_inputs(final)
    groups = build_groups(sweep, plan)
    check_no_leakage([CellConfig.from_dict(g.base) for g in groups], sweep.source)
    report_dir = Path(args.report_dir) if args.report_dir else Path("results") / sweep.name
    choices = Choices.load(Path(args.choices_file) if args.choices_file
                           else report_dir / "chosen.json")
    if args.dry_run:
        print(f"search groups (seed {plan.seed}, eval_split=val, {plan.num_samples} trials "
              "each):")
        for g in groups:
            space = ", ".join(f"{p.name} ~ {p.describe()}" for p in g.space) or "nothing"
            print(f"  {g.key}: train {g.train_examples}, validation {g.val_examples} "
                  f"(val_fraction {g.base['val_fraction']:.3g}); {space}")
        print(f"final cells (eval_split=test): {len(final)}")
        for cell in final:
            print(f"  {cell.name}")
        return 0
    tracking_uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(tracking_uri)
    storage = sweep_cli.resolve_storage(args.storage_path)
    sweep_cli.check_storage(storage)
    if args.address:
        sweep_cli.check_address(args.address)
    sweep_cli.preflight(args, sweep, storage, [f"{sweep.name}-final"])
    sweep_cli.hold_sweep_lock(args, tracking_uri, sweep.name)  # both phases, one experiment
    if args.phase == "final":
        final_cells(sweep, plan, groups, choices)  # fail before Ray starts: missing choices
    code = 0
    if args.phase in ("search", "both"):
        code = run_search(args, sweep, plan, groups, choices, tracking_uri, storage)
    if args.phase in ("final", "both"):
        if any(g.key not in choices.groups for g in groups):
            print("error: the search did not choose values for every group; the final phase "
                  "is skipped", file=sys.stderr)
            return 1
        code = max(code, run_final(args, sweep, plan, groups, choices, tracking_uri, storage))
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as cleanup:  # the sweep lock is released on every exit
        args.cleanup = cleanup
        try:
            return run(args)
        except (SweepError, TrackingError, CellError, ConfigError) as exc:
            return sweep_cli.fail(str(exc))
        except KeyboardInterrupt:
            print("interrupted; rerun the same command: groups already chosen are kept, "
                  "final cells already FINISHED are skipped", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
