"""Minimal Kubernetes REST client and kubeconfig helpers for the test harness.

Why: the control-plane harness and the node agent only need a handful of JSON
calls (get/create/patch/delete, watch, TokenRequest) against an apiserver that
authenticates by client certificate. Doing that with the standard library keeps
the test tooling free of client-library version coupling; async callers run
these blocking calls in a thread pool.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

JSON = dict[str, Any]


class ApiError(Exception):
    """Non-2xx answer from the apiserver; `status` is the HTTP code."""

    def __init__(self, status: int, body: str, method: str, path: str) -> None:
        self.status = status
        self.body = body
        try:
            self.reason = str(json.loads(body).get("reason", ""))
        except (ValueError, AttributeError):
            self.reason = ""
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    client_cert: Path,
    client_key: Path,
    user: str,
    cluster: str = "stagecoach-test",
) -> Path:
    """Write a self-contained kubeconfig (certificates embedded as base64 data)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client_cert),
                    "client-key-data": b64(client_key),
                },
            }
        ],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class KubeConfig:
    """The parts of a certificate-based kubeconfig the harness needs."""

    server: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, path: Path) -> KubeConfig:
        data = yaml.safe_load(path.read_text())
        ctx_name = data["current-context"]
        ctx = next(c["context"] for c in data["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in data["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in data["users"] if u["name"] == ctx["user"])

        def field(obj: JSON, name: str) -> bytes:
            if f"{name}-data" in obj:
                return base64.b64decode(obj[f"{name}-data"])
            return Path(obj[name]).read_bytes()

        return cls(
            server=cluster["server"],
            ca_pem=field(cluster, "certificate-authority"),
            cert_pem=field(user, "client-certificate"),
            key_pem=field(user, "client-key"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode())
        # load_cert_chain only takes files; keep them private and short-lived.
        with tempfile.TemporaryDirectory(prefix="kubeapi-") as tmp:
            cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, self.key_pem)
            os.close(fd)
            cert.write_bytes(self.cert_pem)
            ctx.load_cert_chain(cert, key)
        return ctx


class KubeAPI:
    """Blocking JSON client for one apiserver (thread-safe: no shared connection)."""

    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self.server = config.server.rstrip("/")
        self._ssl = config.ssl_context()
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self._ssl))

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeAPI:
        return cls(KubeConfig.load(path))

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def request_raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self._url(path, query), data=data, method=method)
        req.add_header("Accept", "application/json, */*")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace"), method, path) from None

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> JSON:
        raw = self.request_raw(method, path, body, **kwargs)
        return json.loads(raw) if raw else {}

    def get(self, path: str, **query: Any) -> JSON:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body)

    def patch(self, path: str, body: JSON, *, strategic: bool = False) -> JSON:
        ctype = (
            "application/strategic-merge-patch+json"
            if strategic
            else ("application/merge-patch+json")
        )
        return self.request("PATCH", path, body, content_type=ctype)

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        return self.request("DELETE", path, body)

    def watch(self, path: str, *, timeout_seconds: int = 300, **query: Any) -> Iterator[JSON]:
        """Yield watch events (`{"type": ..., "object": ...}`) until the server ends the stream."""
        query = dict(
            query, watch="true", timeoutSeconds=timeout_seconds, allowWatchBookmarks="true"
        )
        req = urllib.request.Request(self._url(path, query), method="GET")
        try:
            resp = self._opener.open(req, timeout=timeout_seconds + 30)
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, err.read().decode(errors="replace"), "WATCH", path) from None
        with resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)
