"""Builds benchmarks/cost/corpus/ from public agent trajectories (run once; the output is committed).

Two sources, both MIT licensed; every corpus file names its own source and licence.

1. github.com/SWE-agent/mini-swe-agent: coding-agent trajectories of deepseek-chat solving
SWE-bench tasks with the toolcall agent (`trajectory_format: mini-swe-agent-1.1`), at commit
3c7d1d7f8fb8630b187744215f67470b6755f60c ("Add evaluation artifacts"). Each trajectory becomes one
OpenAI chat conversation: system prompt, task, then assistant tool calls and tool results, exactly
as the agent sent them (metadata fields dropped), cut after `MAX_TURNS` assistant turns.

2. github.com/sierra-research/tau-bench (commit 7362a17, `historical_trajectories/gpt-4o-airline.json`):
   gpt-4o as an airline customer-service agent with the real tau-bench policy as system prompt,
   its 14 tools (schemas read from `tau_bench/envs/airline/tools/*.py`) and JSON tool results.
   The longest conversation of each of `TAU_COUNT` tasks (trial 0), cut like the others.

    python -m benchmarks.cost.build_corpus /path/to/mini-swe-agent.git /path/to/tau-bench.git
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

COMMIT = "3c7d1d7f8fb8630b187744215f67470b6755f60c"
REPO = "https://github.com/SWE-agent/mini-swe-agent"
PICKS = (
    "output/deepseek_bench1/django__django-11049/django__django-11049.traj.json",
    "output/deepseek_bench1/astropy__astropy-12907/astropy__astropy-12907.traj.json",
    "output/deepseek_bench_dev/pydicom__pydicom-1256/pydicom__pydicom-1256.traj.json",
    "output/deepseek_lite_dev/sqlfluff__sqlfluff-2419/sqlfluff__sqlfluff-2419.traj.json",
    "output/deepseek_bench_dev/marshmallow-code__marshmallow-1359/marshmallow-code__marshmallow-1359.traj.json",
    "output/deepseek_lite_dev/pvlib__pvlib-python-1072/pvlib__pvlib-python-1072.traj.json",
    "output/deepseek_bench_dev/pylint-dev__astroid-1196/pylint-dev__astroid-1196.traj.json",
    "output/deepseek_bench_dev/pyvista__pyvista-4315/pyvista__pyvista-4315.traj.json",
)
MAX_TURNS = 24
BASH_TOOL = {"type": "function", "function": {
    "name": "bash", "description": "Execute a bash command",
    "parameters": {"type": "object", "properties": {"command": {
        "type": "string", "description": "The bash command to execute"}}, "required": ["command"]}}}


def _calls(raw: Any) -> list[dict[str, Any]]:
    calls = ast.literal_eval(raw) if isinstance(raw, str) else raw
    return [{"id": c["id"], "type": "function",
             "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
            for c in calls or []]


def convert(traj: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    turns = 0
    for m in traj["messages"]:
        role = m["role"]
        if role == "assistant":
            if turns == MAX_TURNS:
                break
            turns += 1
            msg: dict[str, Any] = {"role": "assistant", "content": m.get("content") or None}
            calls = _calls(m.get("tool_calls")) if m.get("tool_calls") not in (None, "None") else []
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": m["tool_call_id"], "content": m["content"]})
        else:
            out.append({"role": role, "content": m["content"]})
    while out and out[-1]["role"] == "assistant":
        out.pop()  # a conversation ends on the request that asks for the next answer
    return out


TAU_COMMIT = "7362a1708d720a4d697d042f21fd8637ea144c3b"
TAU_REPO = "https://github.com/sierra-research/tau-bench"
TAU_COUNT = 8


def _git(git_dir: str, commit: str, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                          capture_output=True).stdout


def _tau_tools(git_dir: str) -> list[dict[str, Any]]:
    names = subprocess.run(["git", "--git-dir", git_dir, "ls-tree", "--name-only", TAU_COMMIT,
                            "tau_bench/envs/airline/tools/"], check=True, capture_output=True, text=True).stdout
    tools = []
    for path in sorted(names.split()):
        tree = ast.parse(_git(git_dir, TAU_COMMIT, path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "get_info":
                ret = next(n for n in ast.walk(node) if isinstance(n, ast.Return))
                assert ret.value is not None
                tools.append(ast.literal_eval(ret.value))
    return tools


def tau(git_dir: str, here: Path) -> None:
    tools = _tau_tools(git_dir)
    runs = json.loads(_git(git_dir, TAU_COMMIT, "historical_trajectories/gpt-4o-airline.json"))
    runs = sorted((r for r in runs if r.get("trial", 0) == 0), key=lambda r: -len(r["traj"]))[:TAU_COUNT]
    for run in runs:
        messages = convert({"messages": [{**m, "content": None if m.get("content") == "None" else m.get("content")}
                                         for m in run["traj"]]})
        doc = {"source": f"{TAU_REPO}/blob/{TAU_COMMIT}/historical_trajectories/gpt-4o-airline.json "
               f"(task {run['task_id']}, trial 0); tools from tau_bench/envs/airline/tools/",
               "licence": "MIT (Copyright (c) 2024 Sierra)", "kind": "agent", "tools": tools,
               "messages": messages}
        (here / f"tau-airline-{run['task_id']}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def main(git_dir: str, tau_dir: str) -> None:
    here = Path(__file__).parent / "corpus"
    tau(tau_dir, here)
    for path in PICKS:
        raw = _git(git_dir, COMMIT, path)
        name = path.rsplit("/", 1)[-1].removesuffix(".traj.json")
        doc = {"source": f"{REPO}/blob/{COMMIT}/{path}", "licence": "MIT (Copyright (c) 2025 Kilian A. Lieret "
               "and Carlos E. Jimenez)", "kind": "agent", "tools": [BASH_TOOL],
               "messages": convert(json.loads(raw))}
        (here / f"swe-{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
