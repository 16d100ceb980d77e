"""The cluster peer bench as a test: Stagecoach and Argo Workflows on one test control
plane.

Why: ``bench/cluster_peer.py`` is run by hand or by ``make bench-cluster``; this test keeps
it working (it builds Argo if needed, runs the DAG and a load of
``STAGECOACH_BENCH_LOAD`` workflows, default 50) and prints the table. It asserts what
the bench promises, not speed: either every figure is there and every workflow
succeeded, or the column carries the exact blocker. Marked ``bench`` (``make test``
skips it) and ``cluster``.

    flock /tmp/stagecoach-heavy.lock .venv/bin/pytest tests/bench -m bench -s
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import cluster_peer
import cluster_stagecoach

pytestmark = [pytest.mark.bench, pytest.mark.cluster]


def test_format_table_shows_blockers_and_numbers() -> None:
    table = cluster_peer.format_table(
        {"Argo": {"blocker": "`x` exited 1: boom"}, "Other": {"dag.wall_s": 1.5}}
    )
    assert "Argo BLOCKED: `x` exited 1: boom" in table
    assert "1.500" in table


def test_workflow_figures_measures_edges_from_the_latest_dependency() -> None:
    pods = [
        {"task": "a", "seen": 1.0, "main_done": 2.0},
        {"task": "b", "seen": 2.5, "main_done": 3.0},
        {"task": "c", "seen": 2.6, "main_done": 4.0},
        {"task": "d", "seen": 4.5, "main_done": 5.0},
        {"task": "e", "seen": 5.2, "main_done": 6.0},
    ]
    out = cluster_peer.workflow_figures(0.5, {"done": 6.5}, pods)
    assert out["wall_s"] == 6.0
    assert out["start_s"] == 0.5
    assert out["transition"] == pytest.approx(
        {"a->b": 0.5, "a->c": 0.6, "b,c->d": 0.5, "d->e": 0.2}
    )
    assert out["finish_s"] == 0.5


def test_stagecoach_and_argo_on_the_test_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    load = int(os.environ.get("STAGECOACH_BENCH_LOAD", "50"))
    try:
        argo_bin: Path | None = cluster_peer.ensure_argo()
        blocker = None
    except cluster_peer.PeerBlocked as err:
        argo_bin, blocker = None, str(err)
    peers = {"Stagecoach": cluster_stagecoach.stagecoach_figures, **cluster_peer.PEERS}
    columns = cluster_peer.run_peers(argo_bin, blocker, load=load, peers=peers)
    with capsys.disabled():
        print("\n" + cluster_peer.format_table(columns))
    ours = columns["Stagecoach"]
    assert "blocker" not in ours, ours.get("blocker")
    assert ours["load.failed"] == 0
    for key, _label in cluster_peer.ROWS:
        assert ours.get(key) is not None, key
    argo = columns["Argo"]
    if "blocker" in argo:
        pytest.skip(f"Argo cannot run on this control plane: {argo['blocker']}")
    assert argo["load.failed"] == 0
    for key, _label in cluster_peer.ROWS:
        assert argo.get(key) is not None, key
