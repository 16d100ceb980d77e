"""A warm interpreter that forks per container for Stagecoach's own entrypoint.

Why: every run-stage pod starts ``stagecoach-runner`` three times (prepare, collect,
and an agent stage once); each start imports pydantic, the API models and the stores,
~0.5 s of CPU. On two cores that, not the operator, bounded the e2e throughput. This
module is the node agent's shortcut: one **zygote** process imports the runner once
and forks a child per container start; the container's command stays
``stagecoach-runner ...`` and reaches the zygote through a tiny **shim** (a
``python -IS`` script the agent puts first on the containers' ``PATH``).

How a start goes: the shim, already inside the container's mount namespace (the agent
set up its mounts as for any command), sends its argv, environment, working directory
and pid, and its stdin/stdout/stderr (SCM_RIGHTS) to the zygote's Unix socket. The
zygote forks; the child joins the shim's mount namespace (``setns``), its working
directory, environment and stdio, starts a session, and runs
``stagecoach_runner.__main__.main()``. The shim forwards SIGTERM/SIGINT/SIGHUP to the
child and exits with its status; the child kills itself if the shim goes (SIGKILL of
the container's process group, the agent's death). What this shortcuts: the child is
a fork of a process that imported the runner before the pod existed (module-level
state is the zygote's: nothing reads the environment at import time today), it is not
the shim's child (``/proc`` shows two processes per container), and only
``stagecoach-runner`` is warm (and not when the container exports OpenTelemetry: the
forked child ends with ``os._exit``, which would lose unflushed spans); any other
command runs as before. When the zygote is not
there the shim execs the real ``stagecoach-runner``.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import selectors
import signal
import socket
import sys
import threading
from pathlib import Path

__all__ = ["ENTRYPOINT", "serve", "shim_text"]

ENTRYPOINT = "stagecoach-runner"
CLONE_NEWNS = 0x00020000
PR_SET_PDEATHSIG = 1

SHIM = """#!{python} -IS
# The node agent's warm-fork shim for {entrypoint} (tests/cluster/warmfork.py).
import array, json, os, signal, socket, sys
if any(k.startswith("OTEL_EXPORTER_OTLP") for k in os.environ):
    # A forked child ends with os._exit: OpenTelemetry's exporter would never flush.
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect({sock!r})
    msg = json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd(),
                       "pid": os.getpid()}}).encode()
    s.sendmsg([len(msg).to_bytes(4, "big") + msg],
               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    f = s.makefile("rb")
    child = int(f.readline())
except (OSError, ValueError):
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
def forward(sig, _):
    try:
        os.kill(child, sig)
    except OSError:
        pass
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(sig, forward)
line = b""
while not line:
    try:
        line = f.readline() or b"1"
    except InterruptedError:
        continue
code = int(line)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def shim_text(sock: Path, real: str, python: str = sys.executable) -> str:
    """The shim script for the zygote listening on ``sock`` (``real``: the entrypoint
    to exec when the zygote is not there)."""
    return SHIM.format(python=python, entrypoint=ENTRYPOINT, sock=str(sock), real=real)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _child(req: dict[str, object], fds: list[int], conn: socket.socket) -> None:
    """In the forked child: become the container's process, run the entrypoint."""
    code = 1
    try:
        conn.close()
        libc = _libc()
        shim = int(str(req["pid"]))
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        ns = os.open(f"/proc/{shim}/ns/mnt", os.O_RDONLY)
        if libc.setns(ns, CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(ns)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        os.closerange(3, 65536)  # the other containers' sockets, the zygote's fds
        os.chdir(str(req["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(req["env"]).items()})  # type: ignore[call-overload]
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        sys.stdin = os.fdopen(0, "r", closefd=False)

        def watch_shim() -> None:  # the container's process group was killed
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(shim)
                sel = selectors.DefaultSelector()
                sel.register(pidfd, selectors.EVENT_READ)
                sel.select()
            os.kill(0, signal.SIGKILL)

        threading.Thread(target=watch_shim, daemon=True).start()
        from stagecoach_runner.__main__ import main

        sys.argv = [ENTRYPOINT, *[str(a) for a in req["argv"]]]  # type: ignore[attr-defined]
        try:
            code = main() or 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:
        with contextlib.suppress(Exception):
            print(f"warmfork: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def _recv(conn: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    fds = array.array("i")
    head, anc, _, _ = conn.recvmsg(4, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, type_, data in anc:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return json.loads(body), list(fds)


def serve(sock_path: Path) -> None:
    """The zygote: import the runner, then fork a child per shim connection."""
    # The stores import obstore (S3) only when one is used; an S3 stage pod would load it
    # per fork, so the zygote loads it once, as it did when the store package imported it.
    import obstore  # noqa: F401
    import stagecoach.store.configmap  # noqa: F401
    import stagecoach_runner.__main__
    import stagecoach_runner.attempt
    import stagecoach_runner.podmodes  # noqa: F401

    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # go with the node agent
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o666)
    listener.listen(128)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd → (pid, shim conn)
    while True:
        for key, _ in sel.select():
            if key.data == "accept":
                conn, _ = listener.accept()
                try:
                    got = _recv(conn)
                except (OSError, ValueError):
                    got = None
                if got is None:
                    conn.close()
                    continue
                req, fds = got
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    listener.close()
                    _child(req, fds, conn)
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    conn.sendall(f"{pid}\n".encode())
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "child")
            else:
                pidfd = key.fd
                sel.unregister(pidfd)
                pid, conn = children.pop(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                code = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                        else os.WEXITSTATUS(status))
                with contextlib.suppress(OSError):
                    conn.sendall(f"{code}\n".encode())
                conn.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
