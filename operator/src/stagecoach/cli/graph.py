"""``stagecoach graph FILE``: the DAG as Mermaid or Graphviz dot.

Forward edges are solid; forEach stages are marked as fan-out; back-edges (routes) are
dashed and labelled with their condition and ``maxIterations``; finally stages hang off
the end. Works from the resolved pipeline, so templates render the same way.
"""

from __future__ import annotations

from ..api import ResolvedPipeline

__all__ = ["render_dot", "render_mermaid"]


def _id(name: str) -> str:
    return name.replace("-", "_")


def _label(name: str, fan_out: bool, kind: str) -> str:
    return f"{name} ×N" if fan_out else f"{name}" if kind == "agent" else f"{name} ⚙"


def render_mermaid(p: ResolvedPipeline) -> str:
    """Mermaid flowchart text."""
    lines = ["flowchart TD"]
    for s in p.all_stages:
        kind = "agent" if s.agent else "run"
        label = _label(s.name, s.for_each is not None, kind).replace('"', "'")
        shape = f'[["{label}"]]' if s.for_each else f'(["{label}"])' if s.is_finally \
            else f'["{label}"]'
        lines.append(f"  {_id(s.name)}{shape}")
    for s in p.stages:
        for d in s.depends_on:
            arrow = "==>" if s.for_each else "-->"
            tag = "|forEach|" if s.for_each else ""
            lines.append(f"  {_id(d)} {arrow}{tag} {_id(s.name)}")
        if s.when:
            lines.append(f"  %% {s.name} runs when: {s.when}")
    for s in p.stages:
        for r in s.routes:
            cond = r.when.replace('"', "'").replace("|", "¦")
            lines.append(f'  {_id(s.name)} -.->|"{cond} (max {r.max_iterations})"| '
                         f"{_id(r.goto)}")
    if p.finally_stages:
        sinks = [s.name for s in p.stages if not any(s.name in o.depends_on for o in p.stages)]
        for f in p.finally_stages:
            for sink in sinks:
                lines.append(f"  {_id(sink)} -.->|finally| {_id(f.name)}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_dot(p: ResolvedPipeline) -> str:
    """Graphviz dot text."""
    lines = [f"digraph {_q(p.name)} {{", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    for s in p.all_stages:
        kind = "agent" if s.agent else "run"
        attrs = [f"label={_q(_label(s.name, s.for_each is not None, kind))}"]
        if s.for_each:
            attrs.append("peripheries=2")
        if s.is_finally:
            attrs.append("style=dashed")
        if s.when:
            attrs.append(f"tooltip={_q('when: ' + s.when)}")
        lines.append(f"  {_q(s.name)} [{', '.join(attrs)}];")
    for s in p.stages:
        for d in s.depends_on:
            extra = ' [label="forEach", penwidth=2]' if s.for_each else ""
            lines.append(f"  {_q(d)} -> {_q(s.name)}{extra};")
        for r in s.routes:
            lines.append(f"  {_q(s.name)} -> {_q(r.goto)} [style=dashed, constraint=false, "
                         f"label={_q(f'{r.when} (max {r.max_iterations})')}];")
    sinks = [s.name for s in p.stages if not any(s.name in o.depends_on for o in p.stages)]
    for f in p.finally_stages:
        for sink in sinks:
            lines.append(f'  {_q(sink)} -> {_q(f.name)} [style=dotted, label="finally"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
