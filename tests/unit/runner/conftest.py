"""Fixtures for runner tests: a local store, a fake clock, an attempt-spec factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stagecoach.api import AttemptSpec
from stagecoach.store import LocalStore
from stagecoach_runner import FakeClock

MakeSpec = Callable[..., AttemptSpec]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "run")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_spec(store: LocalStore, tmp_path: Path) -> MakeSpec:
    """An agent-stage spec; keyword arguments override top-level fields, ``agent`` merges."""

    def make(agent: dict[str, Any] | None = None, **over: Any) -> AttemptSpec:
        doc: dict[str, Any] = {
            "pipeline": {"name": "p", "uid": "u"},
            "stage": {
                "name": "s",
                "agent": {"provider": "main", "model": "m", "prompt": "hello", **(agent or {})},
            },
            "store": {"type": "local", "path": str(store.root)},
            "providers": {"main": {"type": "openai", "baseURL": "http://main.test/v1"}},
            "baseDir": str(tmp_path),
        }
        doc.update(over)
        return AttemptSpec.model_validate(doc)

    return make
