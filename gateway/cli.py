"""The `gateway` command: serve, mock, config check/import-litellm, version (and the subcommands plug-ins add)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

import msgspec

from gateway import __version__
from gateway.config import ConfigError, load_config


def _serve(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, upstream=args.upstream)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    host = args.host or cfg.server.host
    port = args.port or cfg.server.port
    from gateway.server import default_workers, serve

    workers = args.workers or cfg.server.workers or default_workers()
    # Workers are separate processes: they read the same choices from the environment.
    if args.config:
        os.environ["GATEWAY_CONFIG_FILE"] = os.path.abspath(args.config)
    if args.upstream:
        os.environ["GATEWAY_UPSTREAM"] = args.upstream
    os.environ["GATEWAY_PORT"] = str(port)
    os.environ["GATEWAY_HOST"] = host
    mode = "embedded defaults (built-in mock provider, auth off)" if not (args.config or args.upstream) else (
        args.config or f"upstream {args.upstream}")
    print(f"gateway {__version__}: serving on http://{host}:{port} with {workers} worker(s), config: {mode}",
          file=sys.stderr)
    serve(host, port, workers, cfg.server.drain_timeout_s, header_timeout_ms=cfg.server.header_timeout_ms,
          max_in_flight=cfg.resilience.admission.max_in_flight)
    return 0


def _mock(args: argparse.Namespace) -> int:
    from gateway.mock.app import MockSettings
    from gateway.server import serve_mock

    settings = MockSettings(latency_ms=args.latency_ms, stream_chunks=args.stream_chunks,
                            chunk_interval_ms=args.chunk_interval_ms, error_rate=args.error_rate,
                            error_status=args.error_status, cached_tokens=args.cached_tokens,
                            # Bedrock mode checks SigV4 signatures with this secret (the shape only without)
                            aws_secret=os.environ.get("GATEWAY_MOCK_AWS_SECRET_ACCESS_KEY", ""))
    os.environ["GATEWAY_MOCK_SETTINGS"] = msgspec.json.encode(settings).decode()
    print(f"gateway mock: http://{args.host}:{args.port} latency {args.latency_ms} ms", file=sys.stderr)
    serve_mock(args.host, args.port, args.workers)
    return 0


def _config_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(f"{args.file}: invalid: {exc}", file=sys.stderr)
        return 1
    names = sorted({n for m in cfg.models for n in (m.name, *m.aliases)})
    print(f"{args.file}: ok ({len(cfg.providers)} providers, {len(cfg.models)} models: {', '.join(names)})")
    return 0


def _import_litellm(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from gateway.litellm_import import LiteLLMImportError, convert, render

    try:
        result = convert(Path(args.file).read_text())
    except OSError as exc:
        print(f"{args.file}: cannot read ({exc.strerror})", file=sys.stderr)
        return 1
    except LiteLLMImportError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    text = render(result, os.path.basename(args.file))
    # What is written must load: check it with the gateway's own loader before handing it over.
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "gateway.yaml"
        probe.write_text(text)
        try:
            # A Bedrock provider without a region reads AWS_REGION at start-up (reported below).
            load_config(probe, environ={"AWS_REGION": "us-east-1"})
        except ConfigError as exc:
            print(f"{args.file}: the imported configuration does not load: {exc}", file=sys.stderr)
            return 1
    for line in result.skipped:
        print(f"not carried over: {line}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text)
        print(f"{args.output}: {len(result.config['models'])} models, {len(result.config['providers'])} providers,"
              f" {len(result.skipped)} settings not carried over", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _version(args: argparse.Namespace) -> int:
    try:
        from gateway.transform.compress.phrases import IMPLEMENTATION
    except ImportError as exc:
        IMPLEMENTATION = f"unavailable ({exc})"
    print(f"gateway {__version__} (python {sys.version.split()[0]}, phrase compression: {IMPLEMENTATION})")
    return 0


# Subcommands owned by other modules; each exposes register(subparsers). Missing ones are skipped.
PLUGIN_COMMANDS = ("gateway.bench", "gateway.observe.events_cli", "gateway.keys_cli", "gateway.cache_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="A drop-in OpenAI and Anthropic AI gateway.")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway (embedded defaults when no config is given)")
    p.add_argument("--config", "-c", help="YAML or TOML configuration file")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU quota)")
    p.add_argument("--upstream", help="send every model to this OpenAI- and Anthropic-compatible base URL")
    p.set_defaults(func=_serve)

    m = sub.add_parser("mock", help="run the mock upstream (OpenAI and Anthropic shapes)")
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=9000)
    m.add_argument("--workers", type=int, default=1)
    m.add_argument("--latency-ms", type=float, default=60.0)
    m.add_argument("--stream-chunks", type=int, default=10)
    m.add_argument("--chunk-interval-ms", type=float, default=0.0)
    m.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with an error")
    m.add_argument("--error-status", type=int, default=500)
    m.add_argument("--cached-tokens", type=int, default=0, help="OpenAI cached_tokens reported on answers")
    m.set_defaults(func=_mock)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser("check", help="validate a configuration file")
    cc.add_argument("file")
    cc.set_defaults(func=_config_check)
    ci = csub.add_parser("import-litellm", help="convert a LiteLLM proxy config.yaml to a gateway config")
    ci.add_argument("file")
    ci.add_argument("-o", "--output", help="write here (default: standard output)")
    ci.set_defaults(func=_import_litellm)

    v = sub.add_parser("version", help="print the version")
    v.set_defaults(func=_version)

    for module in PLUGIN_COMMANDS:
        with contextlib.suppress(ModuleNotFoundError):
            register = getattr(importlib.import_module(module), "register", None)
            if register is not None:
                register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
