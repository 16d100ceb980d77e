"""The web UI against the real control plane, in the distribution's Chromium: it lists and
shows a cluster's pipelines with the user's own credentials, acts as that user, and a
user the API refuses sees the refusal (DESIGN §12)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import expect, sync_playwright

from tests.e2e.conftest import (
    Kubectl,
    Operator,
    load_example,
    replay_provider,
    token_kubeconfig,
)
from tests.integration.ui.test_ui_browser import CHROMIUM, serve_ui, shot

pytestmark = pytest.mark.cluster


def _serve(kubeconfig: Path) -> tuple[Any, str]:
    return serve_ui("--kubeconfig", str(kubeconfig))


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.fail("no chromium on PATH: `make test` installs it (make browser)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _viewer(kubectl: Kubectl, ns: str, tmp_path: Path) -> Path:
    """A user who may read pipelines and their trace in ``ns``, and nothing else."""
    kubectl("create", "serviceaccount", "viewer")
    kubectl.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "viewer"},
                   "rules": [{"apiGroups": ["stagecoach.dev"], "resources": ["agentpipelines"],
                              "verbs": ["get", "list", "watch"]},
                             {"apiGroups": [""], "resources": ["configmaps"],
                              "verbs": ["get", "list"]}]},
                  {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "viewer"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "viewer"},
                   "subjects": [{"kind": "ServiceAccount", "name": "viewer",
                                 "namespace": ns}]})
    token = kubectl("create", "token", "viewer").stdout.strip()
    path = token_kubeconfig(kubectl.cluster, tmp_path / "viewer.kubeconfig", "viewer", token)
    cfg = yaml.safe_load(path.read_text())
    cfg["contexts"][0]["context"]["namespace"] = ns  # the viewer's context: its namespace
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_the_ui_shows_cluster_pipelines_and_acts_with_the_users_credentials(
        operator: Operator, kubectl: Kubectl, kube_namespace: str, browser: Any,
        tmp_path: Path) -> None:
    provider, pipeline = load_example("hello")
    # An empty cassette: poem finds no answer and the pipeline fails (something to retry).
    kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "empty"},
                   "data": {"cassette.yaml": "apiVersion: stagecoach.dev/v1alpha1\n"
                                             "kind: Cassette\nentries: []\n"}},
                  replay_provider(provider, "empty"), pipeline)
    obj = kubectl.wait_phase("hello", {"Succeeded", "Failed", "Invalid"}, operator=operator)
    assert obj["status"]["phase"] == "Failed", obj["status"]
    admin, url = _serve(Path(kubectl.cluster.kubeconfig))
    viewer_cfg = _viewer(kubectl, kube_namespace, tmp_path)
    viewer, viewer_url = _serve(viewer_cfg)
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        row = page.locator(f'#runs tr.row[data-id="k8s:{kube_namespace}/hello"]')
        expect(row).to_contain_text("Failed", timeout=20_000)
        expect(row).to_contain_text(kube_namespace)
        shot(page, tmp_path, "cluster-list")
        row.click()
        page.wait_for_selector("svg.dag")
        nodes = page.locator("svg.dag g.node")
        expect(nodes).to_have_count(2)
        assert page.get_attribute('svg.dag g.node[data-stage="greet"]', "data-phase") == \
            "Succeeded"
        assert page.get_attribute('svg.dag g.node[data-stage="poem"]', "data-phase") == \
            "Failed"
        page.click('ul.attempts li[data-key="attempt-poem-1-x-1"]')
        expect(page.locator("#attempt")).to_contain_text("poem #1")
        expect(page.locator("#attempt")).to_contain_text("Write a two-line poem")
        # the runner's own class and message, read from the Failed pod (not a stale copy)
        expect(page.locator("#attempt")).to_contain_text("ProviderUnavailable")
        expect(page.locator("#attempt")).to_contain_text("no unused cassette entry")
        # A failed cluster pipeline offers retry; the admin may: a new pipeline appears.
        page.click('button[data-control="retry"]')
        expect(page.locator("#flash")).to_contain_text("hello-r1 created", timeout=20_000)
        assert page.get_attribute("#flash", "class") == "ok"
        kubectl.wait_phase("hello-r1", {"Succeeded", "Failed", "Invalid"}, operator=operator)
        # The viewer lists only its namespace (the API refused the cluster-wide list)
        # and sees the API's refusal when it tries to act.
        vpage = browser.new_page(viewport={"width": 1300, "height": 1000})
        vpage.on("pageerror", lambda e: errors.append(str(e)))
        vpage.goto(viewer_url + "/")
        expect(vpage.locator(f'#runs tr.row[data-id="k8s:{kube_namespace}/hello"]')
               ).to_be_visible(timeout=20_000)
        expect(vpage.locator("#app .note.err")).to_contain_text("forbidden")
        vpage.click(f'#runs tr.row[data-id="k8s:{kube_namespace}/hello"]')
        vpage.wait_for_selector("svg.dag")
        vpage.click('button[data-control="retry"]')
        expect(vpage.locator("#flash")).to_contain_text("forbidden", timeout=20_000)
        assert vpage.get_attribute("#flash", "class") == "err"
        shot(vpage, tmp_path, "cluster-refused")
        names = {p["metadata"]["name"] for p in kubectl.items("agentpipelines")}
        assert names == {"hello", "hello-r1"}, names  # the refused retry created nothing
        assert not errors, errors
    finally:
        for proc in (admin, viewer):
            proc.terminate()
            proc.wait(10)
