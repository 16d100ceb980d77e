"""The Job builder: names, labels, owner, pod shapes, secrets by reference. Pure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stagecoach.api import (
    AgentSpec,
    AttemptSpec,
    CassetteRef,
    ConfigMapKeyRef,
    ModelProvider,
    ObjectMeta,
    PipelineRef,
    ProviderSpec,
    Resources,
    RunSpec,
    SecretKeyRef,
    StageSpecBody,
    StoreRef,
)
from stagecoach.operator.jobs import build_job, job_name, short_name, store_ref


def provider(name: str, **spec: Any) -> ModelProvider:
    return ModelProvider(api_version="stagecoach.dev/v1alpha1", kind="ModelProvider",
                         metadata=ObjectMeta(name=name), spec=ProviderSpec(**spec))


def attempt(stage: StageSpecBody, providers: dict[str, ModelProvider], **kw: Any) -> AttemptSpec:
    return AttemptSpec(pipeline=PipelineRef(name="report", namespace="ns", uid="u-1"),
                       stage=stage, store=store_ref("ns", "report"),
                       providers={n: p.spec for n, p in providers.items()}, **kw)


def test_job_names_are_deterministic_and_short() -> None:
    assert job_name("report", "research", 1, 2) == "report-research-1-2"
    assert job_name("report", "scrape", 2, 1, 7) == "report-scrape-2-1-7"
    long = job_name("p" * 40, "s" * 40, 3, 1, 12)
    # 57: the Job controller's pod names are then always "<job>-<5 characters>", which
    # the stage-writes policy relies on.
    assert len(long) <= 57 and long == job_name("p" * 40, "s" * 40, 3, 1, 12)
    assert len(job_name("p" * 30, "s" * 22, 1, 1)) <= 57
    assert long != job_name("p" * 40, "s" * 40, 3, 1, 13)
    assert short_name("Bad_Name") != "Bad_Name"


def test_agent_job() -> None:
    openai = provider("openai", type="openai",
                      api_key_secret_ref=SecretKeyRef(name="openai-key", key="apiKey"))
    stage = StageSpecBody(name="draft", agent=AgentSpec(provider="openai", prompt="hi"),
                          timeout=timedelta(minutes=2))
    spec = attempt(stage, {"openai": openai}, iteration=2, attempt=3)
    job = build_job(spec, {"openai": openai}, resources=Resources(limits={"cpu": "1"}))
    meta = job["metadata"]
    assert meta["name"] == "report-draft-2-3"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "stagecoach", "stagecoach.dev/pipeline": "report",
        "stagecoach.dev/stage": "draft", "stagecoach.dev/iteration": "2",
        "stagecoach.dev/attempt": "3", "stagecoach.dev/provider": "openai"}
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "AgentPipeline", "report", "u-1", True)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] >= 120
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "stagecoach-stage"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["command"] == ["stagecoach-runner"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"] == {"limits": {"cpu": "1"}}
    env = {e["name"]: e for e in c["env"]}
    assert AttemptSpec.from_json(env["STAGECOACH_ATTEMPT"]["value"]).attempt == 3
    key = env["STAGECOACH_API_KEY_OPENAI"]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "openai-key", "key": "apiKey"}}
    assert "value" not in key


def test_replay_cassette_is_mounted_from_its_configmap() -> None:
    replay = provider("replay", type="replay", cassette=CassetteRef(
        config_map_ref=ConfigMapKeyRef(name="demo-cassette")))
    stage = StageSpecBody(name="qa", agent=AgentSpec(provider="replay", prompt="hi"))
    job = build_job(attempt(stage, {"replay": replay}), {"replay": replay})
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0] == {"name": "cassette-0", "configMap": {"name": "demo-cassette"}}
    (c,) = pod["containers"]
    mount = c["volumeMounts"][0]
    spec = AttemptSpec.from_json(c["env"][0]["value"])
    assert spec.providers["replay"].cassette is not None
    assert spec.providers["replay"].cassette.path == mount["mountPath"] + "/cassette.yaml"


def test_run_job_wraps_the_user_container() -> None:
    stage = StageSpecBody(name="scrape", run=RunSpec(image="acme/scraper:1", command=["scrape"],
                                                     args=["--fast"]))
    job = build_job(attempt(stage, {}, index=4, item={"url": "u"}), {})
    assert job["metadata"]["name"] == "report-scrape-1-1-4"
    assert job["metadata"]["labels"]["stagecoach.dev/index"] == "4"
    pod = job["spec"]["template"]["spec"]
    prepare, collect = pod["initContainers"]
    assert prepare["command"][-3:] == ["prepare", "--dir", "/stagecoach"]
    assert "restartPolicy" not in prepare
    assert collect["restartPolicy"] == "Always"
    assert "collect" in collect["command"][-1]
    (main,) = pod["containers"]
    assert (main["image"], main["command"], main["args"]) == ("acme/scraper:1", ["scrape"],
                                                              ["--fast"])
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env == {"STAGECOACH_INPUT": "/stagecoach/input.json",
                   "STAGECOACH_OUTPUT": "/stagecoach/output"}
    assert {"name": "work", "emptyDir": {}} in pod["volumes"]
    assert "activeDeadlineSeconds" not in job["spec"]


TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _token_mounts(c: dict[str, Any]) -> list[str]:
    return [m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == TOKEN_DIR]


def test_only_stagecoach_containers_get_a_token() -> None:
    """DESIGN §6: no automounted token; the user's container has no Kubernetes
    credentials; the runner containers get a bound token only for the ConfigMap store."""
    stage = StageSpecBody(name="scrape", run=RunSpec(image="acme/scraper:1", command=["s"]))
    pod = build_job(attempt(stage, {}), {})["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    [volume] = [v for v in pod["volumes"] if "projected" in v]
    sources = volume["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] <= 3600
    assert {"configMap", "downwardAPI"} <= {k for s in sources for k in s}
    prepare, collect = pod["initContainers"]
    (main,) = pod["containers"]
    assert _token_mounts(prepare) == _token_mounts(collect) == [volume["name"]]
    assert _token_mounts(main) == []
    assert all(m["readOnly"] for c in (prepare, collect) for m in c["volumeMounts"]
               if m["mountPath"] == TOKEN_DIR)
    agent = StageSpecBody(name="draft", agent=AgentSpec(prompt="hi", provider="llm"))
    llm = provider("llm", type="openai", base_url="http://x")
    pod = build_job(attempt(agent, {"llm": llm}), {"llm": llm})["spec"]["template"]["spec"]
    assert _token_mounts(pod["containers"][0]) == [volume["name"]]
    s3 = attempt(stage, {}).model_copy(update={"store": StoreRef(type="s3", bucket="b")})
    pod = build_job(s3, {})["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert not any("projected" in v for v in pod["volumes"])
    for c in pod["initContainers"] + pod["containers"]:
        assert _token_mounts(c) == []


def test_pods_write_only_prepared_objects() -> None:
    assert store_ref("ns", "report").prepared is True


def test_extra_env_reaches_every_container() -> None:
    extra = {"TRACEPARENT": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
             "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    run = StageSpecBody(name="scrape", run=RunSpec(image="acme/scraper:1", command=["s"]))
    pod = build_job(attempt(run, {}), {}, extra_env=extra)["spec"]["template"]["spec"]
    for c in pod["initContainers"] + pod["containers"]:
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert {k: env.get(k) for k in extra} == extra, c["name"]
    llm = provider("llm", type="openai", base_url="http://x")
    agent = StageSpecBody(name="draft", agent=AgentSpec(prompt="hi", provider="llm"))
    pod = build_job(attempt(agent, {"llm": llm}), {"llm": llm},
                    extra_env=extra)["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert {k: env.get(k) for k in extra} == extra
    plain = build_job(attempt(agent, {"llm": llm}), {"llm": llm})
    names = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & extra.keys()
