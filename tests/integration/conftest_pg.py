"""A real PostgreSQL server (Debian's) for the archive tests: initdb + pg_ctl on a free port, trust auth.

As root the cluster runs as the `postgres` user (PostgreSQL refuses to run as root); otherwise as us.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    pytest.fail(f"{name} not found: apt-get install -y postgresql")


def _as_owner(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    user = None
    workdir = tempfile.mkdtemp(prefix="gw-pg-")
    if os.geteuid() == 0:
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
    data = os.path.join(workdir, "data")
    port = free_port()
    subprocess.run(_as_owner([_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                              "--no-sync"], user), check=True, capture_output=True)
    opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(_as_owner([_bin("pg_ctl"), "-D", data, "-o", opts, "-l", os.path.join(workdir, "log"), "-w",
                              "start"], user), check=True, capture_output=True)
    try:
        wait_for_port(port)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"], user),
                       capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
