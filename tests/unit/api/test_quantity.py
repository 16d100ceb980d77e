"""Kubernetes quantities and resource names, as the API server checks a pod's resources:
`stagecoach validate` refuses what the Job would be refused for, with the field path."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from stagecoach.api.quantity import parse_quantity, resource_problems
from stagecoach.cli.main import main


@pytest.mark.parametrize(("text", "value"), [
    ("1", Decimal(1)), ("500m", Decimal("0.5")), ("1.5Gi", Decimal(1.5 * 2**30)),
    ("64Mi", Decimal(64 * 2**20)), ("2k", Decimal(2000)), ("1e3", Decimal(1000)),
    (".5", Decimal("0.5")), ("+3", Decimal(3)), ("100n", Decimal("1E-7")),
])
def test_quantities(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "-1", "1 Gi", "1GB", "", "1.2.3", "Gi", "0x10"])
def test_not_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_resource_rules() -> None:
    assert resource_problems({"cpu": "1", "memory": "1Gi"}, {"cpu": "2",
                                                             "nvidia.com/gpu": "1"}) == []
    assert resource_problems({}, {"gpu": "1"}) == [
        "limits.gpu: not a resource name (cpu, memory, ephemeral-storage, hugepages-<size> "
        "or <domain>/<name>)"]
    assert resource_problems({"memory": "2Gi"}, {"memory": "1Gi"}) == [
        "requests.memory: '2Gi' is more than the limit '1Gi'"]


def test_validate_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("""\
apiVersion: stagecoach.dev/v1alpha1
kind: AgentPipeline
metadata: {name: p}
spec:
  stages:
    - name: a
      run:
        image: x
        command: ["true"]
        env: [{name: "A=B", value: c}, {name: D, valueFrom: {secretKeyRef: {name: s}}}]
      resources: {limits: {cpu: lots}}
    - name: b
      run: {image: x, command: ["true"]}
      resources: {limits: {gpu: "1", memory: 1Gi}, requests: {memory: 2Gi}}
""")
    assert main(["validate", str(f)]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "spec.stages[0].resources.limits.cpu: 'lots' is not a Kubernetes quantity" in out
    assert "spec.stages[0].run.env[0].name: 'A=B' is not a valid environment variable" in out
    assert "spec.stages[0].run.env[1]: valueFrom.secretKeyRef needs key" in out
    assert "spec.stages[1].resources: limits.gpu: not a resource name" in out
    assert "requests.memory: '2Gi' is more than the limit '1Gi'" in out
    assert "Traceback" not in out
