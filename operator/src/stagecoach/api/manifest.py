"""Reading manifests: YAML documents → API objects, or problems with field paths.

Every mistake becomes a :class:`Problem` with the field path (``spec.stages[3].dependsOn``)
and a reason a user can act on, plus the YAML line where known; nothing raises to the
user and no field is silently dropped (duplicate keys and unknown fields are errors).
YAML is read with YAML 1.2 booleans so ``on:`` (retry.on) stays a key, not ``true``; an
unquoted ``on``/``yes``/``no`` key is still reported, because kubectl (YAML 1.1) would
turn it into ``true`` and the API server would reject the manifest.
This module reads files only in :func:`load_file`; the rest is pure.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .pipeline import DNS_LABEL
from .provider import Cassette
from .quantity import QUANTITY
from .resources import KINDS, AgentPipeline, AgentPipelineTemplate, ModelProvider

__all__ = [
    "Document",
    "ManifestError",
    "ManifestSet",
    "Problem",
    "format_loc",
    "load_documents",
    "load_file",
    "problems_from_validation",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where, and why."""

    path: str
    message: str
    line: int | None = None
    file: str | None = None
    doc: int | None = None

    def render(self) -> str:
        """``FILE: path: reason (line N)`` — the ``stagecoach validate`` line format."""
        where = f"{self.file}: " if self.file else ""
        if not self.path:
            at = f"line {self.line}: " if self.line else ""
            return f"{where}{at}{self.message}"
        path = self.path
        if self.doc:
            path = f"documents[{self.doc}].{path}"
        line = f" (line {self.line})" if self.line else ""
        return f"{where}{path}: {self.message}{line}"


class ManifestError(Exception):
    """Raised by helpers that need a valid manifest; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(p.render() for p in problems))
        self.problems = problems


@dataclass
class Document:
    """One parsed document and where it came from."""

    obj: AgentPipeline | AgentPipelineTemplate | ModelProvider | Cassette
    file: str
    index: int
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The document's kind."""
        return self.obj.kind


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so ``on``/``yes`` stay strings."""


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


_YAML11_BOOLS = {"on", "off", "yes", "no", "y", "n", "On", "Off", "Yes", "No", "ON", "OFF",
                 "YES", "NO", "Y", "N"}


def format_loc(loc: tuple[str | int, ...]) -> str:
    """``('spec', 'stages', 3, 'dependsOn')`` → ``spec.stages[3].dependsOn``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _walk_lines(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int],
    problems: list[Problem],
) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(
                    Problem(format_loc((*path, key)), "duplicate key (the later one would "
                            "silently win)", key_node.start_mark.line + 1)
                )
            seen.add(key)
            if key in _YAML11_BOOLS and key_node.style is None:
                problems.append(
                    Problem(format_loc((*path, key)), f'write the key as "{key}" (quoted): '
                            f"kubectl and other YAML 1.1 parsers read an unquoted {key} as a "
                            "boolean", key_node.start_mark.line + 1)
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk_lines(value_node, (*path, key), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_lines(item, (*path, i), lines, problems)


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in getattr(annotation, "__args__", ()) or ():
        out.extend(_model_args(arg))
    return out


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """Field names valid at ``loc`` inside ``model`` (for typo suggestions)."""
    current: list[type[BaseModel]] = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in current:
            for name, info in m.model_fields.items():
                if (info.alias or name) == part:
                    nxt.extend(_model_args(info.annotation))
        if not nxt:
            return []
        current = nxt
    return sorted({(i.alias or n) for m in current for n, i in m.model_fields.items()})


_PATTERN_REASONS = {
    QUANTITY: "is not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi, 64Mi; never negative)",
    r"^\S(.*\S)?$": "must not be empty or start or end with whitespace",
    r"^[ -<>-~]+$": "is not a valid environment variable name (printable ASCII, no '=')",
}


def _reason(err: Any, model: type[BaseModel]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    if kind == "extra_forbidden":
        name = str(loc[-1])
        choices = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        allowed = f"; allowed: {', '.join(choices)}" if choices and not close else ""
        return f"unknown field '{name}'{hint}{allowed}"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        pattern = str(err.get("ctx", {}).get("pattern", ""))
        got = repr(err.get("input"))
        if pattern == DNS_LABEL:
            return (f"{got} is not a DNS label: use lowercase letters, digits and '-', "
                    "starting and ending with a letter or digit")
        known = _PATTERN_REASONS.get(pattern)
        if known:
            return f"{got} {known}"
        return f"{got} does not match the pattern {pattern}"
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind not in {"value_error", "assertion_error"} and "input" in err:
        shown = repr(err["input"])
        if len(shown) <= 60 and not isinstance(err["input"], dict | list):
            msg += f" (got {shown})"
    return msg


def problems_from_validation(
    exc: ValidationError,
    model: type[BaseModel],
    lines: dict[tuple[str | int, ...], int] | None = None,
    prefix: tuple[str | int, ...] = (),
) -> list[Problem]:
    """Turn pydantic errors into problems with camelCase field paths and YAML lines."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        line = None
        if lines:
            for n in range(len(loc), -1, -1):
                if loc[:n] in lines:
                    line = lines[loc[:n]]
                    break
        problems.append(Problem(format_loc((*prefix, *loc)), _reason(err, model), line))
    return problems


def load_documents(text: str, filename: str = "<input>") -> tuple[list[Document], list[Problem]]:
    """Parse every YAML document in ``text``; return the valid ones and all problems."""
    docs: list[Document] = []
    problems: list[Problem] = []
    try:
        nodes = list(yaml.compose_all(text, Loader=_Yaml12Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        return [], [Problem("", f"YAML syntax error: {reason}", line, filename)]
    index = -1
    for node in nodes:
        if node is None:
            continue
        index += 1
        lines: dict[tuple[str | int, ...], int] = {}
        doc_problems: list[Problem] = []
        _walk_lines(node, (), lines, doc_problems)
        data = _Yaml12Loader(text).construct_document(node)
        problems.extend(_place(p, filename, index) for p in doc_problems)
        if not isinstance(data, dict):
            problems.append(Problem("", "a document must be a mapping with apiVersion and "
                                    "kind", lines.get(()), filename, index))
            continue
        kind = data.get("kind")
        model: type[Any] | None = Cassette if kind == "Cassette" else KINDS.get(str(kind))
        if model is None:
            known = ", ".join([*KINDS, "Cassette"])
            problems.append(Problem("kind", f"unknown kind {kind!r}; expected one of {known}",
                                    lines.get(("kind",)), filename, index))
            continue
        try:
            obj = model.model_validate(data)
        except ValidationError as exc:
            problems.extend(
                _place(p, filename, index) for p in problems_from_validation(exc, model, lines)
            )
            continue
        docs.append(Document(obj, filename, index, lines))
    return docs, problems


def _place(p: Problem, filename: str, index: int) -> Problem:
    return Problem(p.path, p.message, p.line, filename, index)


def load_file(path: str | Path) -> tuple[list[Document], list[Problem]]:
    """Read and parse one manifest file (``-`` is not supported; pass a path)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        return [], [Problem("", f"cannot read file: {exc.strerror or exc}", None, str(path))]
    except UnicodeDecodeError:
        return [], [Problem("", "file is not UTF-8 text", None, str(path))]
    return load_documents(text, str(path))


@dataclass
class ManifestSet:
    """All documents from a set of files, indexed by kind and name."""

    documents: list[Document] = field(default_factory=list)

    def add(self, docs: list[Document]) -> None:
        """Add parsed documents."""
        self.documents.extend(docs)

    def of_kind(self, kind: str) -> list[Document]:
        """Documents of one kind, in file order."""
        return [d for d in self.documents if d.kind == kind]

    def templates(self) -> dict[str, AgentPipelineTemplate]:
        """Templates by name."""
        return {
            d.obj.metadata.name: d.obj
            for d in self.documents
            if isinstance(d.obj, AgentPipelineTemplate)
        }

    def providers(self) -> dict[str, ModelProvider]:
        """Providers by name."""
        return {
            d.obj.metadata.name: d.obj for d in self.documents if isinstance(d.obj, ModelProvider)
        }
