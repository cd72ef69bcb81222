"""Every YAML and TOML example in README.md and docs/*.md loads with the gateway's own loader.

A block is a whole configuration file unless the line before its fence says otherwise with
`<!-- example: not a gateway config (REASON) -->`; such blocks must still parse. Inside a whole
config, `{...}` and a trailing `, ...}` stand for "the rest, documented elsewhere" and are read
as nothing more (that is how the README writes its overview of every section).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from gateway.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>yaml|yml|toml)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
NOT_CONFIG = re.compile(r"<!--\s*example:\s*not a gateway config \((?P<reason>[^)]+)\)\s*-->\s*$")


def blocks() -> list[tuple[str, str, str, str | None]]:
    """(where, language, text, reason it is not a config or None) for every fenced block."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = NOT_CONFIG.search(before)
            lang = "toml" if match["lang"] == "toml" else "yaml"
            found.append((f"{path.relative_to(ROOT)}:{line}", lang, match["body"],
                          marker["reason"] if marker else None))
    return found


def as_meant(text: str) -> str:
    return re.sub(r",\s*\.\.\.\s*\}", "}", text.replace("{...}", "{}"))


ALL = blocks()
CONFIGS = [b for b in ALL if b[3] is None]
OTHERS = [b for b in ALL if b[3] is not None]


def test_the_extractor_finds_the_known_examples() -> None:
    where = {b[0].split(":")[0] for b in CONFIGS}
    assert {"README.md", "docs/governance.md", "docs/cost.md"} <= where
    assert len(CONFIGS) >= 4 and len(OTHERS) >= 1


@pytest.mark.parametrize(("where", "lang", "text", "reason"), CONFIGS, ids=[b[0] for b in CONFIGS])
def test_config_example_loads(where: str, lang: str, text: str, reason: None, tmp_path: Path) -> None:
    path = tmp_path / f"example.{lang}"
    path.write_text(as_meant(text))
    load_config(path, environ={})  # raises ConfigError naming the key at fault


@pytest.mark.parametrize(("where", "lang", "text", "reason"), OTHERS, ids=[b[0] for b in OTHERS])
def test_other_examples_still_parse(where: str, lang: str, text: str, reason: str) -> None:
    data = tomllib.loads(text) if lang == "toml" else yaml.safe_load(text)
    assert isinstance(data, dict) and data


def test_policy_on_key_is_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("governance:\n  policies:\n    '*':\n"
                    "      - {name: answers, kind: pii, action: redact, on: output}\n"
                    "      - name: both\n        kind: pii\n        on: both\n")
    specs = load_config(path, environ={}).governance.policies["*"]
    assert [s.on for s in specs] == ["output", "both"]
    # A real type error still names its key.
    path.write_text("governance:\n  policies:\n    '*':\n      - {name: a, kind: pii, on: sideways}\n")
    with pytest.raises(Exception, match="on"):
        load_config(path, environ={})
