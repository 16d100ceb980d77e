"""The graphs the benchmarks run: the research pipeline's shape and a layered DAG.

Each graph is a list of ``(name, dependencies)``; builders turn it into an
AgentPipeline manifest for Stagecoach and a StateGraph for LangGraph, so both run the
exact same dependency structure.
"""

from __future__ import annotations

import random

Graph = list[tuple[str, list[str]]]


def research() -> Graph:
    """DESIGN §2's research pipeline without the loops (both peers run it as a DAG)."""
    return [
        ("research", []),
        ("scrape-0", ["research"]), ("scrape-1", ["research"]), ("scrape-2", ["research"]),
        ("analyze", ["scrape-0", "scrape-1", "scrape-2"]),
        ("fact-check", ["research"]),
        ("draft", ["analyze", "fact-check"]),
        ("verify", ["draft"]),
        ("qa", ["verify"]),
        ("publish", ["qa"]),
    ]


def layered(stages: int, width: int, seed: int = 7) -> Graph:
    """``stages`` nodes in layers of ``width``; each depends on 1-3 nodes of the layer above."""
    rnd = random.Random(seed)
    graph: Graph = []
    previous: list[str] = []
    layer: list[str] = []
    for i in range(stages):
        if i % width == 0 and i:
            previous, layer = layer, []
        name = f"s{i}"
        deps = sorted(rnd.sample(previous, min(len(previous), rnd.randint(1, 3))))
        graph.append((name, deps))
        layer.append(name)
    return graph


def depth(graph: Graph) -> int:
    """Number of stages on the longest path."""
    level: dict[str, int] = {}
    for name, deps in graph:
        level[name] = 1 + max((level[d] for d in deps), default=0)
    return max(level.values())
