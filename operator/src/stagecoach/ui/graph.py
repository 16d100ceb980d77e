"""The pipeline's DAG as an SVG element: layered left to right, forward edges solid,
back-edges dashed, forEach stages drawn as a stack with their instance counts, each node
coloured by its live phase.

Layout is the classic longest-path layering (a stage's column is one more than its
deepest dependency), rows in manifest order within a column; finally stages get a column
of their own. Linear in stages and edges, so a 1,000-stage pipeline draws at once.
Everything from the manifest or the status is escaped. No side effects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from ..api import ResolvedStage, StageStatus

__all__ = ["render_graph"]

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 44, 60, 18, 16
MAX_LABEL = 22


@dataclass(frozen=True)
class _Node:
    stage: ResolvedStage
    col: int
    row: int

    @property
    def x(self) -> int:
        return PAD + self.col * (NODE_W + GAP_X)

    @property
    def y(self) -> int:
        return PAD + self.row * (NODE_H + GAP_Y)


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _layout(stages: Sequence[ResolvedStage], finals: Sequence[ResolvedStage]
            ) -> dict[str, _Node]:
    names = {s.name for s in stages}
    children: dict[str, list[str]] = {s.name: [] for s in stages}
    waiting = {s.name: 0 for s in stages}
    for s in stages:
        for d in s.depends_on:
            if d in names:
                children[d].append(s.name)
                waiting[s.name] += 1
    col = dict.fromkeys(names, 0)
    ready = [s.name for s in stages if waiting[s.name] == 0]
    while ready:  # Kahn's order: every dependency is placed before its dependants
        name = ready.pop()
        for child in children[name]:
            col[child] = max(col[child], col[name] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    last = max(col.values(), default=-1) + 1
    rows: dict[int, int] = {}
    nodes: dict[str, _Node] = {}
    for s in stages:
        c = col[s.name]
        nodes[s.name] = _Node(s, c, rows.get(c, 0))
        rows[c] = rows.get(c, 0) + 1
    for n, s in enumerate(finals):
        nodes[s.name] = _Node(s, last, n)
    return nodes


def _label(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def render_graph(stages: Sequence[ResolvedStage], finals: Sequence[ResolvedStage],
                 status: Mapping[str, StageStatus]) -> str:
    """The DAG as ``<svg>``; ``status``: stage name → its status (phase colours)."""
    nodes = _layout(stages, finals)
    if not nodes:
        return '<p class="muted">No stages.</p>'
    width = max(n.x for n in nodes.values()) + NODE_W + PAD
    height = max(n.y for n in nodes.values()) + NODE_H + PAD + 14
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" viewBox="0 0 {width} {height}"'
           f' width="{width}" height="{height}" role="img" aria-label="Pipeline graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/>'
           '</marker></defs>']
    for node in nodes.values():
        for dep in node.stage.depends_on:
            src = nodes.get(dep)
            if src is None:
                continue
            x1, y1 = src.x + NODE_W, src.y + NODE_H // 2
            x2, y2 = node.x, node.y + NODE_H // 2
            mid = (x1 + x2) // 2
            out.append(f'<path class="edge" data-from="{_e(dep)}" data-to="{_e(node.stage.name)}"'
                       f' d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" '
                       'marker-end="url(#arrow)"/>')
        for route in node.stage.routes:
            dst = nodes.get(route.goto)
            if dst is None:
                continue
            x1, y1 = node.x + NODE_W // 2, node.y + NODE_H
            x2, y2 = dst.x + NODE_W // 2, dst.y + NODE_H
            low = max(y1, y2) + GAP_Y + 6
            out.append(f'<path class="edge back" data-from="{_e(node.stage.name)}" '
                       f'data-to="{_e(route.goto)}" d="M{x1},{y1} C{x1},{low} {x2},{low} '
                       f'{x2},{y2}" marker-end="url(#arrow)"><title>{_e(route.when)} → '
                       f'{_e(route.goto)} (max {route.max_iterations})</title></path>')
    for node in nodes.values():
        s = node.stage
        st = status.get(s.name)
        phase = st.phase if st is not None else "Pending"
        kind = "approval" if s.approval else "agent" if s.agent else "run"
        extra = []
        if st is not None and st.iteration > 1:
            extra.append(f"it {st.iteration}")
        if st is not None and st.reason in ("Cached", "Reused", "AwaitingApproval"):
            extra.append(st.reason)
        counts = st.instances if st is not None else None
        stack = ""
        if s.for_each:
            for k in (2, 1):
                stack += (f'<rect class="stack" x="{node.x + 4 * k}" y="{node.y - 4 * k}" '
                          f'width="{NODE_W}" height="{NODE_H}" rx="7"/>')
            if counts is not None:
                extra.append(f"{counts.succeeded}/{counts.total}"
                             + (f" · {counts.running} running" if counts.running else "")
                             + (f" · {counts.failed} failed" if counts.failed else ""))
            else:
                extra.append("forEach")
        sub = " · ".join([kind, *extra])
        tip = f"{s.name}: {phase}" + (f" ({st.reason}: {st.message})" if st and st.message
                                     else f" ({st.reason})" if st and st.reason else "")
        out.append(
            f'<g class="node {_e(phase)}{" finally" if s.is_finally else ""}" '
            f'data-stage="{_e(s.name)}" data-phase="{_e(phase)}" tabindex="0">{stack}'
            f'<rect x="{node.x}" y="{node.y}" width="{NODE_W}" height="{NODE_H}" rx="7"/>'
            f'<text x="{node.x + 10}" y="{node.y + 18}" class="name">{_e(_label(s.name))}</text>'
            f'<text x="{node.x + 10}" y="{node.y + 35}" class="sub">{_e(sub)}</text>'
            f"<title>{_e(tip)}</title></g>")
    out.append("</svg>")
    return "".join(out)
