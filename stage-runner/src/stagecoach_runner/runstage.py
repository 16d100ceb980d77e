"""Running a ``run`` stage: the command reads STAGECOACH_INPUT, writes STAGECOACH_OUTPUT.

Three steps, separate so the pod can split them across containers (DESIGN §6):
:func:`prepare_input` (the init container) writes the input document into a directory,
:func:`run_command` (the user's container; locally a subprocess) runs the command, and
:func:`collect_output` (the sidecar) checks and stores what the command wrote. Locally
all three run here, in order, with the command in its own process group so cancellation
(a timeout, Ctrl-C) kills it and everything it started; given a logs directory, the
command's stdout and stderr are kept there (:func:`log_paths`: the local run directory's
``logs/``), else they live and die with the working directory (in a pod: the pod log).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagecoach.api import AttemptSpec
from stagecoach.store import Store, TooLarge, encode_output, output_key

from .errors import AttemptError
from .schema import SchemaError, first_error
from .tracing import TraceSink, clip
from .variables import load_variables

__all__ = [
    "INPUT_ENV",
    "OUTPUT_ENV",
    "CommandResult",
    "RunPaths",
    "collect_output",
    "log_paths",
    "prepare_input",
    "run_command",
]

INPUT_ENV = "STAGECOACH_INPUT"
OUTPUT_ENV = "STAGECOACH_OUTPUT"
TAIL_BYTES = 2000
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class RunPaths:
    """Files of one run-stage attempt inside its working directory."""

    dir: Path

    @property
    def input(self) -> Path:
        """The input document (``STAGECOACH_INPUT``)."""
        return self.dir / "input.json"

    @property
    def output(self) -> Path:
        """Where the command writes its output (``STAGECOACH_OUTPUT``)."""
        return self.dir / "output"

    @property
    def stdout(self) -> Path:
        """The command's standard output."""
        return self.dir / "stdout.log"

    @property
    def stderr(self) -> Path:
        """The command's standard error."""
        return self.dir / "stderr.log"


def log_paths(logs: str | os.PathLike[str], spec: AttemptSpec) -> tuple[Path, Path]:
    """``<logs>/<stage>/<iteration>[-<index>]-<attempt>.stdout`` and ``.stderr``."""
    index = "" if spec.index is None else f"-{spec.index}"
    base = Path(logs) / spec.stage.name / f"{spec.iteration}{index}-{spec.attempt}"
    return base.with_name(base.name + ".stdout"), base.with_name(base.name + ".stderr")


@dataclass(frozen=True)
class CommandResult:
    """How the command ended."""

    exit_code: int
    stderr_tail: str


async def prepare_input(
    spec: AttemptSpec, store: Store, dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Write ``input.json`` (``{params, stages, item, index, loop}``) into ``dir``."""
    paths = RunPaths(Path(dir))
    paths.dir.mkdir(parents=True, exist_ok=True)
    variables = await load_variables(spec, store)
    data = json.dumps(variables, ensure_ascii=False, indent=2, default=str)
    await asyncio.to_thread(paths.input.write_text, data, "utf-8")
    paths.output.unlink(missing_ok=True)
    return variables


def _environment(spec: AttemptSpec, paths: RunPaths, base: dict[str, str]) -> dict[str, str]:
    run = spec.run
    assert run is not None
    env = dict(base)
    for var in run.env:
        if var.value is not None:
            env[var.name] = var.value
        # valueFrom (Secrets, ConfigMaps) exists only in the cluster; locally a variable
        # of that name in the caller's environment is passed through unchanged.
    env[INPUT_ENV] = str(paths.input)
    env[OUTPUT_ENV] = str(paths.output)
    return env


def _cwd(spec: AttemptSpec) -> str | None:
    run = spec.run
    assert run is not None
    base = Path(spec.base_dir) if spec.base_dir else None
    if run.working_dir:
        wd = Path(run.working_dir)
        return str(base / wd if base is not None and not wd.is_absolute() else wd)
    return str(base) if base is not None else None


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace").strip()
    return ("…" + text) if size > TAIL_BYTES else text


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if wait is None:
            break
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except TimeoutError:
            continue
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 1.0)


async def run_command(
    spec: AttemptSpec,
    dir: str | os.PathLike[str],
    *,
    environ: dict[str, str] | None = None,
    logs: str | os.PathLike[str] | None = None,
) -> CommandResult:
    """Run the stage's command as a subprocess in its own process group; its stdout and
    stderr go to ``logs`` (see :func:`log_paths`) when given, else into ``dir``."""
    run = spec.run
    assert run is not None
    paths = RunPaths(Path(dir))
    env = _environment(spec, paths, dict(os.environ if environ is None else environ))
    argv = [*run.command, *run.args]
    stdout, stderr = (paths.stdout, paths.stderr) if logs is None else log_paths(logs, spec)
    stdout.parent.mkdir(parents=True, exist_ok=True)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=_cwd(spec),
                start_new_session=True,
            )
        except OSError as e:
            raise AttemptError("Error", f"cannot start {argv[0]!r}: {e.strerror or e}") from None
        try:
            code = await proc.wait()
        except BaseException:
            await asyncio.shield(_kill(proc))
            raise
    return CommandResult(code, _tail(stderr))


def _read_output(path: Path) -> bytes | None:
    """The output file's bytes (None when absent). The user's command is untrusted: a
    symbolic link (say, to the collector's own ServiceAccount token), a FIFO or a
    device is refused, never followed or read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AttemptError("MalformedOutput", f"{OUTPUT_ENV} is a symbolic link; "
                               "write the output into the file itself") from None
        raise AttemptError("MalformedOutput", f"cannot read {OUTPUT_ENV}: {e}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise AttemptError("MalformedOutput", f"{OUTPUT_ENV} is not a regular file")
        return f.read()


async def collect_output(
    spec: AttemptSpec,
    store: Store,
    dir: str | os.PathLike[str],
    exit_code: int,
    *,
    stderr_tail: str | None = None,
    trace: TraceSink | None = None,
    kept: dict[str, bytes] | None = None,
) -> str:
    """Check the command's output and store it; returns the output key (and, with
    ``kept``, leaves the stored bytes there under that key).

    Exit code non-zero → ``Error`` with the code and the end of stderr; missing or
    invalid JSON (``output.format: json``) → ``MalformedOutput``. A command that writes
    no output file succeeds with output ``null`` (json) or ``""`` (text).
    """
    run = spec.run
    assert run is not None
    paths = RunPaths(Path(dir))
    if exit_code != 0:
        tail = _tail(paths.stderr) if stderr_tail is None else stderr_tail
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exited with code {exit_code}"
        detail = f"; stderr: {tail}" if tail else ""
        raise AttemptError("Error", f"command {run.command[0]!r} {how}{detail}")
    raw = await asyncio.to_thread(_read_output, paths.output)
    fmt = run.output.format if run.output else "text"
    text = raw.decode("utf-8", "replace") if raw is not None else None
    value: Any
    if fmt == "json":
        if text is None or not text.strip():
            value = None
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise AttemptError(
                    "MalformedOutput",
                    f"{OUTPUT_ENV} is not valid JSON ({e}): {clip(text, 200)!r}",
                ) from None
        schema = run.output.json_schema if run.output else None
        if schema is not None:
            try:
                problem = first_error(value, schema)
            except SchemaError as e:
                raise AttemptError("InvalidInput", f"run.output.schema: {e}") from None
            if problem:
                raise AttemptError(
                    "MalformedOutput", f"the output does not match output.schema: {problem}"
                )
    else:
        value = text or ""
    if trace is not None:
        shown = value if fmt == "json" else clip(value)
        if fmt == "json" and text is not None and len(text) > 64 * 1024:
            shown = clip(text)
        await trace.emit("OutputSnapshot", {"format": fmt, "output": shown})
    key = output_key(spec.stage.name, spec.iteration, spec.index)
    data = encode_output(
        value,
        fmt,
        stage=spec.stage.name,
        iteration=spec.iteration,
        attempt=spec.attempt,
        index=spec.index,
    )
    try:
        await store.put(key, data)
    except TooLarge as e:
        raise AttemptError("OutputTooLarge", str(e)) from None
    if kept is not None:
        kept[key] = data
    return key
