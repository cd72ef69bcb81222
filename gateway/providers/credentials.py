"""Where a provider's credentials and default address come from: its key from a file or the
environment (read once at start-up, never logged) and Bedrock's region. AWS credentials for SigV4,
which may be temporary, are aws_credentials.py's."""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from gateway.config import ProviderConfig

log = structlog.get_logger("gateway.upstream")


def read_secret(cfg: ProviderConfig, name: str) -> str:
    if cfg.api_key_file:
        try:
            return Path(cfg.api_key_file).read_text().strip()
        except OSError as exc:
            log.warning("provider_key_file_unreadable", provider=name, path=cfg.api_key_file, error=exc.strerror)
            return ""
    if cfg.api_key_env:
        return os.environ.get(cfg.api_key_env, "")
    return ""


def default_base_url(cfg: ProviderConfig) -> str:
    if cfg.kind == "gemini":
        return "https://generativelanguage.googleapis.com"
    if cfg.kind == "bedrock":
        return f"https://bedrock-runtime.{bedrock_region(cfg)}.amazonaws.com"
    return ""


def bedrock_region(cfg: ProviderConfig) -> str:
    return cfg.region or ""  # load_config filled it from AWS_REGION / AWS_DEFAULT_REGION when unset
