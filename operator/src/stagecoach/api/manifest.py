"""Reading manifests: YAML documents → API objects, or problems with field paths.

Every mistake becomes a :class:`Problem` with the field path (``spec.stages[3].dependsOn``)
and a reason a user can act on, plus the YAML line where known; nothing raises to the
user and no field is silently dropped (duplicate keys and unknown fields are errors).
YAML is read with YAML 1.2 booleans so ``on:`` (retry.on) stays a key, not ``true``; an
unquoted ``on``/``yes``/``no`` key is still reported, because kubectl (YAML 1.1) would
turn it into ``true`` and the API server would reject the manifest.
A document that fails the schema is still salvaged (:mod:`.salvage`) so the semantic
checks can report the rest of its problems in the same pass; it is kept apart from the
valid documents and never run. A replay provider's cassette file is read and checked
like a manifest (:func:`load_cassette`), with the cassette's own field paths.
This module reads files only in :func:`load_file` and :func:`load_cassette`; the rest
is pure.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ._values import show_value, type_word
from .pipeline import DNS_LABEL
from .provider import Cassette
from .quantity import QUANTITY
from .resources import KINDS, AgentPipeline, AgentPipelineTemplate, ModelProvider
from .salvage import salvage

__all__ = [
    "Document",
    "Loaded",
    "ManifestError",
    "ManifestSet",
    "Problem",
    "format_loc",
    "load_cassette",
    "load_documents",
    "load_file",
    "parse_documents",
    "problems_from_validation",
    "read_file",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where, and why."""

    path: str
    message: str
    line: int | None = None
    file: str | None = None
    doc: int | None = None
    source_line: int | None = None
    """For a template or expression: the line within it (from 1) the problem is on."""

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
    blocks: dict[tuple[str | int, ...], int] = field(default_factory=dict)
    """Literal block scalars (``prompt: |``): path → the line of the ``|``, so line n of
    the text is line ``blocks[path] + n`` of the file."""
    repaired: tuple[tuple[str | int, ...], ...] = ()
    """Set on a salvaged document: the paths where it differs from the file."""

    @property
    def kind(self) -> str:
        """The document's kind."""
        return self.obj.kind


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""LibYAML's loader where PyYAML was built with it (same nodes and marks, ~10x faster);
used for cassettes."""

_YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


def _yaml12(base: Any) -> Any:
    """``base`` with YAML 1.2 booleans: only true/false, so ``on``/``yes`` stay strings.

    The resolver is Python in both PyYAML loaders (LibYAML's composer calls it per
    scalar), so the same override works on LibYAML's ``CSafeLoader``, which parses a
    manifest ~10x faster than the pure Python one with the same nodes and line marks.
    The one difference, a plain scalar's style (``None`` in Python, ``""`` in LibYAML),
    is read as falsy by ``_walk_lines``."""
    loader: Any = type(f"Yaml12{base.__name__}", (base,), {})
    loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
    }
    loader.add_implicit_resolver("tag:yaml.org,2002:bool", _YAML12_BOOL, list("tTfF"))
    return loader


_Yaml12Loader: Any = _yaml12(_SafeLoader)
"""The manifest loader: LibYAML where PyYAML has it, else the pure Python one."""


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
    problems: list[Problem], blocks: dict[tuple[str | int, ...], int] | None = None,
) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.style == "|" and blocks is not None:
        blocks[path] = node.start_mark.line + 1
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
            if key in _YAML11_BOOLS and not key_node.style:  # plain, unquoted
                problems.append(
                    Problem(format_loc((*path, key)), f'write the key as "{key}" (quoted): '
                            f"kubectl and other YAML 1.1 parsers read an unquoted {key} as a "
                            "boolean", key_node.start_mark.line + 1)
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk_lines(value_node, (*path, key), lines, problems, blocks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_lines(item, (*path, i), lines, problems, blocks)


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


_EXPECTED = {
    "model_type": "an object", "model_attributes_type": "an object", "dict_type": "an object",
    "list_type": "a list", "string_type": "a string", "int_type": "an integer",
    "int_parsing": "an integer", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "a boolean (true or false)", "bool_parsing": "a boolean (true or false)",
}


def _got(value: Any) -> str:
    """``a string ('x')``, ``an integer (5)``, ``null``, ``a list``."""
    shown = show_value(value)
    return type_word(value) + (f" ({shown})" if shown and value is not None else "")


def _reason(err: Any, model: type[BaseModel]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        name = str(loc[-1])
        choices = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        allowed = f"; allowed: {', '.join(choices)}" if choices and not close else ""
        return f"unknown field '{name}'{hint}{allowed}"
    if kind == "missing":
        return "required field is missing"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, got {_got(err.get('input'))}"
    if kind == "too_short" and loc and loc[-1] == "stages":
        return "a pipeline needs at least one stage"
    if kind in {"too_short", "too_long"} and "actual_length" in ctx:
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        word = "least" if kind == "too_short" else "most"
        items = "item" if bound == 1 else "items"
        return f"must have at {word} {bound} {items}, got {ctx['actual_length']}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
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
        shown = show_value(err["input"])
        msg += f" (got {shown or type_word(err['input'])})"
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


@dataclass
class Loaded:
    """What one file holds: valid documents, salvaged ones and every problem."""

    documents: list[Document] = field(default_factory=list)
    salvaged: list[Document] = field(default_factory=list)
    """Documents that failed the schema, repaired for the semantic checks only."""
    broken: set[tuple[str, str]] = field(default_factory=set)
    """(kind, name) of documents that failed the schema beyond repair."""
    problems: list[Problem] = field(default_factory=list)


def _yaml_error(exc: yaml.YAMLError, filename: str) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    reason = getattr(exc, "problem", None) or str(exc)
    return Problem("", f"YAML syntax error: {reason}", line, filename)


def parse_documents(text: str, filename: str = "<input>") -> Loaded:
    """Parse every YAML document in ``text``: the valid ones, the salvaged ones, and all
    problems."""
    out = Loaded()
    try:
        nodes = list(yaml.compose_all(text, Loader=_Yaml12Loader))
    except yaml.YAMLError as exc:
        out.problems.append(_yaml_error(exc, filename))
        return out
    except RecursionError:
        out.problems.append(Problem("", "YAML is nested too deeply", None, filename))
        return out
    index = -1
    for node in nodes:
        if node is None:
            continue
        index += 1
        lines: dict[tuple[str | int, ...], int] = {}
        blocks: dict[tuple[str | int, ...], int] = {}
        doc_problems: list[Problem] = []
        try:
            _walk_lines(node, (), lines, doc_problems, blocks)
            data = _Yaml12Loader(text).construct_document(node)
        except yaml.YAMLError as exc:
            out.problems.append(_place(_yaml_error(exc, filename), filename, index))
            continue
        except RecursionError:
            out.problems.append(Problem("", "YAML is nested too deeply", None, filename, index))
            continue
        out.problems.extend(_place(p, filename, index) for p in doc_problems)
        if not isinstance(data, dict):
            out.problems.append(Problem("", "a document must be a mapping with apiVersion and "
                                        "kind", lines.get(()), filename, index))
            continue
        kind = data.get("kind")
        model: type[Any] | None = Cassette if kind == "Cassette" else KINDS.get(str(kind))
        if model is None:
            known = ", ".join([*KINDS, "Cassette"])
            out.problems.append(Problem("kind", f"unknown kind {kind!r}; expected one of "
                                        f"{known}", lines.get(("kind",)), filename, index))
            continue
        try:
            obj = model.model_validate(data)
        except ValidationError as exc:
            out.problems.extend(
                _place(p, filename, index) for p in problems_from_validation(exc, model, lines)
            )
            fixed = salvage(model, data)
            if fixed is not None:
                out.salvaged.append(Document(fixed.obj, filename, index, lines, blocks,
                                             fixed.repaired))
            else:
                meta = data.get("metadata")
                name = meta.get("name") if isinstance(meta, dict) else None
                if isinstance(name, str):
                    out.broken.add((str(kind), name))
            continue
        out.documents.append(Document(obj, filename, index, lines, blocks))
    return out


def load_documents(text: str, filename: str = "<input>") -> tuple[list[Document], list[Problem]]:
    """Parse every YAML document in ``text``; return the valid ones and all problems."""
    loaded = parse_documents(text, filename)
    return loaded.documents, loaded.problems


def _place(p: Problem, filename: str, index: int) -> Problem:
    return Problem(p.path, p.message, p.line, filename, index)


def _read_text(path: str | Path) -> tuple[str | None, Problem | None]:
    try:
        return Path(path).read_text(encoding="utf-8"), None
    except OSError as exc:
        return None, Problem("", f"cannot read file: {exc.strerror or exc}", None, str(path))
    except UnicodeDecodeError:
        return None, Problem("", "file is not UTF-8 text", None, str(path))


def read_file(path: str | Path) -> Loaded:
    """Read and parse one manifest file (``-`` is not supported; pass a path)."""
    text, problem = _read_text(path)
    if text is None:
        return Loaded(problems=[problem] if problem else [])
    return parse_documents(text, str(path))


def load_file(path: str | Path) -> tuple[list[Document], list[Problem]]:
    """Read and parse one manifest file; the valid documents and all problems."""
    loaded = read_file(path)
    return loaded.documents, loaded.problems


def load_cassette(path: str | Path) -> list[Problem]:
    """Check a cassette file the way the replay provider reads it (YAML 1.1, one
    document, the :class:`Cassette` schema); problems carry the cassette's own paths."""
    text, problem = _read_text(path)
    if text is None:
        return [problem] if problem else []
    name = str(path)
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
        if node is None:
            return []  # an empty cassette: every request will find no entry, but it loads
        lines: dict[tuple[str | int, ...], int] = {}
        _walk_lines(node, (), lines, [])
        data = _SafeLoader(text).construct_document(node)
    except yaml.YAMLError as exc:
        return [_yaml_error(exc, name)]
    except RecursionError:
        return [Problem("", "YAML is nested too deeply", None, name)]
    if not isinstance(data, dict):
        return [Problem("", f"a cassette must be a mapping with entries, got {type_word(data)}",
                        lines.get(()), name)]
    try:
        Cassette.model_validate(data)
    except ValidationError as exc:
        return [Problem(p.path, p.message, p.line, name)
                for p in problems_from_validation(exc, Cassette, lines)]
    return []


@dataclass
class ManifestSet:
    """All documents from a set of files, indexed by kind and name.

    ``documents`` are the valid ones, the only ones anything may run; ``salvaged`` and
    ``broken`` serve validation (see :class:`Loaded`).
    """

    documents: list[Document] = field(default_factory=list)
    salvaged: list[Document] = field(default_factory=list)
    broken: set[tuple[str, str]] = field(default_factory=set)

    def add(self, docs: list[Document]) -> None:
        """Add parsed documents."""
        self.documents.extend(docs)

    def add_loaded(self, loaded: Loaded) -> None:
        """Add what :func:`read_file` returned."""
        self.documents.extend(loaded.documents)
        self.salvaged.extend(loaded.salvaged)
        self.broken |= loaded.broken

    def of_kind(self, kind: str) -> list[Document]:
        """Documents of one kind, in file order."""
        return [d for d in self.documents if d.kind == kind]

    def _docs(self, salvaged: bool) -> list[Document]:
        return [*self.documents, *self.salvaged] if salvaged else self.documents

    def templates(self, salvaged: bool = False) -> dict[str, AgentPipelineTemplate]:
        """Templates by name (with ``salvaged``: the repaired ones too, for validation)."""
        return {
            d.obj.metadata.name: d.obj
            for d in self._docs(salvaged)
            if isinstance(d.obj, AgentPipelineTemplate)
        }

    def providers(self, salvaged: bool = False) -> dict[str, ModelProvider]:
        """Providers by name (with ``salvaged``: the repaired ones too, for validation)."""
        return {
            d.obj.metadata.name: d.obj
            for d in self._docs(salvaged) if isinstance(d.obj, ModelProvider)
        }
