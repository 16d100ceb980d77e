"""The Kubernetes shell: ``stagecoach operator`` (DESIGN §8).

Executes the engine's actions as Jobs. Modules, bottom up: :mod:`.jobs` (pure: attempt
→ Job manifest), :mod:`.outcomes` (pure: Job + pods → attempt result), :mod:`.record`
(the durable run state), :mod:`.slots` (provider concurrency, fair across pipelines),
:mod:`.events` (Kubernetes Events for trace events),
:mod:`.kube` (the only module that talks to the API), :mod:`.reconciler` (gather →
``engine.step`` → apply → status), :mod:`.runtime` (per-pipeline serialisation and
timers), :mod:`.metrics` (Prometheus, health endpoints), :mod:`.main` (kopf wiring) and
:mod:`.fetch` (``stagecoach trace NAME -n NS``). Import :mod:`.main` explicitly;
importing this package does not import kopf.
"""

from .jobs import JobOptions, build_job, job_name
from .outcomes import job_result

__all__ = ["JobOptions", "build_job", "job_name", "job_result"]
