"""The web UI in a real browser: the distribution's headless Chromium driven by
Playwright, against ``stagecoach ui`` and ``stagecoach run`` subprocesses.

Screenshots of every step land in the test's tmp directory (``ui-*.png``); set
``STAGECOACH_UI_SHOTS=DIR`` to keep them somewhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[3]
RESEARCH = ROOT / "examples/research-report/pipeline.yaml"
HELLO = ROOT / "examples/hello/pipeline.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "stagecoach.cli.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, **kw)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


def serve_ui(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``stagecoach ui ARGS --port N`` once it answers: (process, base URL)."""
    port = _port()
    proc = cli("ui", *args, "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/runs", timeout=5).read()
            return proc, url
        except OSError:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "stagecoach ui did not start"
            time.sleep(0.2)


@pytest.fixture
def ui(runs: Path) -> Iterator[str]:
    proc, url = serve_ui("--runs", str(runs))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: `make test` installs the distribution's package "
                    "(make browser)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            yield pg
        finally:
            browser.close()
    assert not errors, errors  # no script error, no blocked load, no CSP violation


def shot(pg: Any, tmp_path: Path, name: str) -> Path:
    where = Path(os.environ.get("STAGECOACH_UI_SHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"ui-{name}.png"
    pg.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one
    return path


def run_to_end(*args: str) -> str:
    proc = cli("run", *args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def test_the_list_shows_finished_runs_and_the_run_page_its_graph_and_attempts(
        ui: str, runs: Path, page: Any, tmp_path: Path) -> None:
    run_to_end(str(RESEARCH), "--store", str(runs), "--auto-approve")
    page.goto(ui + "/")
    page.wait_for_selector("#runs tr.row")
    row = page.inner_text("#runs tr.row")
    assert "battery-report" in row and "Succeeded" in row, row
    assert "$0.020475" in row  # cost, from the priced example
    shot(page, tmp_path, "list")
    page.click("#runs tr.row")
    page.wait_for_selector("svg.dag")
    # The DAG: every stage (finally too), forward edges, the two dashed back-edges, the
    # forEach stage as a stack with its instance count, phases as colours.
    nodes = page.query_selector_all("svg.dag g.node")
    assert sorted(n.get_attribute("data-stage") for n in nodes) == sorted(
        ["research", "scrape", "analyze", "fact-check", "draft", "verify", "qa", "sign-off",
         "publish", "notify"])
    assert all(n.get_attribute("data-phase") == "Succeeded" for n in nodes)
    back = page.query_selector_all("svg.dag path.edge.back")
    assert sorted((b.get_attribute("data-from"), b.get_attribute("data-to")) for b in back) \
        == [("qa", "draft"), ("verify", "research")]
    assert len(page.query_selector_all('svg.dag g.node[data-stage="scrape"] rect.stack')) == 2
    assert "3/3" in page.text_content('svg.dag g.node[data-stage="scrape"]')
    assert page.query_selector("#timeline svg.gantt") is not None
    # Opening an attempt: its rendered prompt, the raw answer and the stored output.
    page.click('ul.attempts li[data-key="attempt-research-1-x-1"]')
    page.wait_for_selector("#attempt details[open]")
    text = page.inner_text("#attempt")
    assert "Find three primary sources on solid-state batteries" in text
    assert "ssb-review-2025" in text
    shot(page, tmp_path, "attempt")
    page.click('svg.dag g.node[data-stage="qa"]')  # a node opens its latest attempt
    expect(page.locator("#attempt")).to_contain_text("qa #2")


def test_a_running_pipeline_updates_live_and_is_approved_from_the_page(
        ui: str, runs: Path, page: Any, tmp_path: Path) -> None:
    page.goto(ui + "/")
    page.wait_for_selector("#empty")
    page.evaluate("window.__same_page = true")  # a reload would lose it
    # Not a terminal and no --auto-approve: the run waits for `stagecoach approve`.
    proc = cli("run", str(RESEARCH), "--store", str(runs))
    try:
        page.wait_for_selector("#runs tr.row", timeout=30_000)  # appeared live
        page.click("#runs tr.row")
        form = page.wait_for_selector('form.approval[data-stage="sign-off"]', timeout=60_000)
        assert "QA score 0.9" in form.inner_text()
        assert page.get_attribute('svg.dag g.node[data-stage="sign-off"]',
                                  "data-phase") == "Waiting"
        assert page.get_attribute("#header", "data-phase") == "Running"
        shot(page, tmp_path, "waiting")
        page.select_option('form.approval select[name="channel"]', "newsletter")
        page.fill('form.approval input[name="__message"]', "ship it")
        # A live refresh while the user fills the form keeps what they entered.
        page.evaluate("refreshRun()")
        page.wait_for_timeout(800)
        assert page.input_value('form.approval select[name="channel"]') == "newsletter"
        assert page.input_value('form.approval input[name="__message"]') == "ship it"
        page.click('form.approval button[name="approve"]')
        # the page's CSP forbids eval, so wait with locators, not wait_for_function
        expect(page.locator("#header")).to_have_attribute("data-phase", "Succeeded",
                                                           timeout=60_000)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert page.evaluate("window.__same_page") is True
    assert page.get_attribute("#flash", "class") == "ok", page.inner_text("#flash")
    assert page.get_attribute('svg.dag g.node[data-stage="publish"]',
                              "data-phase") == "Succeeded"
    assert not page.query_selector("form.approval")
    shot(page, tmp_path, "approved")
    [run_dir] = [p for p in runs.iterdir() if not p.name.startswith(".")]
    decision = json.loads((run_dir / "outputs/sign-off/1.json").read_text())["value"]
    assert decision["inputs"]["channel"] == "newsletter" and decision["message"] == "ship it"


XSS = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>"


def test_a_hostile_model_answer_stays_text(ui: str, runs: Path, page: Any,
                                           tmp_path: Path) -> None:
    d = tmp_path / "evil"
    d.mkdir()
    (d / "cassette.yaml").write_text(json.dumps({
        "apiVersion": "stagecoach.dev/v1alpha1", "kind": "Cassette",
        "entries": [{"stage": "poem", "response": {"content": XSS,
                                                    "usage": {"input": 1, "output": 1}}}]}))
    text = HELLO.read_text().replace("name: hello", "name: evil")
    (d / "pipeline.yaml").write_text(text)
    run_to_end(str(d / "pipeline.yaml"), "--store", str(runs))
    page.goto(ui + "/")
    page.wait_for_selector("#runs tr.row")
    page.click("#runs tr.row")
    page.wait_for_selector("svg.dag")
    page.click('ul.attempts li[data-key="attempt-poem-1-x-1"]')
    page.wait_for_selector("#attempt details[open]")
    assert XSS in page.inner_text("#attempt")  # shown as the text it is
    assert page.query_selector("#attempt img") is None
    assert page.query_selector("#app script") is None
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert XSS in page.inner_text("#output")  # the final assembly too
    shot(page, tmp_path, "xss")


def test_actions_need_the_pages_own_request(ui: str) -> None:
    """A cross-site form (no JSON, no UI header) and a rebinding host are refused."""
    req = urllib.request.Request(ui + "/api/act", data=b"id=x&action=terminate",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403
    rebound = urllib.request.Request(ui + "/api/runs", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(rebound)
    assert e.value.code == 421
    with urllib.request.urlopen(ui + "/") as res:
        assert "default-src 'none'" in res.headers["Content-Security-Policy"]
