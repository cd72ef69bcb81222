"""`python -m benchmarks.harness`: run the benchmark (`make bench`, `make bench-quick`) or re-render a result.

python -m benchmarks.harness run [--quick] [--targets direct,gateway,...] [--out DIR]
python -m benchmarks.harness render RESULT.json     # tables and charts again from the JSON
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import charts, results, scenarios, tables
from benchmarks.harness.runner import Runner
from benchmarks.harness.scenarios import FORWARDER, OVERLOAD
from benchmarks.harness.variants import COMPANY, VARIANTS
from gateway.bench import report
from gateway.bench.progress import Progress, fmt_seconds

RESULTS = Path(__file__).resolve().parent.parent / "results"


def publish(doc: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Overheads and checks into the document; JSON, Markdown (dated and latest) and charts out."""
    results.add_overheads(doc)
    doc["checks"] = results.checks(doc)
    doc["headline"] = results.headline(doc)
    doc["ratios"] = results.ratios(doc)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = results.file_stem(doc)
    try:
        dated = charts.draw(doc, out_dir, stem, latest=True)
    except Exception as exc:  # no matplotlib: the tables still matter more than the pictures
        print(f"bench: charts not drawn: {exc}", file=sys.stderr)
        dated = {}
    latest = {title: name.replace(stem, "latest", 1) for title, name in dated.items()}
    paths = results.write(doc, out_dir, tables.render(doc, dated))
    paths["latest"].write_text(tables.render(doc, latest))
    return paths


def with_calibration(names: list[str]) -> list[str]:
    """A subset that measures the gateway measures the forwarder too, right before it: every run says
    how far the gateway is from the cheapest Python proxy on that machine that day."""
    first = next((i for i, n in enumerate(names) if n.startswith("gateway")), None)
    if first is None or FORWARDER in names:
        return names
    return [*names[:first], FORWARDER, *names[first:]]


def narrow(plan: scenarios.Plan, target_arg: str | None, scenario_arg: str | None) -> None:
    """`--targets` and `--scenarios` applied to a plan. A run of chosen scenarios measures those, not
    the ratios: no calibration target is added and no wrk cross-check runs."""
    if scenario_arg:
        plan.only = frozenset(s.strip() for s in scenario_arg.split(",") if s.strip())
        unknown = plan.only - set(scenarios.SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(scenarios.SCENARIOS)}")
        plan.wrk_connections = 0
    if target_arg:
        names = [t.strip() for t in target_arg.split(",") if t.strip()]
        plan.targets = names if scenario_arg else with_calibration(names)


def _run(args: argparse.Namespace) -> int:
    plan = scenarios.quick_plan() if args.quick else scenarios.full_plan()
    try:
        narrow(plan, args.targets, args.scenarios)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.level_seconds:
        plan.level_s = args.level_seconds
    out_dir = Path(args.out) if args.out else (RESULTS / "tmp" if args.quick else RESULTS)
    progress = Progress()
    started = time.monotonic()
    log_dir = RESULTS / "tmp" / "logs"  # not committed; kept to say why a target failed
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        runner = Runner(
            plan, Path(tmp), log_dir, progress, standin=args.standin, profile_levels=frozenset(args.profile or ())
        )
        progress.log(
            f"bench: {plan.name} run of {', '.join(plan.targets)}; about "
            f"{fmt_seconds(runner.total_s)}; results in {out_dir}"
        )
        doc = runner.run()
    paths = publish(doc, out_dir)
    progress.log(f"bench: finished in {fmt_seconds(time.monotonic() - started)}")
    for kind, path in paths.items():
        progress.log(f"bench: {kind:>6}: {path}")
    # "It works" (never a timing): the gateway, its variants and the forwarder answered at every level.
    mine = ("gateway", COMPANY, *VARIANTS, FORWARDER)
    failed = [name for name, t in doc["targets"].items() if name in mine and not _worked(t)]
    for name in failed:
        progress.log(f"bench: {name} did not work: {doc['targets'][name]['status']}")
    if failed:
        return 1
    return 0


def _worked(target: dict[str, Any]) -> bool:
    # Past capacity a target may shed most requests: that level says nothing about whether it works.
    levels = [lv for lv in target["levels"] if "skipped" not in lv and lv["scenario"] != OVERLOAD]
    return target["status"] == "ok" and not any(lv.get("ok", 1) == 0 for lv in levels)


def _render(args: argparse.Namespace) -> int:
    path = Path(args.result)
    publish(report.read_json(path), path.parent)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmark")
    run.add_argument(
        "--quick",
        action="store_true",
        help="brief levels; gateway, gateway-company (+ 2 variants), forwarder, direct and nginx only",
    )
    run.add_argument("--targets", help="comma-separated subset, e.g. direct,gateway,nginx")
    run.add_argument(
        "--scenarios",
        help="only these scenarios, e.g. throughput,overload (no wrk cross-check, no forwarder added)",
    )
    run.add_argument("--level-seconds", type=float, help="measured seconds per level")
    run.add_argument("--out", help="results directory (default benchmarks/results, or results/tmp when quick)")
    run.add_argument("--standin", action="store_true", help="measure the stand-in mock and forwarder")
    run.add_argument(
        "--profile",
        action="append",
        metavar="TARGET:LEVEL",
        help="sample a level with py-spy, e.g. gateway:throughput@300conn (repeatable; in results/tmp/logs)",
    )
    run.set_defaults(func=_run)
    render = sub.add_parser("render", help="write the tables and charts again from a result JSON")
    render.add_argument("result")
    render.set_defaults(func=_render)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
