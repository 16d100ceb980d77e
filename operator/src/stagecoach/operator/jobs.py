"""One stage attempt → one Kubernetes Job manifest (DESIGN §6). Pure: no side effects.

Names are deterministic (``<pipeline>-<stage>-<iteration>-<attempt>[-<index>]``, shortened
with a hash past 63 characters, the limit of the ``job-name`` label the Job controller
adds), so an operator that restarts after persisting its state but before seeing the
Job finds the Job instead of creating a second one. Every Job is owned by its pipeline
(deleting the pipeline deletes its Jobs and their pods), carries the DESIGN §1 labels,
``backoffLimit: 0`` (retries are the operator's, with backoff) and
``activeDeadlineSeconds`` from the stage timeout.

Pod shapes:

* ``agent``: one container ``runner`` running ``stagecoach-runner`` with the
  :class:`~stagecoach.api.AttemptSpec` in ``STAGECOACH_ATTEMPT``; each provider's API key
  comes from its Secret through ``secretKeyRef`` into ``STAGECOACH_API_KEY_<PROVIDER>``
  (the value never enters the spec); a replay provider's cassette ConfigMap is mounted
  and the spec points at the file.
* ``run``: a regular init container ``prepare`` (writes ``input.json`` into the shared
  ``emptyDir``), the user's container ``main`` with ``STAGECOACH_INPUT`` /
  ``STAGECOACH_OUTPUT``, and a native sidecar ``collect`` (init container with
  ``restartPolicy: Always``) that stores the output when stopped.

Security (DESIGN §6): the restricted Pod Security profile (non-root, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp) and the
``stagecoach-stage`` ServiceAccount with ``automountServiceAccountToken: false``. Only
Stagecoach's own containers get a token, through an explicit projected volume at the
standard path, and only when the store is ConfigMaps (the runner then needs the API);
the user's container never has Kubernetes credentials. Job names stay within 57
characters, so the pod name the Job controller generates is always
``<job>-<5 characters>`` (it truncates longer bases), which is what the stage-writes
admission policy (:mod:`.policy`) matches against the writer label.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stagecoach_runner.podmodes import sidecar_command

from .. import API_VERSION, __version__
from ..api import (
    ATTEMPT_ENV,
    AttemptSpec,
    ModelProvider,
    Resources,
    StoreRef,
)

__all__ = [
    "ATTEMPT_LABEL",
    "CASSETTE_DIR",
    "INDEX_LABEL",
    "ITERATION_LABEL",
    "MANAGED_BY",
    "PIPELINE_LABEL",
    "PROVIDER_LABEL",
    "STAGE_LABEL",
    "JobOptions",
    "build_job",
    "job_name",
    "label_value",
    "owner_reference",
    "pipeline_selector",
    "short_name",
    "store_ref",
]

MANAGED_BY = "app.kubernetes.io/managed-by"
PIPELINE_LABEL = "stagecoach.dev/pipeline"
STAGE_LABEL = "stagecoach.dev/stage"
ITERATION_LABEL = "stagecoach.dev/iteration"
ATTEMPT_LABEL = "stagecoach.dev/attempt"
INDEX_LABEL = "stagecoach.dev/index"
PROVIDER_LABEL = "stagecoach.dev/provider"
CASSETTE_DIR = "/var/run/stagecoach/cassettes"
WORK_DIR = "/stagecoach"
DEFAULT_IMAGE = f"ghcr.io/stagecoach-dev/stagecoach:{__version__}"
STAGE_SERVICE_ACCOUNT = "stagecoach-stage"
JOB_NAME_LIMIT = 57
"""Longest Job name: the Job controller's pod names are ``<job>-<5 random>`` only up to
here (``names.SimpleNameGenerator`` cuts bases past 58 characters)."""
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME = "stagecoach-api"
TOKEN_SECONDS = 3600


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def short_name(raw: str, limit: int = 63) -> str:
    """``raw`` when it fits ``limit`` and is a DNS label, else a cut prefix plus a hash."""
    if len(raw) <= limit and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", raw):
        return raw
    clean = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    return f"{clean[: limit - 9].rstrip('-')}-{_hash(raw)}"


def label_value(raw: str) -> str:
    """A valid label value (at most 63 characters; hashed past that)."""
    if len(raw) <= 63:
        return raw
    return f"{raw[:54].rstrip('-_.')}-{_hash(raw)}"


def job_name(pipeline: str, stage: str, iteration: int, attempt: int,
             index: int | None = None) -> str:
    """``<pipeline>-<stage>-<iteration>-<attempt>[-<index>]``, at most 57 characters
    (:data:`JOB_NAME_LIMIT`)."""
    suffix = "" if index is None else f"-{index}"
    return short_name(f"{pipeline}-{stage}-{iteration}-{attempt}{suffix}", JOB_NAME_LIMIT)


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    """The pipeline as controller owner (garbage collection deletes with it)."""
    return {"apiVersion": API_VERSION, "kind": "AgentPipeline", "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def pipeline_selector(pipeline: str) -> str:
    """Label selector of everything Stagecoach created for ``pipeline``."""
    return f"{MANAGED_BY}=stagecoach,{PIPELINE_LABEL}={label_value(pipeline)}"


def store_ref(namespace: str, pipeline: str) -> StoreRef:
    """The ConfigMap store of a pipeline, as its stage pods see it: ``prepared`` (they
    update only the objects the operator created for their attempt)."""
    return StoreRef(type="configmap", namespace=namespace, prefix=pipeline, prepared=True)


@dataclass(frozen=True)
class JobOptions:
    """Operator-wide knobs of the Jobs it creates."""

    image: str = DEFAULT_IMAGE
    service_account: str = STAGE_SERVICE_ACCOUNT
    runner_command: tuple[str, ...] = ("stagecoach-runner",)
    termination_grace_seconds: int = 30


_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}


def _api_key_env(spec: AttemptSpec, providers: Mapping[str, ModelProvider]) -> list[dict[str, Any]]:
    from stagecoach_runner.providers.pool import api_key_env_name

    env = []
    for name in sorted(spec.providers):
        provider = providers.get(name)
        ref = provider.spec.api_key_secret_ref if provider else None
        if ref is not None:
            env.append({"name": api_key_env_name(name),
                        "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _cassettes(spec: AttemptSpec) -> tuple[AttemptSpec, list[dict[str, Any]], list[dict[str, Any]]]:
    """Mount replay cassettes from their ConfigMaps; the spec then names the files."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    providers = dict(spec.providers)
    for i, name in enumerate(sorted(providers)):
        p = providers[name]
        cm = p.cassette.config_map_ref if p.cassette else None
        if p.type != "replay" or cm is None or p.cassette is None:
            continue
        vol = f"cassette-{i}"
        path = f"{CASSETTE_DIR}/{short_name(name)}"
        volumes.append({"name": vol, "configMap": {"name": cm.name}})
        mounts.append({"name": vol, "mountPath": path, "readOnly": True})
        cassette = p.cassette.model_copy(update={"path": f"{path}/{cm.key}"})
        providers[name] = p.model_copy(update={"cassette": cassette})
    return spec.model_copy(update={"providers": providers}), volumes, mounts


def _resources(res: Resources | None) -> dict[str, Any]:
    if res is None:
        return {}
    out: dict[str, Any] = {}
    if res.requests:
        out["requests"] = dict(res.requests)
    if res.limits:
        out["limits"] = dict(res.limits)
    return {"resources": out} if out else {}


def _token_volume() -> dict[str, Any]:
    """What the ServiceAccount admission plugin would mount, as an explicit volume that
    only Stagecoach's containers mount: a bound token, the cluster CA, the namespace."""
    return {"name": TOKEN_VOLUME, "projected": {"defaultMode": 0o444, "sources": [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
        {"configMap": {"name": "kube-root-ca.crt",
                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ]}}


def _runner(name: str, options: JobOptions, args: list[str], env: list[dict[str, Any]],
            mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": options.image,
        "command": [*options.runner_command, *args],
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": dict(_CONTAINER_SECURITY),
    }


def _store_env(secret: str | None) -> list[dict[str, Any]]:
    """S3 credentials from ``spec.storage.s3.credentialsSecret`` (by reference)."""
    if not secret:
        return []
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for env, key in (("AWS_ACCESS_KEY_ID", "accessKeyId"),
                             ("AWS_SECRET_ACCESS_KEY", "secretAccessKey"))]


def build_job(spec: AttemptSpec, providers: Mapping[str, ModelProvider], *,
              options: JobOptions | None = None,
              resources: Resources | None = None,
              store_secret: str | None = None,
              extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Job for one attempt (``spec.pipeline.uid`` becomes the owner reference).
    ``store_secret``: the S3 credentials Secret when the pipeline (or its overflow
    store) stores in a bucket. ``extra_env``: plain variables for every container (the
    operator's ``TRACEPARENT`` and ``OTEL_EXPORTER_OTLP_ENDPOINT``)."""
    options = options or JobOptions()
    pipeline = spec.pipeline.name
    name = job_name(pipeline, spec.stage.name, spec.iteration, spec.attempt, spec.index)
    labels = {
        MANAGED_BY: "stagecoach",
        PIPELINE_LABEL: label_value(pipeline),
        STAGE_LABEL: spec.stage.name,
        ITERATION_LABEL: str(spec.iteration),
        ATTEMPT_LABEL: str(spec.attempt),
    }
    if spec.index is not None:
        labels[INDEX_LABEL] = str(spec.index)
    if spec.agent is not None and spec.agent.provider:
        labels[PROVIDER_LABEL] = label_value(spec.agent.provider)
    spec, volumes, mounts = _cassettes(spec)
    needs_api = spec.store.type == "configmap"
    api_mounts = [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}] \
        if needs_api else []
    if needs_api:
        volumes.append(_token_volume())
    plain_env = [{"name": k, "value": v} for k, v in sorted((extra_env or {}).items())]
    attempt_env = [{"name": ATTEMPT_ENV, "value": spec.to_json()}, *_store_env(store_secret),
                   *plain_env]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": options.service_account,
        "automountServiceAccountToken": False,
        "securityContext": dict(_POD_SECURITY),
        "terminationGracePeriodSeconds": options.termination_grace_seconds,
        "enableServiceLinks": False,
    }
    if spec.agent is not None:
        container = _runner("runner", options, [], attempt_env + _api_key_env(spec, providers),
                            mounts + api_mounts)
        container.update(_resources(resources))
        pod["containers"] = [container]
    else:
        run = spec.run
        assert run is not None
        work = {"name": "work", "mountPath": WORK_DIR}
        volumes.append({"name": "work", "emptyDir": {}})
        dir_args = ["--dir", WORK_DIR]
        collect = _runner("collect", options, ["collect", *dir_args], attempt_env,
                          [work, *api_mounts])
        collect["command"] = sidecar_command(list(options.runner_command), WORK_DIR)
        collect["restartPolicy"] = "Always"
        user_env: list[dict[str, Any]] = []
        for var in run.env:
            item: dict[str, Any] = {"name": var.name}
            if var.value is not None:
                item["value"] = var.value
            if var.value_from is not None:
                item["valueFrom"] = var.value_from
            user_env.append(item)
        user_env += [{"name": "STAGECOACH_INPUT", "value": f"{WORK_DIR}/input.json"},
                     {"name": "STAGECOACH_OUTPUT", "value": f"{WORK_DIR}/output"}]
        user_env += [e for e in plain_env if e["name"] not in {v["name"] for v in user_env}]
        main: dict[str, Any] = {
            "name": "main",
            "image": run.image,
            "command": list(run.command),
            "args": list(run.args),
            "env": user_env,
            "volumeMounts": [work],
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": dict(_CONTAINER_SECURITY),
            **_resources(resources),
        }
        if run.working_dir:
            main["workingDir"] = run.working_dir
        pod["initContainers"] = [
            _runner("prepare", options, ["prepare", *dir_args], attempt_env,
                    [work, *api_mounts]),
            collect,
        ]
        pod["containers"] = [main]
    if volumes:
        pod["volumes"] = volumes
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    if spec.stage.timeout is not None:
        job_spec["activeDeadlineSeconds"] = max(1, int(spec.stage.timeout.total_seconds()) + 5)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": spec.pipeline.namespace,
            "labels": labels,
            "annotations": {"stagecoach.dev/attempt-label": spec.label},
            "ownerReferences": [owner_reference(pipeline, spec.pipeline.uid)],
        },
        "spec": job_spec,
    }
