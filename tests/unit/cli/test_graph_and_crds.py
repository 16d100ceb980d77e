"""``stagecoach graph`` and ``stagecoach crds``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stagecoach.cli.main import main
from stagecoach.crdgen import crd_documents

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = str(ROOT / "examples/research-report/pipeline.yaml")


def test_mermaid_shows_fan_out_and_labelled_back_edges(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD")
    assert "research ==>|forEach| scrape" in out
    assert 'verify -.->|"stages.verify.output.failed_ratio > 0.2 (max 3)"| research' in out
    assert "analyze --> draft" in out and "fact_check --> draft" in out


def test_dot_is_dashed_for_back_edges(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", EXAMPLE, "--format", "dot"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('digraph "battery-report"')
    assert '"qa" -> "draft" [style=dashed' in out and "(max 2)" in out


def test_crds_are_structural_and_carry_rules_and_columns() -> None:
    docs = crd_documents()
    text = json.dumps(docs)
    assert "$ref" not in text and "anyOf" not in text and '"title"' not in text
    ap = docs["agentpipelines.stagecoach.dev.yaml"]
    version = ap["spec"]["versions"][0]
    assert ap["spec"]["names"]["shortNames"] == ["ap"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Progress",
                                                                         "Age"]
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rule = spec["x-kubernetes-validations"][0]["rule"]
    assert rule == "has(self.templateRef) != has(self.stages)"
    stage = spec["properties"]["stages"]["items"]
    assert "has(self.approval)" in stage["x-kubernetes-validations"][0]["rule"]
    fin = spec["properties"]["finally"]["items"]
    assert fin["x-kubernetes-validations"][0]["rule"] == "has(self.agent) != has(self.run)"
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    # every spec field but suspend/shutdown has its own immutability rule
    immutable = {r.split("(self.")[1].split(")")[0] for r in rules if "oldSelf." in r
                 and "shutdown" not in r}
    assert immutable | {"suspend", "shutdown"} == set(spec["properties"])
    assert "maxIterations" in stage["properties"]["routes"]["items"]["required"]
    assert spec["properties"]["maxParallel"]["minimum"] == 1
    assert spec["properties"]["stages"]["x-kubernetes-list-type"] == "map"
    assert stage["properties"]["dependsOn"]["description"]
    mp = docs["modelproviders.stagecoach.dev.yaml"]["spec"]
    assert mp["names"]["shortNames"] == ["mp"]
    assert [c["name"] for c in mp["versions"][0]["additionalPrinterColumns"]][:2] == [
        "Type", "In use"]
    assert docs["agentpipelinetemplates.stagecoach.dev.yaml"]["spec"]["names"][
        "shortNames"] == ["aptpl"]
    sa = docs["stageapprovals.stagecoach.dev.yaml"]["spec"]
    assert sa["names"]["shortNames"] == ["sapr"]
    assert [c["name"] for c in sa["versions"][0]["additionalPrinterColumns"]] == [
        "Pipeline", "Stage", "Decision", "Approver", "Result", "Age"]
    assert sa["versions"][0]["subresources"] == {"status": {}}


def _walk(node: object, path: str = "") -> list[str]:
    """Paths of schema nodes that are not structural (no type, no preserve flag)."""
    bad: list[str] = []
    if isinstance(node, dict):
        if "properties" in node:
            for k, v in node["properties"].items():
                if not ("type" in v or v.get("x-kubernetes-preserve-unknown-fields")):
                    bad.append(f"{path}.{k}")
                bad.extend(_walk(v, f"{path}.{k}"))
        if isinstance(node.get("items"), dict):
            bad.extend(_walk(node["items"], f"{path}[]"))
    return bad


def test_every_schema_node_has_a_type() -> None:
    for doc in crd_documents().values():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == []


def test_crds_check_detects_stale_files(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--write", "--dir", str(tmp_path)]) == 0
    assert main(["crds", "--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "agentpipelines.stagecoach.dev.yaml").write_text("stale")
    assert main(["crds", "--check", "--dir", str(tmp_path)]) == 1
    assert "stale or missing" in capsys.readouterr().err


def test_repo_crds_are_current() -> None:
    assert main(["crds", "--check", "--dir", str(ROOT / "crds")]) == 0
