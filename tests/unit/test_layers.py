"""The layers point one way: models -> decisions -> Redis backend -> handlers -> runtime -> client.

Checked on the imports each module makes at module level: a lower layer never imports a higher
one (``TYPE_CHECKING`` imports included), and no two modules import each other at run time,
directly or round a longer loop (type-only references, such as a stage's and its workflow's,
are not cycles).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "stabilize_redis"

RUNTIME = ("queue.consumer", "queue.dispatch", "queue.processor", "queue.redis_queue", "queue.cancel_listener",
           "durability", "persistence", "recovery", "client", "orchestrator", "demo")
HANDLERS_AND_UP = ("handlers", *RUNTIME)
BACKEND_AND_UP = ("backend", *HANDLERS_AND_UP)
DECISIONS_AND_UP = ("decisions", *BACKEND_AND_UP)

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "models": ("dag", "expressions", "expr", "validation", "support", "tasks", "stages", "queue", *DECISIONS_AND_UP),
    "dag": DECISIONS_AND_UP,
    "decisions": BACKEND_AND_UP,
    "backend": HANDLERS_AND_UP,
    "handlers": RUNTIME,
}
"""Package -> the packages and modules (relative to stabilize_redis) it must never import."""


def _name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


@cache
def imports(type_checking: bool = True) -> dict[str, set[str]]:
    """Module (relative name) -> the stabilize_redis modules it imports at module level."""
    out: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        found: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if _type_checking(node) and not type_checking:
                continue
            for n in node.body if isinstance(node, ast.If) else [node]:
                if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("stabilize_redis."):
                    found.add(n.module.removeprefix("stabilize_redis."))
                elif isinstance(n, ast.Import):
                    found |= {a.name.removeprefix("stabilize_redis.") for a in n.names
                              if a.name.startswith("stabilize_redis.")}
        out[_name(path).removeprefix("stabilize_redis.")] = found
    return out


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_no_layer_imports_a_layer_above_it() -> None:
    wrong = [f"{mod} imports {dep}" for mod, deps in sorted(imports().items()) for dep in sorted(deps)
             for layer, above in FORBIDDEN.items() if _within(mod, layer) and any(_within(dep, a) for a in above)]
    assert wrong == []


def test_there_are_no_import_cycles() -> None:
    graph = imports(type_checking=False)
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in sorted(graph.get(mod, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep] if dep in path else [mod, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert cycles == []
