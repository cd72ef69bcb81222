"""`gateway bench`: load-test any OpenAI- or Anthropic-compatible URL, and compare two result files.

    gateway bench --url http://127.0.0.1:8080 --duration 10 --concurrency 50 --output a.json
    gateway bench --url http://127.0.0.1:8080 --requests 2000 --rps 200 --stream
    gateway bench compare a.json b.json

The repository's own suite (`make bench`: fixed-latency mock, pinned cores, peers, charts) lives in
benchmarks/; this command is the operator's tool against a real deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the `bench` command (and its `compare` subcommand) to the `gateway` CLI."""
    p = subparsers.add_parser(
        "bench",
        help="load-test a gateway or provider URL; `bench compare A.json B.json` for deltas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="base URL (…/v1/chat/completions is added) or a full endpoint URL")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--requests", "-n", type=int, help="stop after this many requests")
    amount.add_argument("--duration", "-d", type=float, help="stop after this many seconds (default 10)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", "-c", type=int, help="closed loop: requests in flight (default 10)")
    load.add_argument("--rps", type=float, help="open loop: a fixed request rate")
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--prompt", default="Say hello in one short sentence.")
    p.add_argument("--repeat", action="store_true", help="send the same prompt every time (default: unique)")
    p.add_argument("--temperature", type=float, help="set a temperature (0 makes requests cacheable)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--stream", action="store_true", help="streamed answers; reports time to first byte")
    p.add_argument("--api-key", help="sent as Authorization: Bearer (x-api-key for /v1/messages)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    p.add_argument("--output", "-o", help="write the result as JSON to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
    sub = p.add_subparsers(dest="bench_command")
    c = sub.add_parser("compare", help="a table of the differences between two result files")
    c.add_argument("a", help="baseline result JSON")
    c.add_argument("b", help="new result JSON")
    c.add_argument("--all", action="store_true", help="also list figures that did not change")
    c.add_argument("--only", help="only metrics whose path contains this text")
    c.set_defaults(func=_compare)


def _run(args: argparse.Namespace) -> int:
    if not args.url:
        print("gateway bench: --url is required (or use `gateway bench compare A.json B.json`)", file=sys.stderr)
        return 2
    from gateway.bench import client, report
    from gateway.bench.progress import Progress

    duration = args.duration if args.duration is not None else (None if args.requests else 10.0)
    opts = client.Options(
        url=args.url,
        model=args.model,
        prompt=args.prompt,
        requests=args.requests,
        duration=duration,
        concurrency=args.concurrency or 10,
        rps=args.rps,
        stream=args.stream,
        api_key=args.api_key,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        repeat=args.repeat,
        timeout=args.timeout,
    )
    progress = None if args.no_progress else Progress()

    def tick(tally: client.Tally, elapsed: float) -> None:
        if progress is None:
            return
        if opts.requests:
            fraction, eta = tally.done / opts.requests, None
        else:
            fraction, eta = elapsed / (opts.duration or 1), (opts.duration or 0) - elapsed
        rate = tally.done / elapsed if elapsed > 0 else 0.0
        errors = sum(1 for s in tally.samples if not 200 <= s.status < 300)
        progress.update(fraction, f"{tally.done} done · {rate:,.0f}/s · {errors} errors", eta_s=eta)

    result = asyncio.run(client.Client(opts).run(on_tick=tick))
    if progress is not None:
        progress.close()
    print(render(result))
    if args.output:
        report.write_json(args.output, result)
        print(f"wrote {args.output}")
    return 0 if result["ok"] else 1


def render(result: dict[str, Any]) -> str:
    """A short human summary of one run."""
    load = result["load"]
    how = f"{load['concurrency']} concurrent" if load["mode"] == "closed" else f"{load['rps']:g} RPS offered"
    lines = [
        f"{result['url']}  ({how}, {result['duration_s']:.1f} s, model {result['model']})",
        f"  requests {result['requests']:,}  ok {result['ok']:,}  errors {result['errors']:,}  "
        f"success {result['success_rate']:.2%}  throughput {result['rps']:,.1f}/s",
    ]
    for name in ("latency_ms", "ttfb_ms"):
        s = result.get(name)
        if s:
            label = "latency" if name == "latency_ms" else "ttfb   "
            lines.append(
                f"  {label} ms  p50 {s['p50']:.1f}  p90 {s['p90']:.1f}  p95 {s['p95']:.1f}  "
                f"p99 {s['p99']:.1f}  max {s['max']:.1f}  mean {s['mean']:.1f}"
            )
    if result["hits"]:
        lines.append(f"  cache hits {result['hits']:,} ({result['hit_rate']:.1%})")
    if result["error_kinds"]:
        lines.append("  errors: " + ", ".join(f"{k} x{v}" for k, v in result["error_kinds"].items()))
    if result["client_cpu_util"] > 0.8:
        lines.append(
            f"  note: this client used {result['client_cpu_util']:.0%} of a core and may be the limit; "
            "lower the load or use `make bench`'s C driver"
        )
    return "\n".join(lines)


def _compare(args: argparse.Namespace) -> int:
    from gateway.bench import report

    try:
        a, b = report.read_json(args.a), report.read_json(args.b)
    except (OSError, ValueError) as exc:
        print(f"gateway bench compare: {exc}", file=sys.stderr)
        return 2
    deltas = report.compare(a, b, only=args.only)
    print(report.render_table(deltas, args.a, args.b, show_all=args.all), end="")
    return 0
