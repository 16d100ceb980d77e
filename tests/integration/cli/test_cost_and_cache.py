"""Cost and the stage cache as a user sees them locally: ``make demo`` run twice
(subprocesses against one ``--store``)."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

from .test_run_and_trace import EXAMPLE, cli, run_dir

CACHED = ("research", "scrape", "analyze", "draft")


def _status(d: Path) -> dict:
    return json.loads((d / "status.json").read_text())


def _events(d: Path) -> list[dict]:
    return [json.loads(ln) for ln in (d / "trace.jsonl").read_text().splitlines()]


def test_a_second_run_answers_the_cached_stages_and_reports_the_saving(
        tmp_path: Path) -> None:
    first = cli("run", str(EXAMPLE), "--store", str(tmp_path), "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    one = run_dir(first)
    s1 = _status(one)
    # priced model: cost everywhere, exact figures that add up (rounded once)
    assert Decimal(s1["cost"]) > 0
    stages1 = {s["name"]: s for s in s1["stages"]}
    assert "cost" not in stages1["scrape"]  # a run stage uses no model: tokens only
    assert sum(Decimal(s.get("cost", "0")) for s in s1["stages"]) - Decimal(s1["cost"]) \
        < Decimal("0.00001")
    ends = [e for e in _events(one) if e["type"] in ("StageSucceeded", "StageFailed")
            and e["data"].get("tokens", {}).get("input")]
    assert ends and all("cost" in e["data"] for e in ends)
    qa_failed = [e for e in _events(one) if e["type"] == "StageFailed" and e["stage"] == "qa"]
    assert qa_failed and Decimal(qa_failed[0]["data"]["cost"]) > 0  # a rejected answer bills
    assert "cost" in first.stdout and "$" in first.stdout
    entries = sorted((tmp_path / ".cache" / "cache").glob("*.json"))
    assert len(entries) == 12  # (research, 3 scrape items, analyze, draft) x 2 iterations

    second = cli("run", str(EXAMPLE), "--store", str(tmp_path), "--auto-approve")
    assert second.returncode == 0, second.stdout + second.stderr
    two = run_dir(second)
    s2 = _status(two)
    stages2 = {s["name"]: s for s in s2["stages"]}
    for name in CACHED:
        assert stages2[name]["reason"] == "Cached", stages2[name]
        assert stages2[name]["tokens"] == {"input": 0, "output": 0}
        # a hit of a priced model costs 0; a run stage has no cost at all (tokens only)
        assert stages2[name].get("cost") == (None if name == "scrape" else "0")
    scrape_hits = [e for e in _events(two) if e["type"] == "StageCached"
                   and e["stage"] == "scrape"]
    assert sorted((e["iteration"], e["index"]) for e in scrape_hits) == [
        (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]  # a forEach caches per item
    assert stages2["fact-check"]["cost"] == stages1["fact-check"]["cost"]  # not cached
    hits = [e for e in _events(two) if e["type"] == "StageCached"]
    assert {e["stage"] for e in hits} == set(CACHED) and len(hits) == 12
    assert all(e["data"]["from"]["uid"] == one.name for e in hits)  # names the producer
    saved = sum(Decimal(e["data"]["saved"]["cost"]) for e in hits
                if e["data"]["saved"]["cost"] is not None)
    # what the second run paid plus what the cache saved is what the first paid (status
    # figures are rounded to a micro-dollar, the saved ones exact)
    assert abs(Decimal(s2["cost"]) + saved - Decimal(s1["cost"])) <= Decimal("0.000001")
    assert "saved by the stage cache: 12 attempts, 3,071 tokens" in second.stdout
    # the same answers, so the same final output
    assert (two / "output.txt").read_text() == (one / "output.txt").read_text()
    html = (two / "report.html").read_text()
    assert "saved by the stage cache" in html and "answered by the stage cache" in html


def test_expired_entries_miss_and_are_collected_by_the_next_run(tmp_path: Path) -> None:
    first = cli("run", str(EXAMPLE), "--store", str(tmp_path), "--auto-approve")
    assert first.returncode == 0, first.stdout + first.stderr
    entries = sorted((tmp_path / ".cache" / "cache").glob("*.json"))
    for f in entries:  # age every entry past its 24h TTL
        doc = json.loads(f.read_text())
        doc["createdAt"], doc["expiresAt"] = "2020-01-01T00:00:00.000Z", \
            "2020-01-02T00:00:00.000Z"
        f.write_text(json.dumps(doc))
        os.utime(f)
    second = cli("run", str(EXAMPLE), "--store", str(tmp_path), "--auto-approve")
    assert second.returncode == 0, second.stdout + second.stderr
    two = run_dir(second)
    assert not [e for e in _events(two) if e["type"] == "StageCached"]
    fresh = [json.loads(f.read_text()) for f in (tmp_path / ".cache/cache").glob("*.json")]
    assert len(fresh) == 12 and all(e["from"]["uid"] == two.name for e in fresh)
