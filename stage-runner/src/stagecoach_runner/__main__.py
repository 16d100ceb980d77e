"""``stagecoach-runner`` / ``python -m stagecoach_runner``: one attempt in a pod.

Reads the :class:`~stagecoach.api.AttemptSpec` from ``--attempt FILE`` or
``$STAGECOACH_ATTEMPT``, runs it, writes the :class:`~stagecoach.api.AttemptResult` as
the termination message (``--termination-log``, ``$STAGECOACH_TERMINATION_LOG``, or
``/dev/termination-log`` when writable) and to stdout, and exits with the error class's
code (:data:`stagecoach.api.EXIT_CODES`; 0 on success). SIGTERM (pod deletion)
cancels the attempt, which kills a run stage's command.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError
from stagecoach.api import AttemptResult, AttemptSpec
from stagecoach.store import open_store

from .attempt import run_attempt

__all__ = ["main"]

TERMINATION_ENV = "STAGECOACH_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


def _termination_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get(TERMINATION_ENV):
        return Path(os.environ[TERMINATION_ENV])
    default = Path(DEFAULT_TERMINATION_LOG)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def _write_result(result: AttemptResult, path: Path | None) -> None:
    text = result.to_termination_message()
    if path is not None:
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"stagecoach-runner: cannot write {path}: {e}", file=sys.stderr)
    print(text)


async def _mode(mode: str, spec: AttemptSpec, dir: str) -> AttemptResult:
    from .podmodes import collect_mode, prepare_mode

    store = open_store(spec.store, pipeline=spec.pipeline)
    try:
        if mode == "prepare":
            return await prepare_mode(spec, store, dir)
        return await collect_mode(spec, store, dir)
    finally:
        close = getattr(store, "aclose", None)
        if close is not None:
            await close()


async def _main(spec: AttemptSpec) -> AttemptResult:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
    store = open_store(spec.store, pipeline=spec.pipeline)
    try:
        return await run_attempt(spec, store)
    except asyncio.CancelledError:
        return AttemptResult.failed("Error", f"{spec.label} was cancelled (SIGTERM)")
    finally:
        close = getattr(store, "aclose", None)
        if close is not None:
            await close()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="stagecoach-runner", description=__doc__)
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "prepare", "collect"],
                        help="run: the whole attempt (default); prepare / collect: a run "
                        "stage's init container / sidecar in a pod")
    parser.add_argument("--dir", default="/stagecoach",
                        help="prepare/collect: the shared directory (default /stagecoach)")
    parser.add_argument("--attempt", metavar="FILE", help="AttemptSpec JSON file")
    parser.add_argument("--termination-log", metavar="FILE", help="where to write the result")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    path = _termination_path(args.termination_log)
    try:
        spec = AttemptSpec.load(args.attempt)
    except (OSError, ValueError, ValidationError) as e:
        result = AttemptResult.failed("InvalidInput", f"cannot read the attempt spec: {e}")
        _write_result(result, path)
        return result.exit_code
    if args.mode != "run":
        result = asyncio.run(_mode(args.mode, spec, args.dir))
        _write_result(result, path)
        # The collector reports failures in its result; the sidecar itself exits 0.
        return result.exit_code if args.mode == "prepare" else 0
    result = asyncio.run(_main(spec))
    _write_result(result, path)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
