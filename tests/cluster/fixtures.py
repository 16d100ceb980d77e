"""Pytest fixtures exposing the real test cluster (load with `pytest_plugins`).

Why: cluster tests share one control plane per session (start-up costs ~10 s);
each test gets its own namespace so tests stay independent. Binaries are built
on first use if missing (see `controlplane.ensure_binaries`).

    pytest_plugins = ["tests.cluster.fixtures"]

    @pytest.mark.cluster
    def test_x(kube_cluster, kube_namespace):
        kube_cluster.kubectl("-n", kube_namespace, "get", "pods")
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from .controlplane import ClusterError, ControlPlane, ensure_binaries


@pytest.fixture(scope="session")
def kube_cluster(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """A running control plane plus node agent; `.kubeconfig`, `.server`, `.kubectl(...)`."""
    try:
        bin_dir = ensure_binaries(build=False)
    except ClusterError:
        # First use on this machine: build now, with output visible (not captured).
        capman = request.config.pluginmanager.getplugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()
        with ctx:
            bin_dir = ensure_binaries(build=True)
    cluster = ControlPlane(bin_dir=bin_dir).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_namespace(kube_cluster: ControlPlane) -> Iterator[str]:
    """A fresh namespace (with its `default` ServiceAccount), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.wait_for_service_account(name)
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
