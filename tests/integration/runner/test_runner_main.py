"""``python -m stagecoach_runner`` as a process: spec in, termination message and exit code out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stagecoach.api import EXIT_CODES, AttemptResult


def _spec(tmp_path: Path, code: str) -> dict[str, Any]:
    return {
        "pipeline": {"name": "p", "uid": "u"},
        "stage": {
            "name": "s",
            "run": {
                "image": "i",
                "command": [sys.executable, "-c", code],
                "output": {"format": "json"},
            },
        },
        "store": {"type": "local", "path": str(tmp_path / "run")},
    }


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stagecoach_runner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_success_from_file(tmp_path: Path) -> None:
    code = "import os; open(os.environ['STAGECOACH_OUTPUT'], 'w').write('[1, 2]')"
    (tmp_path / "a.json").write_text(json.dumps(_spec(tmp_path, code)))
    term = tmp_path / "termination-log"
    proc = _run(["--attempt", str(tmp_path / "a.json"), "--termination-log", str(term)])
    assert proc.returncode == 0, proc.stderr
    result = AttemptResult.from_termination_message(term.read_text())
    assert result.ok and result.output_ref == "outputs/s/1.json"
    assert (tmp_path / "run" / "outputs" / "s" / "1.json").exists()


def test_failure_from_env_sets_exit_code(tmp_path: Path) -> None:
    term = tmp_path / "term"
    env = {
        "STAGECOACH_ATTEMPT": json.dumps(_spec(tmp_path, "raise SystemExit(3)")),
        "STAGECOACH_TERMINATION_LOG": str(term),
    }
    proc = _run([], env)
    assert proc.returncode == EXIT_CODES["Error"]
    assert AttemptResult.from_termination_message(term.read_text()).error_class == "Error"


def test_bad_spec_is_invalid_input(tmp_path: Path) -> None:
    term = tmp_path / "term"
    proc = _run(["--termination-log", str(term)], {"STAGECOACH_ATTEMPT": '{"stage": 1}'})
    assert proc.returncode == EXIT_CODES["InvalidInput"]
    result = AttemptResult.from_termination_message(term.read_text())
    assert result.error_class == "InvalidInput"
    assert "cannot read the attempt spec" in (result.message or "")


def test_sigterm_cancels_and_kills_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    term = tmp_path / "term"
    env = {
        **os.environ,
        "STAGECOACH_ATTEMPT": json.dumps(_spec(tmp_path, code)),
        "STAGECOACH_TERMINATION_LOG": str(term),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "stagecoach_runner"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == EXIT_CODES["Error"]
    result = AttemptResult.from_termination_message(term.read_text())
    assert "cancelled" in (result.message or "")
    child = int(pidfile.read_text())
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the command survived SIGTERM")
