"""Entry point of the ``stagecoach`` console script: argument parsing and dispatch.

Each command lives in its own module; this one only parses arguments, turns expected
failures into a one-line message and an exit code, and never shows a traceback for
bad input (set ``STAGECOACH_DEBUG=1`` to see one for a real bug).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stagecoach", description="Kubernetes-native orchestrator for agent pipelines."
    )
    parser.add_argument("--version", action="version", version=f"stagecoach {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="schema and semantic checks of manifest files")
    p.add_argument("files", nargs="+", metavar="FILE")

    p = sub.add_parser("graph", help="print the pipeline graph with its back-edges")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    p.add_argument("--pipeline", help="pipeline name when the file holds several")

    p = sub.add_parser("run", help="run a pipeline locally")
    p.add_argument("file", metavar="FILE")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="set a parameter (repeatable)")
    p.add_argument("--providers", metavar="FILE", help="a file with ModelProviders")
    p.add_argument("--store", default=".stagecoach/runs", metavar="DIR",
                   help="where run directories go (default: .stagecoach/runs)")
    p.add_argument("--record", metavar="CASSETTE",
                   help="record every provider answer into this cassette file")
    p.add_argument("--pipeline", help="pipeline name when the file holds several")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="reuse the Succeeded, unchanged stages of an earlier local run")
    p.add_argument("--auto-approve", action="store_true",
                   help="approve every approval stage as soon as it waits (inputs take "
                   "their defaults); for demos and tests")

    for verb, what in (("suspend", "no new attempt starts; running ones finish"),
                       ("resume", "undo suspend"),
                       ("stop", "nothing new starts; running attempts and finally finish"),
                       ("terminate", "stop running attempts now; finally is skipped")):
        p = sub.add_parser(verb, help=f"{what} (a cluster pipeline or a local RUN_DIR)")
        p.add_argument("target", metavar="NAME|RUN_DIR")
        p.add_argument("-n", "--namespace", help="namespace of the pipeline (cluster)")
        p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG or ~/.kube)")
    for verb in ("approve", "reject"):
        p = sub.add_parser(verb, help=f"{verb} a stage waiting for approval")
        p.add_argument("target", metavar="NAME|RUN_DIR")
        p.add_argument("stage", metavar="STAGE")
        p.add_argument("-n", "--namespace", help="namespace of the pipeline (cluster)")
        p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG or ~/.kube)")
        p.add_argument("--input", action="append", default=[], metavar="KEY=VALUE",
                       help="a value for one of the stage's approval inputs (repeatable)")
        p.add_argument("-m", "--message", help="a note recorded with the decision")
        p.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                       help="how long to wait for the answer (default 30)")
    p = sub.add_parser("retry", help="re-run a cluster pipeline from its failure point")
    p.add_argument("target", metavar="NAME")
    p.add_argument("-n", "--namespace", help="namespace of the pipeline")
    p.add_argument("--name", help="name of the new pipeline (default: NAME-r<n>)")
    p.add_argument("--kubeconfig", help="kubeconfig (default: $KUBECONFIG or ~/.kube)")

    p = sub.add_parser("trace", help="show a run's timeline, decisions, errors and tokens")
    p.add_argument("target", metavar="NAME|RUN_DIR",
                   help="a local run directory, or a pipeline name in the cluster")
    p.add_argument("-n", "--namespace", help="namespace of the pipeline (cluster)")
    p.add_argument("--html", metavar="OUT", help="write the HTML report to OUT")
    p.add_argument("--json", action="store_true", help="print the events as JSON lines")

    p = sub.add_parser("operator", help="run the operator (reconciles AgentPipelines)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                       help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument("--image", default=os.environ.get("STAGECOACH_IMAGE"),
                   help="image of the stage pods' runner (env STAGECOACH_IMAGE; default: "
                   "ghcr.io/stagecoach-dev/stagecoach:<version>)")
    p.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster or $KUBECONFIG)")
    p.add_argument("--liveness", metavar="URL", help="kopf liveness endpoint, e.g. "
                   "http://0.0.0.0:8080/healthz")
    p.add_argument("--leader-elect", action="store_true",
                   help="reconcile only while holding the Lease stagecoach-operator "
                   "(run two replicas for high availability)")
    p.add_argument("--leader-election-namespace", metavar="NS",
                   help="namespace of the Lease (default: the operator's own)")
    p.add_argument("--manage-stage-rbac", action=argparse.BooleanOptionalAction,
                   default=_env_flag("STAGECOACH_MANAGE_STAGE_RBAC", True),
                   help="create the stage ServiceAccount, Role and RoleBinding in each "
                   "namespace where a pipeline runs (default; the chart turns it off in "
                   "namespace mode, where it installs them itself)")
    p.add_argument("--manage-stage-policy", action=argparse.BooleanOptionalAction,
                   default=_env_flag("STAGECOACH_MANAGE_STAGE_POLICY", True),
                   help="apply the ValidatingAdmissionPolicy that limits what stage pods "
                   "may write (default; the chart ships it and turns this off)")

    p = sub.add_parser("ui", help="serve the web UI on 127.0.0.1 (local runs, a cluster)")
    p.add_argument("--runs", default=None, metavar="DIR",
                   help="local run directories (default: .stagecoach/runs when no "
                   "kubeconfig is given)")
    p.add_argument("--kubeconfig", default=None,
                   help="show the cluster's pipelines with this kubeconfig's credentials "
                   "(default: none; $KUBECONFIG when --runs is not given and it is set)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")

    p = sub.add_parser("crds", help="print the generated CRDs")
    p.add_argument("--check", action="store_true", help="fail if crds/ is stale")
    p.add_argument("--write", action="store_true", help="write crds/ (what `make crds` does)")
    p.add_argument("--dir", default="crds", help="CRD directory (default: crds)")
    return parser


def _cmd_graph(args: argparse.Namespace) -> int:
    from ..api import AgentPipeline, resolve_pipeline
    from .graph import render_dot, render_mermaid
    from .validate import load_manifests

    manifests, problems = load_manifests([args.file])
    for prob in problems:
        print(prob.render(), file=sys.stderr)
    if problems:
        return 1
    pipelines = [d.obj for d in manifests.documents if isinstance(d.obj, AgentPipeline)]
    if args.pipeline:
        pipelines = [p for p in pipelines if p.metadata.name == args.pipeline]
    if len(pipelines) != 1:
        names = ", ".join(p.metadata.name for p in pipelines) or "none"
        print(f"{args.file}: expected one AgentPipeline (found: {names}); use --pipeline",
              file=sys.stderr)
        return 1
    resolved, found = resolve_pipeline(pipelines[0], manifests.templates())
    if resolved is None:
        for prob in found:
            print(f"{args.file}: {prob.render()}", file=sys.stderr)
        return 1
    text = render_dot(resolved) if args.format == "dot" else render_mermaid(resolved)
    sys.stdout.write(text)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .run import run_pipeline

    return run_pipeline(args.file, args.param, args.providers, args.store, args.record,
                        args.pipeline, resume=args.resume, auto_approve=args.auto_approve)


def _cmd_control(args: argparse.Namespace) -> int:
    from .control import run_control

    return run_control(args)


def _cmd_ui(args: argparse.Namespace) -> int:
    from ..ui.server import serve

    runs, kubeconfig = args.runs, args.kubeconfig
    if runs is None and kubeconfig is None:
        runs = ".stagecoach/runs"
        kubeconfig = os.environ.get("KUBECONFIG") or None
    if not 0 < args.port < 65536:
        print(f"stagecoach ui: --port {args.port} is not a port", file=sys.stderr)
        return 1
    try:
        return serve(runs, kubeconfig, args.port)
    except OSError as e:  # the port is taken
        print(f"stagecoach ui: cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1


def _cmd_trace(args: argparse.Namespace) -> int:
    from .trace import run_trace

    return run_trace(args.target, args.namespace, args.html, args.json)


def _cmd_crds(args: argparse.Namespace) -> int:
    from ..crdgen import crd_documents, render_crd_yaml

    docs = {name: render_crd_yaml(crd) for name, crd in crd_documents().items()}
    directory = Path(args.dir)
    if args.check:
        stale = []
        for name, text in docs.items():
            path = directory / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        extra = sorted(str(p) for p in directory.glob("*.yaml") if p.name not in docs) \
            if directory.exists() else []
        if stale or extra:
            for s in stale:
                print(f"{s}: stale or missing; run `make crds`", file=sys.stderr)
            for s in extra:
                print(f"{s}: not generated by stagecoach; remove it", file=sys.stderr)
            return 1
        print(f"{directory}: {len(docs)} CRDs up to date")
        return 0
    if args.write:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in docs.items():
            (directory / name).write_text(text, encoding="utf-8")
            print(f"wrote {directory / name}")
        return 0
    sys.stdout.write("---\n".join(docs.values()))
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from ..operator.jobs import JobOptions
    from ..operator.main import run_operator

    options = JobOptions(image=args.image) if args.image else JobOptions()
    if os.environ.get("STAGECOACH_STAGE_SERVICE_ACCOUNT"):
        from dataclasses import replace

        options = replace(options,
                          service_account=os.environ["STAGECOACH_STAGE_SERVICE_ACCOUNT"])
    namespaces = [] if args.all_namespaces else (args.namespace or ["default"])
    return run_operator(namespaces, args.all_namespaces, options, args.kubeconfig,
                        args.liveness, manage_stage_rbac=args.manage_stage_rbac,
                        manage_stage_policy=args.manage_stage_policy,
                        leader_elect=args.leader_elect,
                        leader_election_namespace=args.leader_election_namespace)


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (also used as the process exit status)."""
    args = _parser().parse_args(argv)
    handlers = {"validate": None, "graph": _cmd_graph, "crds": _cmd_crds, "run": _cmd_run,
                "trace": _cmd_trace, "operator": _cmd_operator, "ui": _cmd_ui,
                **dict.fromkeys(("suspend", "resume", "stop", "terminate", "approve",
                                 "reject", "retry"), _cmd_control)}
    try:
        if args.command == "validate":
            # Discovering pydantic plugins scans every installed package's entry points
            # (20-40 ms of a start that should stay under 0.3 s); a plugin would only
            # observe Stagecoach's own models here, and validate starts no process that
            # could inherit the setting.
            os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
            from .validate import run_validate

            return run_validate(args.files)
        return handlers[args.command](args)  # type: ignore[misc]
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: say so briefly
        if os.environ.get("STAGECOACH_DEBUG"):
            raise
        print(f"stagecoach: internal error: {type(exc).__name__}: {exc} "
              "(set STAGECOACH_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
