"""The package has no import cycles (module-level imports; see tests/import_cycles.py)."""

from __future__ import annotations

from pathlib import Path

from tests.import_cycles import cycles, graph

ROOT = Path(__file__).resolve().parents[2] / "gateway"


def test_no_import_cycles() -> None:
    assert cycles(graph(ROOT)) == []


def test_the_checker_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import y\n"
                              "from pkg.a import z\n")
    (pkg / "c.py").write_text("from pkg.b import x\n")
    assert cycles(graph(pkg)) == [["pkg.a", "pkg.b"]]
