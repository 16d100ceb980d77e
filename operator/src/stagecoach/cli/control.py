"""``stagecoach suspend|resume|stop|terminate|approve|reject|retry``: one front for both shells.

A target that is an existing directory is a local run directory: the verb goes to the
``stagecoach run`` process that owns it (:mod:`stagecoach.local.control`). Anything else
is an AgentPipeline name: the verb patches it, creates a StageApproval, or creates the
retry pipeline (:mod:`stagecoach.cli.kubecontrol`). Both answer with a
:class:`ControlError` for anything they refuse; this module prints it (no traceback) and
turns it into exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.control import ControlError

__all__ = ["ControlError", "parse_inputs", "run_control"]


def parse_inputs(items: list[str]) -> dict[str, str]:
    """``--input k=v`` pairs → dict; ControlError naming the bad one."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ControlError(f"--input {item!r}: expected KEY=VALUE")
        if key in out:
            raise ControlError(f"--input {key!r} given twice")
        out[key.strip()] = value
    return out


def run_control(args: argparse.Namespace) -> int:
    """Carry out one verb; print its answer; 0 on success, 1 when refused."""
    verb: str = args.command
    target = Path(args.target)
    try:
        if target.is_dir() and verb != "retry":
            from ..local import control as local

            if verb in {"approve", "reject"}:
                answer = local.send_approval(
                    target, args.stage, "Approve" if verb == "approve" else "Reject",
                    parse_inputs(args.input), args.message, wait=args.wait)
            else:
                answer = local.send_control(target, verb)
        else:
            from . import kubecontrol as kube

            if verb in {"approve", "reject"}:
                answer = kube.approve(
                    args.target, args.stage, "Approve" if verb == "approve" else "Reject",
                    parse_inputs(args.input), args.message, namespace=args.namespace,
                    kubeconfig=args.kubeconfig, wait=args.wait)
            elif verb == "retry":
                answer = kube.retry(args.target, namespace=args.namespace, new_name=args.name,
                                    kubeconfig=args.kubeconfig)
            else:
                answer = kube.control(args.target, verb, namespace=args.namespace,
                                      kubeconfig=args.kubeconfig)
    except ControlError as exc:
        print(f"stagecoach {verb}: {exc}", file=sys.stderr)
        return 1
    print(answer)
    return 0
