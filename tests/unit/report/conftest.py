"""Fixtures of the report tests: run directories written from :mod:`.sample`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .sample import write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_run(tmp_path / "demo-20261124T100000")


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(**kw: Any) -> Path:
        return write_run(tmp_path / f"run-{next(counter)}", **kw)

    return make
