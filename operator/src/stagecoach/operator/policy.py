"""What a stage pod may write, enforced by the API server (DESIGN §6). Pure: no I/O.

The stage ServiceAccount's Role (:data:`STAGE_RULES`) lets the runner read ConfigMaps
and update (or patch) them; it cannot create or delete anything. The
``ValidatingAdmissionPolicy`` of :func:`stage_policy` narrows "update" to the objects
the operator prepared for that very pod (:meth:`~stagecoach.store.ConfigMapStore.prepare`):
the old object's ``stagecoach.dev/writer`` label must be the pod's Job, read from the
pod name that the API server put into the bound token's ``userInfo.extra`` (the Job
controller names pods ``<job>-<5 characters>``; Job names stay within 57 characters so
that always holds), and labels, annotations and owner references must stay as they
were. So a stage pod can never touch the run state (``<pipeline>-state``), a cassette,
another pipeline's or another attempt's objects, or anything unlabelled, whatever RBAC
someone adds to the account later. The chart ships the same two objects
(``templates/stage-policy.yaml``, kept equal by a test); outside Helm the operator
applies them at start (``--manage-stage-policy``, the default).

:func:`approval_policy` is the second policy (DESIGN §9): who may approve is who may
create ``stageapprovals`` in the namespace (RBAC, the chart's ``<release>-approver``
ClusterRole), and the approver a StageApproval names must be the user the API server
authenticated for that very request, so nobody approves in someone else's name. Only
CREATE is checked: the CRD's ``self == oldSelf`` rule on ``spec`` already refuses every
later change of the decision or the approver. The chart ships it as
``templates/approval-policy.yaml`` (kept equal by a test).
"""

from __future__ import annotations

from typing import Any

from .. import GROUP
from ..store.configmap import WRITER_LABEL

__all__ = ["APPROVAL_POLICY_NAME", "POLICY_NAME", "STAGE_RULES", "approval_policy",
           "stage_policy"]

POLICY_NAME = "stagecoach-stage-writes"
APPROVAL_POLICY_NAME = "stagecoach-approvals"
STAGE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["configmaps"],
     "verbs": ["get", "list", "update", "patch"]},
]
"""The stage Role: read upstream outputs and cassette positions, update prepared objects
(a merge patch of its data writes one without reading it first)."""

_POD = "authentication.kubernetes.io/pod-name"


def _same(field: str) -> str:
    return (f"has(object.metadata.{field}) == has(oldObject.metadata.{field}) && "
            f"(!has(object.metadata.{field}) || "
            f"object.metadata.{field} == oldObject.metadata.{field})")


def stage_policy(service_account: str) -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding for stage pods running as
    ``service_account`` (in any namespace)."""
    labels = {"app.kubernetes.io/managed-by": "stagecoach"}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"],
                "operations": ["CREATE", "UPDATE", "DELETE", "CONNECT"]}]},
            "matchConditions": [{
                "name": "stage-service-account",
                "expression": "request.userInfo.username.startsWith('system:serviceaccount:')"
                              f" && request.userInfo.username.endsWith(':{service_account}')",
            }],
            "variables": [
                {"name": "pod",
                 "expression": f"has(request.userInfo.extra) && '{_POD}' in "
                               f"request.userInfo.extra ? request.userInfo.extra['{_POD}'][0]"
                               " : ''"},
                {"name": "writer",
                 "expression": "request.operation == 'UPDATE' && oldObject != null && "
                               "has(oldObject.metadata.labels) && "
                               f"'{WRITER_LABEL}' in oldObject.metadata.labels ? "
                               f"oldObject.metadata.labels['{WRITER_LABEL}'] : ''"},
            ],
            "validations": [
                {"expression": "request.resource.group == '' && "
                               "request.resource.resource == 'configmaps' && "
                               "(!has(request.subResource) || request.subResource == '') && "
                               "request.operation == 'UPDATE'",
                 "message": "a stage pod may only update the output and trace ConfigMaps "
                            "the operator prepared for its attempt",
                 "reason": "Forbidden"},
                {"expression": "request.operation != 'UPDATE' || variables.writer != '' && "
                               "variables.pod.startsWith(variables.writer + '-') && "
                               "size(variables.pod) == size(variables.writer) + 6",
                 "messageExpression": "'ConfigMap ' + oldObject.metadata.name + "
                                      "' was not prepared for pod ' + (variables.pod == '' ? "
                                      "'(a token not bound to a pod)' : variables.pod)",
                 "reason": "Forbidden"},
                {"expression": "request.operation != 'UPDATE' || oldObject == null || "
                               + " && ".join(f"({_same(f)})" for f in
                                             ("labels", "annotations", "ownerReferences",
                                              "finalizers"))
                               + " && (has(object.immutable) && object.immutable) == "
                                 "(has(oldObject.immutable) && oldObject.immutable)",
                 "message": "a stage pod may change a ConfigMap's data, not its labels, "
                            "annotations, owners, finalizers or immutability",
                 "reason": "Forbidden"},
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": labels},
        "spec": {"policyName": POLICY_NAME, "validationActions": ["Deny"]},
    }
    return [policy, binding]


def approval_policy() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding that make ``spec.approver`` of a new
    StageApproval (in any namespace) the authenticated user who creates it."""
    labels = {"app.kubernetes.io/managed-by": "stagecoach"}
    approver = "has(object.spec.approver) ? object.spec.approver : '(none)'"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": APPROVAL_POLICY_NAME, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [GROUP], "apiVersions": ["*"], "resources": ["stageapprovals"],
                "operations": ["CREATE"]}]},
            "validations": [{
                "expression": "has(object.spec.approver) && "
                              "object.spec.approver == request.userInfo.username",
                "messageExpression": "'spec.approver must be the user who creates the "
                                     "StageApproval: it names ' + (" + approver + ") + "
                                     "' but the request is from ' + "
                                     "request.userInfo.username",
                "reason": "Forbidden",
            }],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": APPROVAL_POLICY_NAME, "labels": labels},
        "spec": {"policyName": APPROVAL_POLICY_NAME, "validationActions": ["Deny"]},
    }
    return [policy, binding]
