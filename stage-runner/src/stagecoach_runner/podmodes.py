"""The run-stage pod split (DESIGN §6): ``stagecoach-runner prepare`` and ``collect``.

A ``run`` stage's pod runs the user's image, which knows nothing of Stagecoach, so the
runner's work is split around it, coordinating only through files in a shared
``emptyDir`` (:class:`~stagecoach_runner.runstage.RunPaths`):

* ``prepare`` (a regular init container) loads the upstream outputs and writes
  ``input.json``; the user's container gets ``STAGECOACH_INPUT``/``STAGECOACH_OUTPUT``
  pointing into the directory.
* ``collect`` (a native sidecar: an init container with ``restartPolicy: Always``) waits
  until the kubelet stops it with SIGTERM after the user's container exited, then checks
  and stores the output and writes the :class:`~stagecoach.api.AttemptResult` as its
  termination message. It cannot see the user's exit code; the operator reads that from
  the pod status and only trusts the collector's result when the command exited 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import time
from pathlib import Path

from stagecoach.api import AttemptResult, AttemptSpec, inline_output
from stagecoach.store import Store, StoreError, TooLarge

from .clock import SystemClock
from .errors import AttemptError
from .runstage import collect_output, prepare_input
from .tracing import TraceWriter, clip

__all__ = ["STOP_FILE", "collect_mode", "prepare_mode", "sidecar_command"]

STOP_FILE = ".stop"
"""Written into the shared directory by :func:`sidecar_command`'s shell on SIGTERM."""


def sidecar_command(runner: list[str], dir: str) -> list[str]:
    """The collector's container command: a shell that traps SIGTERM at once and turns
    it into the file ``<dir>/.stop``, with the runner as its child. A short user command
    can exit (and the kubelet send SIGTERM) before Python has even started; a signal
    that arrives that early must not kill the collector."""
    runner_cmd = " ".join(shlex.quote(a) for a in [*runner, "collect", "--dir", dir])
    stop = shlex.quote(f"{dir}/{STOP_FILE}")
    script = (f'trap ": > {stop}" TERM INT; {runner_cmd} & pid=$!; rc=0; '
              "while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done; exit $rc")
    return ["sh", "-c", script]


async def prepare_mode(spec: AttemptSpec, store: Store, dir: str) -> AttemptResult:
    """Write ``input.json`` into ``dir`` and record the InputSnapshot."""
    started = time.monotonic()
    trace = TraceWriter(store, spec, SystemClock())
    try:
        variables = await prepare_input(spec, store, dir)
        assert spec.run is not None
        await trace.emit("InputSnapshot", {
            "command": [*spec.run.command, *spec.run.args],
            "input": clip(json.dumps(variables, ensure_ascii=False, default=str))})
        result = AttemptResult(phase="Succeeded")
    except AttemptError as e:
        result = AttemptResult.failed(e.error_class, e.message)
    except StoreError as e:
        result = AttemptResult.failed("Error", f"store: {e}")
    return result.model_copy(update={"duration_ms": round((time.monotonic() - started) * 1000)})


async def collect_mode(spec: AttemptSpec, store: Store, dir: str,
                       stop: asyncio.Event | None = None) -> AttemptResult:
    """Wait for SIGTERM (or ``stop``), then check and store the command's output."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    Path(dir).mkdir(parents=True, exist_ok=True)
    marker = Path(dir) / STOP_FILE
    while not stop.is_set() and not marker.exists():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    started = time.monotonic()
    trace = TraceWriter(store, spec, SystemClock())
    try:
        kept: dict[str, bytes] = {}
        key = await collect_output(spec, store, dir, 0, trace=trace, kept=kept)
        result = AttemptResult(phase="Succeeded", output_ref=key, output=inline_output(kept[key]))
    except AttemptError as e:
        result = AttemptResult.failed(e.error_class, e.message)
    except TooLarge as e:
        result = AttemptResult.failed("OutputTooLarge", str(e))
    except StoreError as e:
        result = AttemptResult.failed("Error", f"store: {e}")
    return result.model_copy(update={"duration_ms": round((time.monotonic() - started) * 1000)})
