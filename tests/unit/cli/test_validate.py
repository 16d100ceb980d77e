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
     "spec.stages[0]: a stage needs exactly one of agent, run or approval (it has agent and run)"),
    ("cache on an approval stage", "    - name: a\n      cache: {ttl: 1h}\n"
                                   "      approval: {message: ready}\n",
     "spec.stages[0]: an approval stage takes no cache"),
    ("zero cache ttl", _stage("a", "cache: {ttl: 0s}"),
     "spec.stages[0].cache.ttl: must be greater than 0"),
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


@pytest.mark.parametrize(("spec", "expected"), [
    ("budget: {}", "spec.budget: a budget needs maxTokens, maxCost or both"),
    ("budget: {maxCost: 5}", "spec.budget.maxCost: must be a string, got an integer (5)"),
    ("budget: {maxCost: '-1'}", "spec.budget.maxCost: '-1' does not match the pattern"),
])
def test_budget_mistakes_name_path_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, expected: str
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + f"spec:\n  {spec}\n  stages:\n" + _stage("a") + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert expected in err, err


def test_a_float_price_is_refused_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a") + "---\napiVersion: "
                 "stagecoach.dev/v1alpha1\nkind: ModelProvider\nmetadata: {name: p}\n"
                 "spec: {type: openai, models: {m: {pricing: {input: 0.15, output: '1'}}}}\n")
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert "spec.models.m.pricing.input: must be a string, got a number (0.15)" in err, err


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


def _agent(prompt: str, extra: str = "") -> str:
    return "agent: {provider: p, model: m, prompt: " + prompt + extra + "}"


# Issue 11: what used to fail only at run time (or crash validate) is a problem up front.
STATIC_CASES = [
    ("unknown Jinja filter", _stage("a") + _stage("b", "dependsOn: [a]",
                                                  _agent("'{{ stages.a.output | tojsn }}'")),
     "spec.stages[1].agent.prompt: unknown Jinja filter 'tojsn' (did you mean 'tojson'?) "
     "(line 9)"),
    ("unknown Jinja test inside if", _stage("a", body=_agent(
        "'{% if params.n is evn %}x{% endif %}'")),
     "spec.stages[0].agent.prompt: unknown Jinja test 'evn' (did you mean 'even'?)"),
    ("unknown filter in system", _stage("a", body=_agent("hi", ", system: '{{ 1 | uper }}'")),
     "spec.stages[0].agent.system: unknown Jinja filter 'uper' (did you mean 'upper'?)"),
    ("include", _stage("a", body=_agent("'{% include \"x.txt\" %}'")),
     "spec.stages[0].agent.prompt: {% include %} is not supported"),
    ("import", _stage("a", body=_agent("'{% import \"m\" as m %}'")),
     "spec.stages[0].agent.prompt: {% import %} is not supported"),
    ("extends", _stage("a", body=_agent("'{% extends \"base\" %}'")),
     "spec.stages[0].agent.prompt: {% extends %} is not supported"),
    ("from import", _stage("a", body=_agent("'{% from \"m\" import f %}'")),
     "spec.stages[0].agent.prompt: {% from %} is not supported"),
    ("unknown CEL function in when", _stage("a", "when: size2(params.x) > 1"),
     "spec.stages[0].when: unknown CEL function 'size2' (did you mean 'size'?)"),
    ("unknown CEL method in forEach", _stage("a") + _stage(
        "b", "dependsOn: [a]\nforEach: stages.a.output.foo()"),
     "spec.stages[1].forEach: unknown CEL function 'foo'"),
    ("cel-go extension in route", _stage("a") + _stage(
        "b", "dependsOn: [a]\nroutes: [{when: 'max(1, 2) > 1', goto: a, maxIterations: 2}]"),
     "spec.stages[1].routes[0].when: CEL function 'max' is not available here"),
    ("string literal as when", _stage("a", "when: \"'yes'\""),
     "spec.stages[0].when: must be a boolean condition, got a string ('yes')"),
    ("number as when", _stage("a", "when: '1'"),
     "spec.stages[0].when: must be a boolean condition, got an integer (1)"),
    ("list as route condition", _stage("a") + _stage(
        "b", "dependsOn: [a]\nroutes: [{when: '[true]', goto: a, maxIterations: 2}]"),
     "spec.stages[1].routes[0].when: must be a boolean condition, got a list"),
    ("constant forEach that is not a list", _stage("a", "forEach: \"'abc'\""),
     "spec.stages[0].forEach: must yield a list, got a string ('abc')"),
    ("forEach reading a stage it does not depend on",
     _stage("research") + _stage("scrape", "forEach: stages.research.output.sources"),
     "spec.stages[1].forEach: reads stage 'research', which 'scrape' does not depend on"),
    ("when reading a sibling", _stage("a") + _stage("b", "dependsOn: [a]")
     + _stage("c", "dependsOn: [a]\nwhen: stages.b.output.ok"),
     "spec.stages[2].when: reads stage 'b', which 'c' does not depend on"),
    ("prompt reading a downstream stage", _stage("a", body=_agent(
        "'{{ stages.b.output }}'")) + _stage("b", "dependsOn: [a]"),
     "spec.stages[0].agent.prompt: reads stage 'b', which 'a' does not depend on"),
    ("forEach reading its own stage", _stage("a", "forEach: stages.a.output"),
     "spec.stages[0].forEach: reads its own stage 'a'"),
    ("zero stage timeout", _stage("a", "timeout: 0s"),
     "spec.stages[0].timeout: must be greater than 0 (line 8)"),
    ("no stages", "    []\n", "spec.stages: a pipeline needs at least one stage"),
]


@pytest.mark.parametrize(("name", "stages", "expected"), STATIC_CASES,
                         ids=[c[0] for c in STATIC_CASES])
def test_what_would_fail_at_run_time_is_found_statically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, stages: str, expected: str
) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + stages + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}: {expected}" in err, err
    assert "internal error" not in err and "Traceback" not in err


def test_reads_inside_a_loop_and_by_routes_are_fine(tmp_path: Path) -> None:
    """A stage in a loop may read what ran before the back-edge (from iteration 2 on); a
    route reads its own stage; finally stages and the output read anything."""
    stages = (_stage("a", body=_agent("'{% if loop.iteration > 1 %}{{ stages.c.output }}"
                                      "{% endif %}'"))
              + _stage("b", "dependsOn: [a]")
              + _stage("c", "dependsOn: [b]\nroutes: [{when: stages.c.output.bad, goto: a, "
                       "maxIterations: 3}]"))
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + stages + "  finally:\n"
                 + _stage("n", body=_agent("'{{ stages.a.output }}'"))
                 + "  output: '{{ stages.b.output }}'\n" + PROVIDER)
    proc = subprocess.run([sys.executable, "-m", "stagecoach.cli.main", "validate", str(f)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_unknown_test_in_the_output_template_and_its_line_in_a_block(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a") + "  output: |\n    first line\n"
                 "    {% if stages.a.output is evn %}even{% endif %}\n" + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}: spec.output: unknown Jinja test 'evn' (did you mean 'even'?) (line 10)" in err


def test_run_refuses_a_bad_filter_as_a_problem_not_a_crash(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a", body=_agent("'{{ 1 | tojsn }}'"))
                 + PROVIDER)
    assert main(["run", str(f), "--store", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "spec.stages[0].agent.prompt: unknown Jinja filter 'tojsn'" in err
    assert "internal error" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("meta", "expected"), [
    ("{name: Bad_Name}", "metadata.name: 'Bad_Name' is not a valid name"),
    ("{name: '-x'}", "metadata.name: '-x' is not a valid name"),
    ("{name: " + "a" * 254 + "}", "metadata.name: is 254 characters long"),
])
def test_object_names_must_be_dns_subdomains(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             meta: str, expected: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD.replace("{name: p}", meta) + "spec:\n  stages:\n" + _stage("a")
                 + PROVIDER.replace("{name: p}", meta))
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}: {expected}" in err and f"{f}: documents[1].{expected}" in err, err


def test_a_253_character_dotted_name_is_fine(tmp_path: Path) -> None:
    name = ".".join(["a" * 63] * 4)[:253].rstrip(".")
    f = tmp_path / "p.yaml"
    f.write_text(HEAD.replace("{name: p}", "{name: " + name + "}") + "spec:\n  stages:\n"
                 + _stage("a"))
    assert main(["validate", str(f)]) == 0


@pytest.mark.parametrize(("spec", "expected"), [
    ("  timeout: 0s\n", "spec.timeout: must be greater than 0"),
    ("  timeout: 0m0s\n", "spec.timeout: must be greater than 0"),
    ("  defaults: {timeout: 0ms}\n", "spec.defaults.timeout: must be greater than 0"),
])
def test_zero_timeouts_are_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    spec: str, expected: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n" + spec + "  stages:\n" + _stage("a"))
    assert main(["validate", str(f)]) == 1
    assert f"{f}: {expected}" in capsys.readouterr().err


def test_zero_backoff_is_allowed_and_provider_timeout_is_not(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a", "retry: {limit: 1, backoff: "
                                                      "{initial: 0s, max: 0s}}")
                 + PROVIDER.replace("'http://x'}", "'http://x', request: {timeout: 0s}}"))
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{f}: documents[1].spec.request.timeout: must be greater than 0 (line 13)"]


REPLAY = ("---\napiVersion: stagecoach.dev/v1alpha1\nkind: ModelProvider\n"
          "metadata: {name: r}\nspec: {type: replay, cassette: {path: CASSETTE}}\n")


def test_missing_cassette_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a") + REPLAY.replace("CASSETTE",
                                                                           "missing.yaml"))
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert (f"{f}: documents[1].spec.cassette.path: file 'missing.yaml' does not exist "
            f"(looked for {tmp_path / 'missing.yaml'}) (line 12)") in err


def test_cassette_problems_have_the_cassettes_own_paths(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tapes").mkdir()
    cassette = tmp_path / "tapes" / "c.yaml"
    cassette.write_text("kind: Cassette\nentries:\n  - stage: a\n    response: {content: hi}\n"
                        "  - response: {content: x}\n  - stage: b\n    response: {content: 5}\n"
                        "  - stage: c\n")
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a")
                 + REPLAY.replace("CASSETTE", "tapes/c.yaml"))
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{cassette}: entries[1].stage: required field is missing (line 5)",
        f"{cassette}: entries[2].response.content: must be a string, got an integer (5) "
        "(line 7)",
        f"{cassette}: entries[3]: a cassette entry needs exactly one of response or error "
        "(line 8)",
    ]


def test_cassette_that_is_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.yaml").write_text("entries: [\n")
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a") + REPLAY.replace("CASSETTE", "c.yaml"))
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'c.yaml'}: line 2: YAML syntax error" in err


def test_schema_errors_do_not_hide_semantic_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stages = (_stage("a", "dependOn: []") + _stage("b", "dependsOn: [a]\ntimeout: [1]")
              + _stage("c", "dependsOn: [zz]\nwhen: \"'yes'\""))
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + stages + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{f}: spec.stages[0].dependOn: unknown field 'dependOn' (did you mean 'dependsOn'?) "
        "(line 8)",
        f"{f}: spec.stages[1].timeout: a duration is a string such as '90s', '5m' or '1h30m' "
        "(line 12)",
        f"{f}: spec.stages[2].dependsOn[0]: unknown stage 'zz' (line 15)",
        f"{f}: spec.stages[2].when: must be a boolean condition, got a string ('yes') (line 16)",
    ]


def test_a_repaired_value_does_not_produce_a_second_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value is reported once by the schema, not again by what the repair implies."""
    stages = (_stage("a", body="agent: {provider: 5, model: m, prompt: hi}")
              + _stage("b", "dependsOn: [a, 7]") + _stage("c", "dependsOn: [b]\n"
                                                          "forEach: stages.a.output"))
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  defaults: {provider: [x]}\n  stages:\n" + stages + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{f}: spec.defaults.provider: must be a string, got a list (line 5)",
        f"{f}: spec.stages[0].agent.provider: must be a string, got an integer (5) (line 8)",
        f"{f}: spec.stages[1].dependsOn[1]: must be a string, got an integer (7) (line 11)",
    ]


def test_a_broken_provider_is_not_also_an_unknown_provider(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n" + _stage("a", body=_agent("hi"))
                 + PROVIDER.replace("type: openai", "type: opneai"))
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "documents[1].spec.type: Input should be 'openai'" in err[0], err


MALFORMED = [
    "spec:\n  stages: abc\n",
    "spec:\n  stages: [just-a-string, 7, null, [1]]\n",
    "spec:\n  stages:\n" + _stage("a", "dependsOn: a") + _stage("b", "dependsOn: {x: 1}"),
    "spec:\n  stages:\n    - {name: a, run: {image: x, command: [x]}, routes: x, forEach: [1]}\n",
    "spec:\n  stages:\n    - {name: Bad, agent: {prompt: [1]}, run: 5}\n"
    "    - {name: b, dependsOn: [Bad], run: {image: x, command: [x]}}\n",
    "spec:\n  stages:\n    - {name: a, run: {image: x, command: [x]}, when: {a: 1}}\n"
    "  finally: [x, {name: a}]\n  output: [1]\n",
    "spec: 5\n",
    "spec:\n  templateRef: x\n",
    "spec:\n  stages:\n" + _stage("a") + "  defaults: x\n  params: [1]\n  storage: {type: s3}\n",
    "spec:\n  stages:\n    - name: a\n      agent: {prompt: '" + "{{ (" * 400 + "'}\n",
    "spec:\n  stages:\n    - name: a\n      run: {image: x, command: [x]}\n      when: '"
    + "(" * 300 + "true" + ")" * 300 + "'\n",
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_documents_are_problems_never_crashes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + body + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert err and all(line.startswith(f"{f}: ") for line in err.strip().splitlines()), err
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.parametrize(("stage", "expected"), [
    ("{name: a, run: {image: x, command: [x]}, onFailure: true}",
     "spec.stages[0].onFailure: Input should be 'fail' or 'continue' (got true)"),
    ("{name: a, agent: {provider: p, model: m, prompt: null}}",
     "spec.stages[0].agent.prompt: must be a string, got null"),
    ("{name: a, run: {image: x, command: x}}",
     "spec.stages[0].run.command: must be a list, got a string ('x')"),
    ("just-a-string", "spec.stages[0]: must be an object, got a string ('just-a-string')"),
    ("{name: a, run: {image: x, command: [x]}, routes: {a: 1}}",
     "spec.stages[0].routes: must be a list, got an object"),
    ("{name: a, run: {image: x, command: [x]}, retry: {limit: 1.5}}",
     "spec.stages[0].retry.limit: Input should be a valid integer, got a number with a "
     "fractional part (got 1.5)"),
])
def test_messages_use_the_manifests_words_not_pythons(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], stage: str, expected: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(HEAD + "spec:\n  stages:\n    - " + stage + "\n" + PROVIDER)
    assert main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}: {expected}" in err, err
    for python in ("NoneType", "True", "None", "instance of", "got str", "got dict", "got int",
                   "got list", "got float"):
        assert python not in err, err
