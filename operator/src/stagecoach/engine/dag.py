"""The pipeline graph: forward edges must be acyclic, back-edges must go to ancestors.

Modelled on Tekton's ``dag`` package: nodes are just names with dependencies, ``build``
rejects unknown names, self-dependencies and cycles with a deterministic message, and
the same graph serves validation and scheduling. No side effects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Graph", "GraphError", "build"]


@dataclass(frozen=True)
class GraphError:
    """A graph problem: the stage (by position), the field and the reason."""

    stage_index: int
    field: str
    reason: str


@dataclass(frozen=True)
class Graph:
    """An acyclic dependency graph over stage names, in a stable topological order."""

    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    children: Mapping[str, tuple[str, ...]]

    def ancestors(self, name: str) -> set[str]:
        """Every stage ``name`` depends on, directly or not (a new set each call)."""
        return set(self._ancestors.get(name, ()))

    @functools.cached_property
    def _ancestors(self) -> dict[str, frozenset[str]]:
        """Every node's ancestors, built once in topological order (set unions, not a
        walk per node: validating a 1,000-stage pipeline asks for all of them)."""
        out: dict[str, frozenset[str]] = {}
        for n in self.order:
            found: set[str] = set(self.deps[n])
            for d in self.deps[n]:
                found |= out[d]
            out[n] = frozenset(found)
        return out

    def descendants(self, name: str) -> set[str]:
        """Every stage that depends on ``name``, directly or not."""
        seen: set[str] = set()
        stack = list(self.children.get(name, ()))
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.children.get(n, ()))
        return seen

    def roots(self) -> list[str]:
        """Stages with no dependencies."""
        return [n for n in self.order if not self.deps[n]]

    def critical_path(self, weight: Mapping[str, float]) -> float:
        """Length of the longest weighted path (used by benchmarks and reports)."""
        best: dict[str, float] = {}
        for n in self.order:
            best[n] = weight.get(n, 0.0) + max((best[d] for d in self.deps[n]), default=0.0)
        return max(best.values(), default=0.0)


def build(stages: Sequence[tuple[str, Iterable[str]]]) -> tuple[Graph | None, list[GraphError]]:
    """Build the graph from ``(name, dependsOn)`` pairs, or return every problem."""
    errors: list[GraphError] = []
    index: dict[str, int] = {}
    for i, (name, _) in enumerate(stages):
        if name in index:
            errors.append(
                GraphError(i, "name", f"duplicate stage name {name!r} (first at index "
                           f"{index[name]})")
            )
        else:
            index[name] = i
    deps: dict[str, tuple[str, ...]] = {}
    for i, (name, raw) in enumerate(stages):
        clean: list[str] = []
        for j, dep in enumerate(raw):
            if dep == name:
                errors.append(GraphError(i, f"dependsOn[{j}]", "a stage cannot depend on itself"))
            elif dep not in index:
                errors.append(GraphError(i, f"dependsOn[{j}]", f"unknown stage {dep!r}"))
            elif dep in clean:
                errors.append(GraphError(i, f"dependsOn[{j}]", f"{dep!r} is listed twice"))
            else:
                clean.append(dep)
        deps.setdefault(name, tuple(clean))
    if errors:
        return None, errors
    children: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in ds:
            children[d].append(n)
    # Kahn's algorithm; ties broken by manifest order so the order is deterministic.
    indegree = {n: len(ds) for n, ds in deps.items()}
    ready = [n for n, _ in stages if indegree.get(n) == 0]
    order: list[str] = []
    while ready:
        ready.sort(key=lambda n: index[n])
        n = ready.pop(0)
        order.append(n)
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) != len(deps):
        cycle = _find_cycle(deps, set(order))
        first = min(cycle, key=lambda n: index[n])
        return None, [
            GraphError(index[first], "dependsOn", "dependency cycle: " + " -> ".join(cycle)
                       + " (use routes with maxIterations for loops)")
        ]
    return Graph(tuple(order), deps, {k: tuple(v) for k, v in children.items()}), []


def _find_cycle(deps: Mapping[str, tuple[str, ...]], done: set[str]) -> list[str]:
    """One cycle among the nodes Kahn's algorithm could not order, as a closed path."""
    remaining = sorted(n for n in deps if n not in done)
    start = remaining[0]
    path: list[str] = [start]
    seen = {start: 0}
    node = start
    while True:
        node = next(d for d in deps[node] if d not in done)
        if node in seen:
            cycle = [*path[seen[node]:], node]
            return list(reversed(cycle))
        seen[node] = len(path)
        path.append(node)
