"""``stagecoach ui``: one page on 127.0.0.1, its JSON API and a server-sent event stream.

The page (``static/``) is served from the package: nothing loads from anywhere else, and
the Content-Security-Policy says so to the browser (no inline script, no other origin).
One poller per server watches the sources (local run directories twice a second, the
cluster's list every two seconds) and tells every open page which runs changed; the page
then fetches just those. Requests are accepted only for the host the server listens on
(a DNS-rebinding page cannot reach it), and actions only as JSON with the UI's own header
(a cross-site form cannot post them). Blocking reads and the API clients run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from ..engine.control import ControlError
from ..report import CSS, RunData
from . import views
from .sources import ClusterRuns, LocalRuns, RunNotFound

__all__ = ["Source", "make_app", "serve"]

log = logging.getLogger("stagecoach.ui")

LOCAL_POLL = 0.5
CLUSTER_POLL = 2.0
ACTION_HEADER = "X-Stagecoach-UI"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}


class Source(Protocol):
    source: str
    controls: list[str]

    def list(self) -> list[dict[str, Any]]: ...
    def version(self, name: str) -> Any: ...
    def load(self, name: str) -> RunData: ...
    def control(self, name: str, verb: str) -> str: ...
    def approve(self, name: str, stage: str, decision: str, inputs: dict[str, str],
                message: str | None) -> str: ...


def _static(name: str) -> str:
    return resources.files("stagecoach.ui").joinpath("static", name).read_text("utf-8")


class Hub:
    """The poller: the rows of every source, and who to tell when a run changes."""

    def __init__(self, sources: dict[str, Source]) -> None:
        self.sources = sources
        self.rows: dict[str, list[dict[str, Any]]] = {k: [] for k in sources}
        self.errors: dict[str, str] = {}
        self.versions: dict[str, Any] = {}
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()

    def publish(self, event: dict[str, Any]) -> None:
        for q in list(self.queues):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(event)

    async def refresh(self, kind: str) -> None:
        src = self.sources[kind]
        try:
            rows = await asyncio.to_thread(src.list)
            self.errors.pop(kind, None)
        except ControlError as e:
            rows, self.errors[kind] = [], str(e)
        except Exception as e:  # the list must go on: show why it is empty
            log.warning("ui: listing %s runs failed: %s", kind, e)
            rows, self.errors[kind] = [], f"{type(e).__name__}: {e}"
        note = getattr(src, "note", None)
        if note:
            self.errors[kind] = note
        changed = []
        for row in rows:
            try:
                version = await asyncio.to_thread(src.version, row["run"])
            except RunNotFound:
                continue
            marker = (version, row["phase"], row["progress"])
            if self.versions.get(row["id"]) != marker:
                self.versions[row["id"]] = marker
                changed.append(row["id"])
        listed = {r["id"] for r in rows}
        gone = [i for i in list(self.versions) if i.startswith(f"{kind_prefix(kind)}:")
                and i not in listed]
        for i in gone:
            del self.versions[i]
        if changed or gone or [r["id"] for r in rows] != [r["id"] for r in self.rows[kind]]:
            self.rows[kind] = rows
            self.publish({"type": "runs"})
            for i in changed:
                self.publish({"type": "run", "id": i})
        else:
            self.rows[kind] = rows

    async def run(self) -> None:
        ticks = 0
        while True:
            for kind in self.sources:
                if kind == "local" or ticks % round(CLUSTER_POLL / LOCAL_POLL) == 0:
                    await self.refresh(kind)
            ticks += 1
            await asyncio.sleep(LOCAL_POLL)


def kind_prefix(kind: str) -> str:
    return "local" if kind == "local" else "k8s"


def _source_of(hub: Hub, run_id: str) -> tuple[Source, str]:
    prefix, _, name = run_id.partition(":")
    kind = {"local": "local", "k8s": "cluster"}.get(prefix)
    if kind is None or kind not in hub.sources or not name:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no run {run_id!r}"}),
                               content_type="application/json")
    return hub.sources[kind], name


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


async def _load(hub: Hub, run_id: str) -> tuple[Source, str, RunData]:
    src, name = _source_of(hub, run_id)
    try:
        data = await asyncio.to_thread(src.load, name)
    except (RunNotFound, FileNotFoundError) as e:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no run {run_id!r} ({e})"}),
                               content_type="application/json") from None
    except ControlError as e:
        raise web.HTTPForbidden(text=json.dumps({"error": str(e)}),
                                content_type="application/json") from None
    return src, name, data


def make_app(sources: dict[str, Source], *, host: str, port: int) -> web.Application:
    """The application; ``sources``: ``local`` and/or ``cluster``."""
    hub = Hub(sources)
    allowed_hosts = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"}

    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if request.host not in allowed_hosts:
            return web.Response(status=421, text="wrong host")
        if request.method == "POST" and (request.headers.get(ACTION_HEADER) != "1" or
                                         request.content_type != "application/json"):
            return _json({"error": "actions need the UI's JSON request"}, 403)
        response = await handler(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=_static("index.html"), content_type="text/html")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = _static(name) if name != "app.css" else CSS + "\n" + _static(name)
        return web.Response(text=body, content_type=STATIC[name])

    async def favicon(_: web.Request) -> web.Response:
        return web.Response(status=204)

    async def runs(_: web.Request) -> web.Response:
        if "local" in hub.sources:  # cheap: read fresh (the poller may be half a second old)
            await hub.refresh("local")
        rows = [r for kind in hub.sources for r in hub.rows[kind]]
        return _json({"runs": rows, "errors": hub.errors,
                      "sources": sorted(hub.sources)})

    async def run(request: web.Request) -> web.Response:
        run_id = request.query.get("id", "")
        src, _, data = await _load(hub, run_id)
        page = views.run_page(run_id, data, source=src.source, controls=src.controls,
                              full_timeline=request.query.get("timeline") == "full")
        return _json(page)

    async def attempts(request: web.Request) -> web.Response:
        _, _, data = await _load(hub, request.query.get("id", ""))
        try:
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            offset = 0
        return _json(views.attempt_page(data, offset))

    async def attempt(request: web.Request) -> web.Response:
        _, _, data = await _load(hub, request.query.get("id", ""))
        html = views.attempt_html(data, request.query.get("key", ""))
        if html is None:
            return _json({"error": "no such attempt"}, 404)
        return _json({"html": html})

    async def act(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _json({"error": "the request is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the request is not a JSON object"}, 400)
        src, name = _source_of(hub, str(body.get("id") or ""))
        action = str(body.get("action") or "")
        try:
            if action in ("approve", "reject"):
                raw = body.get("inputs") or {}
                inputs = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) \
                    else {}
                message = body.get("message") or None
                text = await asyncio.to_thread(
                    src.approve, name, str(body.get("stage") or ""),
                    "Approve" if action == "approve" else "Reject", inputs,
                    str(message) if message else None)
            else:
                text = await asyncio.to_thread(src.control, name, action)
        except ControlError as e:
            return _json({"error": str(e)}, 409)
        except RunNotFound:
            return _json({"error": f"no run {name!r}"}, 404)
        hub.publish({"type": "runs"})
        return _json({"message": text})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        hub.queues.add(queue)
        try:
            await response.write(b"event: hello\ndata: {}\n\n")
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if ev["type"] == "bye":  # the server stops
                    break
                await response.write(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n"
                                     .encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.queues.discard(queue)
        return response

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        for kind in hub.sources:
            await hub.refresh(kind)
        task = asyncio.create_task(hub.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_streams(_: web.Application) -> None:
        hub.publish({"type": "bye"})

    app = web.Application(middlewares=[guard])
    app.on_shutdown.append(close_streams)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/api/runs", runs)
    app.router.add_get("/api/run", run)
    app.router.add_get("/api/attempts", attempts)
    app.router.add_get("/api/attempt", attempt)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/act", act)
    app.cleanup_ctx.append(lifecycle)
    return app


def serve(runs: str | None, kubeconfig: str | None, port: int,
          host: str = "127.0.0.1") -> int:
    """Serve until interrupted; the sources are ``--runs`` and, given a kubeconfig (or
    ``$KUBECONFIG``), the cluster."""
    sources: dict[str, Source] = {}
    if runs is not None:
        sources["local"] = LocalRuns(runs)
    if kubeconfig is not None:
        sources["cluster"] = ClusterRuns(kubeconfig)
    app = make_app(sources, host=host, port=port)
    print(f"Stagecoach UI on http://{host}:{port}/ "
          f"({', '.join(sorted(sources)) or 'no source'}); Ctrl-C stops it", flush=True)
    web.run_app(app, host=host, port=port, print=None, handle_signals=True,
                shutdown_timeout=2)
    return 0
