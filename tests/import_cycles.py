"""Finds import cycles among a package's modules (module-level imports that run at import time;
imports under `if TYPE_CHECKING:` and inside functions are not edges). Exit 1 and print each cycle."""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(tree: ast.Module, known: set[str]) -> set[str]:
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                               ast.ClassDef)) else ():
            if isinstance(sub, ast.Import):
                out.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom) and sub.module is not None and sub.level == 0:
                subs = {f"{sub.module}.{a.name}" for a in sub.names}
                out.update(subs)
                if not subs <= known:  # `from pkg import submodule` needs the submodule, not pkg's names
                    out.add(sub.module)
    return out


def graph(root: Path) -> dict[str, set[str]]:
    mods: dict[str, ast.Module] = {}
    for path in root.rglob("*.py"):
        mods[module_name(root, path)] = ast.parse(path.read_text())
    edges: dict[str, set[str]] = {}
    for name, tree in mods.items():
        edges[name] = {m for m in runtime_imports(tree, set(mods)) if m in mods and m != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "gateway").resolve()
    found = cycles(graph(root))
    for comp in found:
        print("import cycle:", " <-> ".join(comp))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
