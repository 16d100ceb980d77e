"""``stagecoach run`` and ``stagecoach trace`` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples/research-report/pipeline.yaml"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stagecoach.cli.main", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd, check=False)


def run_dir(proc: subprocess.CompletedProcess[str]) -> Path:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.removeprefix("run directory: "))


def test_demo_pipeline_runs_offline_and_writes_the_run_directory(tmp_path: Path) -> None:
    proc = cli("run", str(EXAMPLE), "--store", str(tmp_path), "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = run_dir(proc)
    assert d.parent == tmp_path and d.name.startswith("battery-report-")
    for name in ("pipeline.yaml", "status.json", "trace.jsonl", "output.txt", "report.html"):
        assert (d / name).is_file(), name
    assert (d / "outputs/research/1.json").is_file() and (d / "outputs/research/2.json").is_file()
    assert (d / "outputs/scrape/1-0.json").is_file()
    status = json.loads((d / "status.json").read_text())
    stages = {s["name"]: s for s in status["stages"]}
    assert status["phase"] == "Succeeded" and status["progress"] == "9/9"
    # the sign-off gate approved itself (--auto-approve) and publish read its inputs
    decision = json.loads((d / "outputs/sign-off/1.json").read_text())["value"]
    assert (decision["approved"], decision["approver"], decision["inputs"]) == (
        True, "auto-approve", {"channel": "blog"})
    assert stages["sign-off"]["outputRef"] == "outputs/sign-off/1.json"
    assert stages["research"]["iteration"] == 2 and stages["qa"]["attempt"] == 2
    assert stages["scrape"]["instances"] == {"total": 3, "succeeded": 3, "failed": 0,
                                             "running": 0}
    events = [json.loads(ln) for ln in (d / "trace.jsonl").read_text().splitlines()]
    types = {e["type"] for e in events}
    assert {"ProviderRetry", "Decision", "InputSnapshot", "OutputSnapshot", "OutputAssembled",
            "PipelineSucceeded", "ApprovalRequested", "ApprovalDecided"} <= types
    [prompt] = [e["data"]["prompt"] for e in events if e["type"] == "InputSnapshot"
                and e["stage"] == "publish"]
    assert "for the blog." in prompt
    assert "sign-off: awaiting approval: Publish the solid-state batteries report" in proc.stdout
    assert "StageSucceeded without StageStarted" not in proc.stdout
    assert "Solid-state batteries" in (d / "output.txt").read_text()
    assert "Timeline" in proc.stdout and "report: " in proc.stdout
    # the resolved pipeline in the run directory is itself a valid manifest
    assert cli("validate", str(d / "pipeline.yaml")).returncode == 0

    trace = cli("trace", str(d))
    assert trace.returncode == 0 and "Decisions" in trace.stdout and "goto research" in trace.stdout
    as_json = cli("trace", str(d), "--json")
    assert [json.loads(ln)["type"] for ln in as_json.stdout.splitlines()][-1] == \
        "PipelineSucceeded"
    html = cli("trace", str(d), "--html", str(tmp_path / "r.html"))
    assert html.returncode == 0 and "<svg" in (tmp_path / "r.html").read_text()


def test_params_failure_exit_code_and_bad_input(tmp_path: Path) -> None:
    manifest = tmp_path / "p.yaml"
    manifest.write_text(
        "apiVersion: stagecoach.dev/v1alpha1\nkind: AgentPipeline\nmetadata: {name: p}\n"
        "spec:\n  params: {code: 0}\n  stages:\n  - name: s\n    run:\n      image: x\n"
        f"      command: [{sys.executable}, -c, 'import sys; sys.exit(int(sys.argv[1]))']\n"
        "      args: ['{{ params.code }}']\n")
    # args are not templated: the command receives the literal string, which int() rejects
    failed = cli("run", str(manifest), "--store", str(tmp_path), "-p", "code=3")
    assert failed.returncode == 1
    assert "pipeline Failed" in failed.stdout
    bad = cli("run", str(manifest), "-p", "nonsense")
    assert bad.returncode == 1 and "expected KEY=VALUE" in bad.stderr
    missing = cli("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read file" in missing.stderr
    assert "Traceback" not in failed.stderr + bad.stderr + missing.stderr
    nodir = cli("trace", str(tmp_path / "nope"))
    assert nodir.returncode == 1 and nodir.stdout == ""
    assert nodir.stderr == f"stagecoach trace: {tmp_path / 'nope'}: no such run directory\n"


def test_ctrl_c_cancels_stops_the_subprocess_and_flushes_the_trace(tmp_path: Path) -> None:
    import os
    import signal
    import time

    pidfile = tmp_path / "pid"
    manifest = tmp_path / "slow.yaml"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    manifest.write_text(
        "apiVersion: stagecoach.dev/v1alpha1\nkind: AgentPipeline\nmetadata: {name: slow}\n"
        "spec:\n  stages:\n  - name: s\n    run:\n      image: x\n"
        f"      command: [{sys.executable}, -c, {json.dumps(code)}]\n")
    proc = subprocess.Popen([sys.executable, "-m", "stagecoach.cli.main", "run", str(manifest),
                             "--store", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if not pidfile.exists():
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the stage never started:\n{out}\n{err}")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err  # what a shell expects after Ctrl-C
    assert "Traceback" not in err
    d = next((tmp_path / "runs").iterdir())
    status = json.loads((d / "status.json").read_text())
    assert status["phase"] == "Cancelled"
    [stage] = status["stages"]
    assert (stage["phase"], stage["attempt"], stage["reason"]) == ("Failed", 1, "Cancelled")
    events = [json.loads(ln) for ln in (d / "trace.jsonl").read_text().splitlines()]
    last = events[-1]
    assert last["type"] == "PipelineFailed" and last["data"]["phase"] == "Cancelled"
    [end] = [e for e in events if e["type"] == "StageFailed"]  # the attempt's end, recorded
    assert (end["attempt"], end["data"]["errorClass"]) == (1, "Cancelled")
    assert isinstance(end["data"]["durationMs"], int)
    time.sleep(0.2)
    try:
        os.kill(int(pidfile.read_text()), 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the stage's process survived the cancellation"


def _replay_manifest(path: Path, cassette: str) -> None:
    path.write_text(f"""apiVersion: stagecoach.dev/v1alpha1
kind: ModelProvider
metadata: {{name: replay}}
spec: {{type: replay, cassette: {{path: {cassette}}}}}
---
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {{name: rec}}
spec:
  params: {{xs: [a, b]}}
  defaults: {{provider: replay, retry: {{limit: 1, backoff: {{initial: 100ms}}}}}}
  stages:
  - name: plan
    agent: {{prompt: "plan", output: {{format: json, schema: {{type: object, required: [n]}}}}}}
  - name: each
    dependsOn: [plan]
    forEach: params.xs
    agent: {{prompt: "{{{{ item }}}}"}}
  output: "{{{{ stages.plan.output.n }}}} {{{{ stages.each.output | tojson }}}}"
""")


def test_record_of_a_replayed_run_replays_the_same_run(tmp_path: Path) -> None:
    (tmp_path / "cassette.yaml").write_text("""apiVersion: stagecoach.dev/v1alpha1
kind: Cassette
entries:
- {stage: plan, error: {status: 429, retryAfter: 0.1}}
- {stage: plan, response: {content: "not json", usage: {input: 3, output: 1}}}
- {stage: plan, response: {content: '{"n": 2}', usage: {input: 5, output: 2}}}
- {stage: each, index: 1, response: {content: B, usage: {input: 1, output: 1}}}
- {stage: each, index: 0, response: {content: A, usage: {input: 1, output: 1}}}
""")
    _replay_manifest(tmp_path / "p.yaml", "cassette.yaml")
    first = cli("run", str(tmp_path / "p.yaml"), "--store", str(tmp_path / "runs"),
                "--record", str(tmp_path / "rec.yaml"))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "cassette recorded: " in first.stdout and "(5 entries)" in first.stdout
    recorded = (tmp_path / "rec.yaml").read_text()
    assert "status: 429" in recorded and "not json" in recorded

    _replay_manifest(tmp_path / "q.yaml", "rec.yaml")
    again = cli("run", str(tmp_path / "q.yaml"), "--store", str(tmp_path / "runs2"))
    assert again.returncode == 0, again.stdout + again.stderr
    outputs = [(run_dir(p) / "output.txt").read_text() for p in (first, again)]
    assert outputs[0] == outputs[1] == '2 ["A", "B"]'

    def shape(proc: subprocess.CompletedProcess[str]) -> list[tuple[str, str, int | None]]:
        events = [json.loads(ln) for ln in (run_dir(proc) / "trace.jsonl").read_text()
                  .splitlines()]
        return sorted((e["type"], e["stage"], e["attempt"]) for e in events
                      if e["type"] in {"StageFailed", "StageSucceeded", "ProviderRetry"})

    assert shape(first) == shape(again)


def test_run_stage_logs_are_kept_and_linked_from_the_report(tmp_path: Path) -> None:
    manifest = tmp_path / "logs.yaml"
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"
    manifest.write_text(
        "apiVersion: stagecoach.dev/v1alpha1\nkind: AgentPipeline\nmetadata: {name: logs}\n"
        "spec:\n  params: {xs: [1, 2]}\n  stages:\n  - name: s\n    run:\n      image: x\n"
        f"      command: [{sys.executable}, -c, {json.dumps(code)}]\n"
        "  - name: fan\n    forEach: params.xs\n    run:\n      image: x\n"
        f"      command: [{sys.executable}, -c, {json.dumps(code)}]\n")
    proc = cli("run", str(manifest), "--store", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d = run_dir(proc)
    assert (d / "logs/s/1-1.stdout").read_text() == "to stdout\n"
    assert (d / "logs/s/1-1.stderr").read_text() == "to stderr\n"
    assert (d / "logs/fan/1-1-1.stdout").read_text() == "to stdout\n"
    html = (d / "report.html").read_text()
    for link in ("logs/s/1-1.stdout", "logs/s/1-1.stderr", "logs/fan/1-0-1.stdout"):
        assert f'href="{link}"' in html
