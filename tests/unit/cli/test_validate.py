"""``stagecoach validate``: one line per problem with field path and reason; exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from stagecoach.cli.main import main

ROOT = Path(__file__).resolve().parents[3]
HEAD = "apiVersion: stagecoach.dev/v1alpha1\nkind: AgentPipeline\nmetadata: {name: p}\n"
PROVIDER = ("---\napiVersion: stagecoach.dev/v1alpha1\nkind: ModelProvider\n"
            "metadata: {name: p}\nspec: {type: openai, baseURL: 'http://x'}\n")


def _stage(name: str, extra: str = "", body: str = "run: {image: x, command: [x]}") -> str:
    return f"    - name: {name}\n      {body}\n" + "".join(f"      {line}\n" for line in
                                                        extra.splitlines() if line)


CASES = [
    ("unknown dependency", _stage("a", "dependsOn: [zz]"),
     "spec.stages[0].dependsOn[0]: unknown stage 'zz'"),
    ("self dependency", _stage("a", "dependsOn: [a]"),
     "spec.stages[0].dependsOn[0]: a stage cannot depend on itself"),
    ("forward cycle", _stage("a", "dependsOn: [b]") + _stage("b", "dependsOn: [a]"),
     "dependency cycle"),
    ("back-edge to non-ancestor", _stage("a", "routes: [{when: 'true', goto: b, "
                                              "maxIterations: 2}]") + _stage("b"),
     "spec.stages[0].routes[0].goto: 'b' is not an ancestor of 'a'"),
    ("missing maxIterations", _stage("a") + _stage("b", "dependsOn: [a]\n"
                                                   "routes: [{when: 'true', goto: a}]"),
     "spec.stages[1].routes[0].maxIterations: required field is missing"),
    ("bad CEL in when", _stage("a", "when: 'params.x >'"), "spec.stages[0].when: "),
    ("bad CEL in forEach", _stage("a", "forEach: 'nope.x'"),
     "spec.stages[0].forEach: unknown variable 'nope'"),
    ("bad CEL in route", _stage("a") + _stage("b", "dependsOn: [a]\nroutes: [{when: '1 +', "
                                                   "goto: a, maxIterations: 2}]"),
     "spec.stages[1].routes[0].when: "),
    ("bad Jinja", _stage("a", body="agent: {provider: p, model: m, prompt: '{{ params.x '}"),
     "spec.stages[0].agent.prompt: template syntax error"),
    ("unknown provider", _stage("a", body="agent: {provider: nope, model: m, prompt: hi}"),
     "spec.stages[0].agent.provider: unknown provider 'nope' (known: p)"),
    ("typo field", _stage("a", "dependOn: []"),
     "spec.stages[0].dependOn: unknown field 'dependOn' (did you mean 'dependsOn'?)"),
    ("wrong type", _stage("a", "timeout: [1]"), "spec.stages[0].timeout: "),
    ("bad duration", _stage("a", "timeout: 5 minutes"),
     "spec.stages[0].timeout: invalid duration '5 minutes'"),
    ("duplicate name", _stage("a") + _stage("a"),
     "spec.stages[1].name: duplicate stage name 'a'"),
    ("non-DNS name", _stage("Bad_Name"), "spec.stages[0].name: 'Bad_Name' is not a DNS label"),
    ("both agent and run", "    - name: a\n      run: {image: x, command: [x]}\n"
                           "      agent: {provider: p, model: m, prompt: hi}\n",
     "spec.stages[0]: a stage needs exactly one of agent or run"),
    ("hyphen in CEL", _stage("fact-check") + _stage("b", "dependsOn: [fact-check]\n"
                                                    "when: stages.fact-check.output.ok"),
     "stages['fact-check']"),
]


@pytest.mark.parametrize(("name", "stages", "expected"), CASES, ids=[c[0] for c in CASES])
def test_invalid_manifests_name_path_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, stages: str, expected: str
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + stages + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}: " in err and expected in err, err
    assert "Traceback" not in err


def test_yaml_syntax_error_has_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages: [\n")
    assert main(["validate", str(f)]) == 1
    assert f"{f}: line 6: YAML syntax error" in capsys.readouterr().err


def test_missing_file_and_unknown_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "k.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    assert main(["validate", str(f), str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err
    assert "kind: unknown kind 'Pod'" in err and "missing.yaml: cannot read file" in err


def test_examples_are_valid_and_exit_zero() -> None:
    files = sorted(str(p) for p in (ROOT / "examples").glob("*/pipeline.yaml"))
    assert len(files) >= 2
    proc = subprocess.run([sys.executable, "-m", "stagecoach.cli.main", "validate", *files],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "AgentPipeline battery-report: valid" in proc.stdout
