"""The import rules of docs/architecture.md, checked on the source (every import, lazy ones included).

* no import cycles between equal's modules;
* selection (``equal.select``) never imports the run, extraction, files or experiments;
* the stages and the experiments never import ``equal.run``;
* the ground floor (``errors``, ``types``, ``version``, ``config``, ``io``) imports nothing above it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in (SRC / "equal").rglob("*.py"):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _targets(mod: str, node: ast.AST) -> list[str]:
    pkg = mod if MODULES[mod].name == "__init__.py" else mod.rsplit(".", 1)[0]
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name.split(".")[0] == "equal"]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
            b = ".".join(base) + ("." + node.module if node.module else "")
        else:
            b = node.module or ""
        if b.split(".")[0] != "equal":
            return []
        names = [f"{b}.{a.name}" if f"{b}.{a.name}" in MODULES else b for a in node.names]
    out = []
    for n in names:
        while n and n not in MODULES:
            n = n.rpartition(".")[0]
        if n and n != mod:
            out.append(n)
    return out


def import_graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = defaultdict(set)
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            g[mod].update(_targets(mod, node))
    return g


GRAPH = import_graph()


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(set(g) | {w for ws in g.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def _under(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def _violations(sources: list[str], forbidden: list[str]) -> list[str]:
    bad = []
    for mod, targets in GRAPH.items():
        if any(_under(mod, s) for s in sources):
            bad += [f"{mod} -> {t}" for t in sorted(targets) if any(_under(t, f) for f in forbidden)]
    return bad


def test_the_graph_is_read():  # the checks below would pass vacuously on an empty graph
    assert "equal.run.pipeline" in GRAPH and "equal.select.setup" in GRAPH["equal.run.pipeline"]
    assert "equal.select.registry" in GRAPH["equal.select.setup"]


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("sources,forbidden", [
    (["equal.select"], ["equal.run", "equal.extract", "equal.io", "equal.corpus", "equal.experiments", "equal.cli",
                        "equal.executors", "equal.export", "equal.vectors", "equal.layout", "equal.report"]),
    (["equal.corpus", "equal.reference", "equal.cluster", "equal.score", "equal.align", "equal.embed",
      "equal.extract", "equal.hygiene", "equal.select", "equal.vectors", "equal.sizing", "equal.experiments",
      "equal.executors", "equal.export", "equal.report", "equal.inspection", "equal.tune"], ["equal.run", "equal.cli"]),
    (["equal.run.stages", "equal.run.finalize", "equal.run.folder", "equal.run.worklog"], ["equal.run.pipeline"]),
    (["equal.errors", "equal.types", "equal.version"], ["equal"]),
])
def test_layers(sources, forbidden):
    # a forbidden prefix of "equal" means: nothing of equal at all (but the module itself)
    bad = _violations(sources, forbidden)
    assert bad == [], bad


@pytest.mark.parametrize("mod,allowed", [
    ("equal.config", {"equal.errors"}),
    ("equal.io", {"equal.errors"}),
])
def test_ground_floor(mod, allowed):
    assert GRAPH[mod] <= allowed, GRAPH[mod] - allowed


def test_no_module_over_500_lines():
    # where one is over, say why here, in one line
    allowed = {
        "equal.corpus": "the corpus source classes (JSONL, compressed, sharded, Parquet, HF) and the index",
        "equal.config": "every config section as a documented dataclass; docs/config.md is generated from it",
    }
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500}
    assert set(long) <= set(allowed), {m: n for m, n in long.items() if m not in allowed}


def test_tests_are_laid_out_as_unit_and_e2e():
    """A test module lives in tests/unit/ (one unit, no run folder, no server) or tests/e2e/ (runs, the
    CLI, servers, trainers); none is left at the top."""
    tests = SRC.parent / "tests"
    assert sorted(p.name for p in tests.glob("test_*.py")) == []
    assert len(list((tests / "unit").glob("test_*.py"))) >= 10
    assert len(list((tests / "e2e").glob("test_*.py"))) >= 10
