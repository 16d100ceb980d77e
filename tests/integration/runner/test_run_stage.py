"""Run stages as real subprocesses: input document, exit codes, output parsing, kill."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from stagecoach.api import AttemptSpec
from stagecoach.store import LocalStore, decode_output, encode_output
from stagecoach_runner import FakeClock, collect_output, prepare_input, run_attempt, run_command


def _spec(
    tmp_path: Path, script: str, output: dict[str, Any] | None = None, **over: Any
) -> AttemptSpec:
    (tmp_path / "stage.py").write_text(textwrap.dedent(script))
    doc: dict[str, Any] = {
        "pipeline": {"name": "p", "uid": "u"},
        "stage": {
            "name": "scrape",
            "run": {
                "image": "ignored:1",
                "command": [sys.executable, "stage.py"],
                "env": [{"name": "GREETING", "value": "hej"}],
                **({"output": output} if output else {}),
            },
        },
        "params": {"topic": "batteries"},
        "index": 1,
        "item": "https://example.test/a",
        "store": {"type": "local", "path": str(tmp_path / "run")},
        "upstream": {
            "research": {
                "phase": "Succeeded",
                "iteration": 1,
                "attempt": 2,
                "outputRef": "outputs/research/1.json",
            }
        },
        "baseDir": str(tmp_path),
    }
    doc.update(over)
    return AttemptSpec.model_validate(doc)


@pytest.fixture
async def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "run")
    await store.put("outputs/research/1.json", encode_output({"sources": ["a"]}, "json"))
    return store


ECHO = """
    import json, os
    doc = json.load(open(os.environ["STAGECOACH_INPUT"]))
    doc["greeting"] = os.environ["GREETING"]
    doc["cwd"] = os.getcwd()
    json.dump(doc, open(os.environ["STAGECOACH_OUTPUT"], "w"))
"""


async def test_success_sees_input_and_writes_json(store: LocalStore, tmp_path: Path) -> None:
    spec = _spec(tmp_path, ECHO, {"format": "json"})
    result = await run_attempt(spec, store, clock=FakeClock(), workdir=tmp_path / "work")
    assert result.ok, result.message
    assert result.output_ref == "outputs/scrape/1-1.json"
    out = decode_output(await store.get(result.output_ref)).value
    assert out["params"] == {"topic": "batteries"}
    assert out["stages"] == {
        "research": {
            "output": {"sources": ["a"]},
            "phase": "Succeeded",
            "iteration": 1,
            "attempt": 2,
        }
    }
    assert (out["item"], out["index"]) == ("https://example.test/a", 1)
    assert out["loop"] == {"iteration": 1, "from": None, "reason": None}
    assert out["greeting"] == "hej"
    assert out["cwd"] == str(tmp_path)
    assert (tmp_path / "work" / "input.json").exists()
    types = [e["type"] for e in await store.read_trace()]
    assert types == ["InputSnapshot", "OutputSnapshot"]


async def test_text_output(store: LocalStore, tmp_path: Path) -> None:
    script = "import os; open(os.environ['STAGECOACH_OUTPUT'], 'w').write('plain words')"
    result = await run_attempt(_spec(tmp_path, script), store, clock=FakeClock())
    assert result.ok
    assert decode_output(await store.get(result.output_ref or "")).value == "plain words"


async def test_exit_3_is_error_with_stderr_tail(store: LocalStore, tmp_path: Path) -> None:
    script = """
        import sys
        print("x" * 5000, file=sys.stderr)
        print("scraper: 404 for https://example.test/a", file=sys.stderr)
        sys.exit(3)
    """
    result = await run_attempt(_spec(tmp_path, script), store, clock=FakeClock())
    assert result.error_class == "Error"
    assert "exited with code 3" in (result.message or "")
    assert (result.message or "").endswith("scraper: 404 for https://example.test/a")
    assert len(result.to_termination_message()) < 4096


async def test_logs_are_kept_where_asked(store: LocalStore, tmp_path: Path) -> None:
    script = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    spec = _spec(tmp_path, script, attempt=2)
    result = await run_attempt(spec, store, clock=FakeClock(), logs=tmp_path / "logs")
    assert not result.ok and "err" in (result.message or "")  # the tail still comes along
    assert (tmp_path / "logs/scrape/1-1-2.stdout").read_text() == "out\n"
    assert (tmp_path / "logs/scrape/1-1-2.stderr").read_text() == "err\n"


async def test_bad_json_is_malformed_output(store: LocalStore, tmp_path: Path) -> None:
    script = "import os; open(os.environ['STAGECOACH_OUTPUT'], 'w').write('{oops')"
    result = await run_attempt(
        _spec(tmp_path, script, {"format": "json"}), store, clock=FakeClock()
    )
    assert result.error_class == "MalformedOutput"
    assert "not valid JSON" in (result.message or "")


async def test_schema_violation_is_malformed_output(store: LocalStore, tmp_path: Path) -> None:
    script = "import os; open(os.environ['STAGECOACH_OUTPUT'], 'w').write('{\"n\": \"1\"}')"
    output = {"format": "json", "schema": {"properties": {"n": {"type": "integer"}}}}
    result = await run_attempt(_spec(tmp_path, script, output), store, clock=FakeClock())
    assert result.error_class == "MalformedOutput" and "$.n" in (result.message or "")


async def test_missing_command(store: LocalStore, tmp_path: Path) -> None:
    spec = _spec(tmp_path, "")
    assert spec.run is not None
    spec.run.command = ["/nonexistent/tool"]
    result = await run_attempt(spec, store, clock=FakeClock())
    assert result.error_class == "Error" and "cannot start" in (result.message or "")


async def test_timeout_kills_the_process_group(store: LocalStore, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """
    spec = _spec(tmp_path, script)
    spec.stage.timeout = timedelta(seconds=1.5)
    result = await run_attempt(spec, store, clock=FakeClock())
    assert result.error_class == "Timeout"
    child = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the command's child process survived the timeout")


async def test_split_steps_for_pod_containers(store: LocalStore, tmp_path: Path) -> None:
    """init container → user container → sidecar, as three separate calls."""
    spec = _spec(tmp_path, ECHO, {"format": "json"})
    work = tmp_path / "shared"
    variables = await prepare_input(spec, store, work)
    assert json.loads((work / "input.json").read_text()) == variables
    ran = await run_command(spec, work)
    assert ran.exit_code == 0
    key = await collect_output(spec, store, work, ran.exit_code)
    assert decode_output(await store.get(key)).value["greeting"] == "hej"


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
async def test_the_collector_never_follows_what_the_command_left(
        store: LocalStore, tmp_path: Path, kind: str) -> None:
    """The user's command is untrusted: an output that is a symbolic link (here, to a
    stand-in for the collector's own ServiceAccount token) or a FIFO is refused as
    MalformedOutput, and nothing of the link's target is stored."""
    from stagecoach_runner.errors import AttemptError

    spec = _spec(tmp_path, ECHO)
    work = tmp_path / "shared"
    await prepare_input(spec, store, work)
    secret = tmp_path / "token"
    secret.write_text("eyJhbGciOi-secret-token")
    if kind == "symlink":
        (work / "output").symlink_to(secret)
    else:
        os.mkfifo(work / "output")
    with pytest.raises(AttemptError) as err:
        await collect_output(spec, store, work, 0)
    assert err.value.error_class == "MalformedOutput"
    assert "secret-token" not in err.value.message
    assert f"outputs/{spec.stage.name}/1.json" not in await store.list("outputs/")
