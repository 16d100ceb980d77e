"""The variables a stage sees: ``params``, ``stages.<name>``, ``item``, ``index``, ``loop``.

The attempt spec names upstream outputs by store key; this module loads them, so agent
prompts and run stages' ``STAGECOACH_INPUT`` are built from the same dictionary
(DESIGN §2). A forEach stage's output is the list of its instances' outputs in index
order, ``null`` for an instance without one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stagecoach.api import AttemptSpec, UpstreamRef
from stagecoach.store import NotFound, Store, StoreError, decode_output

from .errors import AttemptError

__all__ = ["load_output", "load_variables"]


async def load_output(store: Store, key: str | None, *, stage: str) -> Any:
    """The value stored under ``key`` (None for no key)."""
    if key is None:
        return None
    try:
        return decode_output(await store.get(key)).value
    except NotFound:
        raise AttemptError(
            "Error", f"output of stage {stage!r} is missing from the store ({key})"
        ) from None
    except (StoreError, ValueError) as e:
        raise AttemptError("Error", f"cannot read the output of stage {stage!r}: {e}") from None


async def _upstream(store: Store, name: str, ref: UpstreamRef) -> dict[str, Any]:
    if ref.inline:  # small: the operator copied it into the spec
        output: Any = ref.value
    elif ref.instance_refs is not None:
        output = list(
            await asyncio.gather(*(load_output(store, k, stage=name) for k in ref.instance_refs))
        )
    else:
        output = await load_output(store, ref.output_ref, stage=name)
    return {
        "output": output,
        "phase": ref.phase,
        "iteration": ref.iteration,
        "attempt": ref.attempt,
    }


async def load_variables(
    spec: AttemptSpec, store: Store, only: set[str] | None = None
) -> dict[str, Any]:
    """``{params, stages, item, index, loop}`` with upstream outputs loaded.

    ``only``: the stages whose outputs are read (others keep phase and counters with a
    null output, unread); None loads every output.
    """
    names = sorted(spec.upstream)
    wanted = [n for n in names if only is None or n in only]
    loaded = dict(
        zip(wanted, await asyncio.gather(*(_upstream(store, n, spec.upstream[n]) for n in wanted)),
            strict=True)
    )
    values = [
        loaded[n] if n in loaded else {"output": None, "phase": spec.upstream[n].phase,
                                       "iteration": spec.upstream[n].iteration,
                                       "attempt": spec.upstream[n].attempt}
        for n in names
    ]
    return {
        "params": spec.params,
        "stages": dict(zip(names, values, strict=True)),
        "item": spec.item,
        "index": spec.index,
        "loop": {
            "iteration": spec.loop.iteration,
            "from": spec.loop.from_,
            "reason": spec.loop.reason,
        },
    }
