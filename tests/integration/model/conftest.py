"""Session fixture: the real model server (installed on demand, started once)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import model_server  # type: ignore[import-not-found]
import pytest


@pytest.fixture(scope="session")
def llama_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of a running llama.cpp server with SmolLM2-135M.

    Installs it when missing only if asked for (``-m model`` or
    ``STAGECOACH_INSTALL_MODEL=1``): the first install compiles llama.cpp.
    """
    if not model_server.installed():
        asked = (
            "model" in (request.config.getoption("-m") or "")
            or os.environ.get("STAGECOACH_INSTALL_MODEL") == "1"
        )
        if not asked:
            pytest.skip(
                "model server not installed: run hack/install-model-server.sh or select -m model"
            )
        model_server.TIMINGS["install_s"] = model_server.install()
    started = time.monotonic()
    proc, url = model_server.start(tmp_path_factory.mktemp("llama") / "server.log")
    model_server.TIMINGS["server_start_s"] = time.monotonic() - started
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:
            proc.kill()
        print(f"\nmodel server timings: {model_server.TIMINGS}")
        timings = Path(str(tmp_path_factory.getbasetemp())) / "model-timings.txt"
        timings.write_text(repr(model_server.TIMINGS))
