"""Controlling a run from the command line, on the real control plane (DESIGN §9, issue 12).

Every verb runs as the ``stagecoach`` console script with the kubeconfig of a real user,
authenticated by a client certificate the cluster's CA signed (``CN`` = the username),
and authorised by the chart's roles bound per namespace, as an administrator would:

* alice holds ``<release>-approver`` (approve/reject),
* carol holds ``<release>-run-controller`` (suspend/resume/stop/terminate),
* dave authors pipelines (run-controller plus "create agentpipelines": retry),
* bob holds nothing in the namespace,
* erin (one test) may create StageApprovals but not read pipelines.

The chart's approval admission policy is installed with its RBAC (conftest); the test
code itself keeps the admin kubeconfig. Each refusal must reach the user as one line on
stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cluster.controlplane import ControlPlane
from tests.cluster.kubeapi import write_kubeconfig
from tests.e2e.conftest import STAGECOACH, Kubectl, Operator, chart_release, install_chart_rbac

pytestmark = pytest.mark.cluster

API = "stagecoach.dev/v1alpha1"
OK = "import json, os; json.dump({'ok': 1}, open(os.environ['STAGECOACH_OUTPUT'], 'w'))"


def _role(suffix: str) -> str:
    """The chart's ClusterRole ending in ``suffix`` (its name depends on the release)."""
    [name] = [d["metadata"]["name"] for d in chart_release()[0]
              if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith(suffix)]
    return str(name)


# -- people ---------------------------------------------------------------------------------

def user_kubeconfig(cluster: ControlPlane, directory: Path, username: str) -> Path:
    """A kubeconfig for ``username``: a client certificate signed by the cluster's CA."""
    assert cluster.workdir is not None
    pki = cluster.workdir / "pki"
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=6))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    crt, pem = directory / f"{username}.crt", directory / f"{username}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    return write_kubeconfig(directory / f"{username}.kubeconfig", server=cluster.server,
                            ca_cert=pki / "ca.crt", client_cert=crt, client_key=pem,
                            user=username)


class People:
    """The users of one test namespace and their kubeconfigs."""

    def __init__(self, cluster: ControlPlane, namespace: str, directory: Path) -> None:
        self.cluster, self.ns = cluster, namespace
        self.dir = directory
        self.kc = {u: user_kubeconfig(cluster, directory, u)
                   for u in ("alice", "bob", "carol", "dave")}
        k = Kubectl(cluster, namespace)
        k("create", "rolebinding", "alice-approves", f"--clusterrole={_role('-approver')}",
          "--user=alice")
        for user in ("carol", "dave"):
            k("create", "rolebinding", f"{user}-controls-runs",
              f"--clusterrole={_role('-run-controller')}", f"--user={user}")
        k("create", "role", "author", "--verb=create", "--resource=agentpipelines.stagecoach.dev")
        k("create", "rolebinding", "dave-authors", "--role=author", "--user=dave")
        for user, verb, what in (("alice", "create", "stageapprovals.stagecoach.dev"),
                                 ("carol", "patch", "agentpipelines.stagecoach.dev"),
                                 ("dave", "create", "agentpipelines.stagecoach.dev")):
            self.wait_can(user, verb, what)

    def add(self, user: str) -> None:
        """One more user (the test binds their roles)."""
        self.kc[user] = user_kubeconfig(self.cluster, self.dir, user)

    def kubectl(self, user: str, *args: str, input: str | None = None
                ) -> subprocess.CompletedProcess[str]:
        """kubectl in the namespace as ``user``."""
        return self.cluster.kubectl(f"--kubeconfig={self.kc[user]}", "-n", self.ns, *args,
                                    input=input, check=False)

    def wait_can(self, user: str, verb: str, what: str) -> None:
        deadline = time.monotonic() + 30
        while self.kubectl(user, "auth", "can-i", verb, what).stdout.strip() != "yes":
            assert time.monotonic() < deadline, f"{user} still cannot {verb} {what}"
            time.sleep(0.2)

    def sc(self, user: str, verb: str, *args: str, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
        """``stagecoach VERB ARGS -n NS --kubeconfig <user's>``."""
        return subprocess.run([STAGECOACH, verb, *args, "-n", self.ns,
                               "--kubeconfig", str(self.kc[user])],
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, user: str, verb: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([STAGECOACH, verb, *args, "-n", self.ns,
                                 "--kubeconfig", str(self.kc[user])],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def done(res: subprocess.CompletedProcess[str]) -> str:
    """The one line a verb printed on success."""
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and len(res.stdout.splitlines()) == 1, (res.stdout, res.stderr)
    return res.stdout.strip()


def refused(res: subprocess.CompletedProcess[str], verb: str) -> str:
    """The one-line refusal of a verb (exit 1, nothing on stdout, no traceback)."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stagecoach {verb}: "), res.stderr
    return lines[0].removeprefix(f"stagecoach {verb}: ")


@pytest.fixture
def people(crds: ControlPlane, kube_namespace: str, tmp_path: Path) -> People:
    install_chart_rbac(crds)  # the chart's roles and admission policies, once per cluster
    crds.kubectl("wait", "--for=condition=established", "--timeout=60s",
                 "crd/stageapprovals.stagecoach.dev")
    return People(crds, kube_namespace, tmp_path / "users")


# -- manifests -------------------------------------------------------------------------------

def run_stage(name: str, code: str = OK, **extra: Any) -> dict[str, Any]:
    return {"name": name, "run": {"image": "python:3.12-slim", "command": ["python3", "-c", code],
                                  "output": {"format": "json"}}, **extra}


def sleeper(name: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return run_stage(name, f"import time; time.sleep({seconds}); {OK}", **extra)


def pipeline(name: str, stages: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "AgentPipeline", "metadata": {"name": name},
            "spec": {"stages": stages, **spec}}


def gated(name: str) -> dict[str, Any]:
    """draft → sign-off (an approval with inputs) → publish (echoes the decision)."""
    echo = ("import json, os; d = json.load(open(os.environ['STAGECOACH_INPUT']));"
            " json.dump(d['stages']['sign-off']['output'], open(os.environ['STAGECOACH_OUTPUT'],"
            " 'w'))")
    return pipeline(name, [
        run_stage("draft"),
        {"name": "sign-off", "dependsOn": ["draft"], "approval": {
            "message": "Publish {{ params.topic }}?",
            "inputs": [{"name": "channel", "enum": ["blog", "newsletter"], "default": "blog"},
                       {"name": "ticket", "required": True}]}},
        run_stage("publish", echo, dependsOn=["sign-off"]),
    ], params={"topic": "batteries"})


def stage_of(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in obj["status"]["stages"] if s["name"] == name)


def waiting(obj: dict[str, Any]) -> bool:
    stages = {s["name"]: s for s in (obj.get("status") or {}).get("stages") or []}
    gate = stages.get("sign-off") or {}
    return gate.get("phase") == "Waiting" and gate.get("reason") == "AwaitingApproval"


def sapr(name: str, approver: str, pipeline_name: str = "p", stage: str = "sign-off",
         **spec: Any) -> str:
    return json.dumps({"apiVersion": API, "kind": "StageApproval", "metadata": {"name": name},
                       "spec": {"pipeline": pipeline_name, "stage": stage,
                                "decision": "Approve", "approver": approver, **spec}})


def until(what: str, probe: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.25)


# -- the approval policy and RBAC, no operator needed ---------------------------------------

def test_nobody_approves_in_someone_elses_name(people: People, kubectl: Kubectl) -> None:
    expected = ("spec.approver must be the user who creates the StageApproval: it names bob "
                "but the request is from alice")
    # The policy is in force once the API server has loaded it (a server-side dry run goes
    # through admission and stores nothing).
    until("the approval policy denies", lambda: expected in people.kubectl(
        "alice", "create", "--dry-run=server", "-f", "-", input=sapr("probe", "bob")).stderr)

    # alice claiming to be bob: denied by the policy, with both names.
    res = people.kubectl("alice", "create", "-f", "-", input=sapr("forged", "bob"))
    assert res.returncode != 0 and expected in res.stderr, res.stderr
    assert "ValidatingAdmissionPolicy 'stagecoach-approvals'" in res.stderr
    # Not even a cluster admin may record someone else as the approver.
    res = kubectl("create", "-f", "-", input=sapr("forged-admin", "alice"), check=False)
    assert res.returncode != 0 and "it names alice but the request is from" in res.stderr
    # As herself: admitted.
    res = people.kubectl("alice", "create", "-f", "-", input=sapr("honest", "alice"))
    assert res.returncode == 0, res.stderr
    # bob holds no role here: RBAC refuses him before the policy is asked.
    res = people.kubectl("bob", "create", "-f", "-", input=sapr("bobs", "bob"))
    assert res.returncode != 0 and 'User "bob" cannot create resource "stageapprovals"' in (
        res.stderr), res.stderr
    # Once created, a decision cannot change: alice has no update (RBAC) ...
    patch = json.dumps({"spec": {"approver": "bob", "decision": "Reject"}})
    res = people.kubectl("alice", "patch", "stageapproval", "honest", "--type=merge", "-p",
                         patch)
    assert res.returncode != 0 and "cannot patch resource" in res.stderr, res.stderr
    # ... nor may she answer in the operator's place (status) ...
    res = people.kubectl("alice", "patch", "stageapproval", "honest", "--subresource=status",
                         "--type=merge", "-p", json.dumps({"status": {"phase": "Accepted"}}))
    assert res.returncode != 0 and 'User "alice" cannot' in res.stderr and (
        '"stageapprovals/status"' in res.stderr), res.stderr
    assert people.kubectl("alice", "auth", "can-i", "patch", "stageapprovals.stagecoach.dev",
                          "--subresource=status").stdout.strip() == "no"
    # ... and whoever may update it, the CRD's rule refuses every change of the spec.
    res = kubectl("patch", "stageapproval", "honest", "--type=merge", "-p", patch, check=False)
    assert res.returncode != 0 and "a StageApproval is immutable: create a new one" in (
        res.stderr), res.stderr
    assert kubectl.get("stageapproval", "honest")["spec"]["approver"] == "alice"
    assert {i["metadata"]["name"] for i in kubectl.items("stageapprovals")} == {"honest"}


def test_control_verbs_patch_the_spec_as_rbac_allows(people: People, kubectl: Kubectl) -> None:
    """Without an operator: what the verbs write, and what the API server refuses."""
    kubectl.apply(pipeline("p", [sleeper("a", 60)], params={"topic": "batteries"}))
    get = lambda: kubectl.get("agentpipeline", "p")["spec"]  # noqa: E731

    assert done(people.sc("carol", "suspend", "p")) == "agentpipeline/p suspended"
    assert get()["suspend"] is True
    assert refused(people.sc("carol", "suspend", "p"), "suspend") == (
        "agentpipeline/p is already suspended")
    assert done(people.sc("carol", "resume", "p")) == "agentpipeline/p resumed"
    assert get()["suspend"] is False
    assert refused(people.sc("carol", "resume", "p"), "resume") == (
        "agentpipeline/p is not suspended")
    assert done(people.sc("carol", "terminate", "p")).startswith("agentpipeline/p terminating")
    assert get()["shutdown"] == "Terminate"
    # Terminate → Stop: the CRD's rule refuses it, in its own words.
    msg = refused(people.sc("carol", "stop", "p"), "stop")
    assert "spec.shutdown cannot be removed once set; it may only go from Stop to Terminate" in (
        msg) and 'AgentPipeline.stagecoach.dev "p" is invalid' in msg, msg
    assert get()["shutdown"] == "Terminate"

    # The run-controller's "patch" reaches suspend and shutdown only: the CRD keeps the
    # rest of the spec as it was created.
    for field, value in (("params", {"topic": "other"}), ("stages", [sleeper("z", 1)]),
                         ("resumeFrom", {"name": "elsewhere"})):
        res = people.kubectl("carol", "patch", "agentpipeline", "p", "--type=merge", "-p",
                             json.dumps({"spec": {field: value}}))
        assert res.returncode != 0 and f"spec.{field} is immutable once the pipeline exists" in (
            res.stderr), res.stderr
    assert get()["stages"][0]["name"] == "a" and get()["params"] == {"topic": "batteries"}

    # Least privilege: an approver may not control runs, a stranger may not even look.
    kubectl.apply(pipeline("q", [sleeper("a", 60)]))
    msg = refused(people.sc("alice", "suspend", "q"), "suspend")
    assert msg.startswith('agentpipelines.stagecoach.dev "q" is forbidden: User "alice" cannot '
                          'patch resource "agentpipelines"'), msg
    msg = refused(people.sc("bob", "stop", "q"), "stop")
    assert msg.startswith('agentpipelines.stagecoach.dev "q" is forbidden: User "bob" cannot '
                          'get resource "agentpipelines"'), msg
    assert "suspend" not in kubectl.get("agentpipeline", "q")["spec"]
    assert "shutdown" not in kubectl.get("agentpipeline", "q")["spec"]


@pytest.mark.parametrize(("verb", "args"), [
    ("suspend", ()), ("resume", ()), ("stop", ()), ("terminate", ()), ("retry", ()),
    ("approve", ("sign-off",)), ("reject", ("sign-off", "-m", "no")),
])
def test_verbs_on_a_missing_pipeline_say_so(people: People, verb: str,
                                            args: tuple[str, ...]) -> None:
    user = {"approve": "alice", "reject": "alice", "retry": "dave"}.get(verb, "carol")
    assert refused(people.sc(user, verb, "nope", *args), verb) == (
        f"no AgentPipeline 'nope' in namespace {people.ns}")


def test_without_a_cluster_the_verb_says_so(people: People, tmp_path: Path) -> None:
    res = subprocess.run([STAGECOACH, "suspend", "p", "--kubeconfig", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60)
    assert refused(res, "suspend") == (f"no cluster to ask: no kubeconfig at {tmp_path}/none "
                                       "(give --kubeconfig or set $KUBECONFIG)")
    (tmp_path / "broken").write_text("clusters: 1\n")
    res = subprocess.run([STAGECOACH, "suspend", "p", "--kubeconfig", str(tmp_path / "broken")],
                         capture_output=True, text=True, timeout=60)
    assert refused(res, "suspend").startswith("no cluster to ask (")
    # A cluster that does not answer (nothing listens on its port).
    kc = yaml_swap_server(people.kc["carol"], tmp_path / "dead.kubeconfig",
                          "https://127.0.0.1:9")
    res = subprocess.run([STAGECOACH, "resume", "p", "-n", people.ns, "--kubeconfig", str(kc)],
                         capture_output=True, text=True, timeout=60)
    assert refused(res, "resume").startswith("cannot reach the cluster: ")


def yaml_swap_server(src: Path, dst: Path, server: str) -> Path:
    import yaml

    config = yaml.safe_load(src.read_text())
    config["clusters"][0]["cluster"]["server"] = server
    dst.write_text(yaml.safe_dump(config))
    return dst


# -- with the operator ------------------------------------------------------------------------

def test_approve_and_reject_as_the_authenticated_approver(people: People, operator: Operator,
                                                          kubectl: Kubectl) -> None:
    kubectl.apply(gated("p"), gated("r"))
    for name in ("p", "r"):
        kubectl.wait_for(("agentpipeline", name), waiting, operator=operator)

    # bob holds nothing; carol may read the pipeline but not decide.
    msg = refused(people.sc("bob", "approve", "p", "sign-off", "--input", "ticket=1"),
                  "approve")
    assert msg.startswith('stageapprovals.stagecoach.dev is forbidden: User "bob" cannot '
                          'create resource "stageapprovals"'), msg
    msg = refused(people.sc("carol", "approve", "p", "sign-off", "--input", "ticket=T-1"),
                  "approve")
    assert 'User "carol" cannot create resource "stageapprovals"' in msg, msg
    # What the operator would refuse is refused before anything is written.
    assert refused(people.sc("alice", "approve", "p", "sign-off"), "approve") == (
        "stage sign-off: input 'ticket' is required")
    assert refused(people.sc("alice", "approve", "p", "draft"), "approve") == (
        "stage draft is not an approval stage (approval stages: sign-off)")
    assert refused(people.sc("alice", "approve", "p", "sign-of", "--input", "ticket=1"),
                   "approve") == "pipeline p has no stage 'sign-of' (approval stages: sign-off)"
    assert kubectl.items("stageapprovals") == []

    line = done(people.sc("alice", "approve", "p", "sign-off", "--input", "ticket=T-1",
                          "--input", "channel=newsletter", "-m", "ship it"))
    assert line.startswith("stageapproval/p-sign-off-") and line.endswith(
        "stage sign-off approved by alice"), line
    [approval] = kubectl.items("stageapprovals")
    assert approval["spec"] == {"pipeline": "p", "stage": "sign-off", "iteration": 1,
                                "decision": "Approve", "approver": "alice",
                                "inputs": {"ticket": "T-1", "channel": "newsletter"},
                                "message": "ship it"}
    assert approval["metadata"]["labels"] == {"stagecoach.dev/pipeline": "p",
                                              "stagecoach.dev/stage": "sign-off",
                                              "stagecoach.dev/iteration": "1"}
    assert approval["status"]["phase"] == "Accepted"
    obj = kubectl.wait_phase("p", {"Succeeded", "Failed"}, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    published = json.loads(kubectl.get("configmap", "p-publish-1")["data"]["1.json"])["value"]
    assert published["approved"] is True and published["approver"] == "alice"
    assert published["inputs"] == {"ticket": "T-1", "channel": "newsletter"}
    # Decided once: a second decision is refused before writing (the pipeline finished).
    assert refused(people.sc("alice", "reject", "p", "sign-off"), "reject") == (
        "pipeline p already finished (Succeeded); stage sign-off is not waiting")

    # erin may create StageApprovals but not read pipelines (a narrower Role than the
    # chart's): no checks before writing, the operator alone judges.
    kubectl("create", "role", "decide-only", "--verb=create,get",
            "--resource=stageapprovals.stagecoach.dev")
    kubectl("create", "rolebinding", "erin-decides", "--role=decide-only", "--user=erin")
    people.add("erin")
    people.wait_can("erin", "create", "stageapprovals.stagecoach.dev")
    msg = refused(people.sc("erin", "approve", "r", "sign-off"), "approve")
    assert " refused (InvalidInputs): stage sign-off: input 'ticket' is required" in msg, msg
    line = done(people.sc("erin", "reject", "r", "sign-off", "-m", "not yet"))
    assert line.endswith("stage sign-off rejected by erin"), line
    obj = kubectl.wait_phase("r", {"Succeeded", "Failed"}, operator=operator)
    gate = stage_of(obj, "sign-off")
    assert obj["status"]["phase"] == "Failed" and gate["reason"] == "Rejected", gate
    assert "rejected by erin: not yet" in gate["message"]
    erins = kubectl.items("stageapprovals", "-l", "stagecoach.dev/pipeline=r")
    assert len(erins) == 2 and all("iteration" not in a["spec"] for a in erins)


def test_an_unanswered_approval_waits_for_the_operator_and_it_is_the_judge(
        people: People, operator: Operator, kubectl: Kubectl) -> None:
    kubectl.apply(gated("p"))
    kubectl.wait_for(("agentpipeline", "p"), waiting, operator=operator)
    operator.kill(signal.SIGTERM)

    # No operator: the first approval stays pending, and the CLI says so.
    msg = refused(people.sc("alice", "approve", "p", "sign-off", "--input", "ticket=1",
                            "--wait", "2"), "approve")
    assert msg.startswith("stageapproval/p-sign-off-") and (
        "is pending: the operator did not answer within 2s; it stays and will be judged when "
        "the operator runs" in msg), msg
    first = msg.split()[0].removeprefix("stageapproval/")
    # One that bypasses the CLI's checks: the operator judges it too.
    people.kubectl("alice", "create", "-f", "-", input=sapr("bypass", "alice", stage="draft"))
    time.sleep(1.1)  # the second is younger by a whole second (creationTimestamp)
    # A second decision while the first is unanswered: the status still says Waiting, so
    # only the operator can tell; this CLI waits for its verdict.
    second = people.popen("alice", "reject", "p", "sign-off", "--wait", "120")
    until("the second StageApproval exists", lambda: len(kubectl.items("stageapprovals")) == 3)
    operator.start()
    out, err = second.communicate(timeout=150)
    res = subprocess.CompletedProcess(second.args, second.returncode, out, err)
    second_msg = refused(res, "reject")
    assert " refused (NotWaiting): stage sign-off is not waiting for approval" in second_msg
    kubectl.wait_for(("stageapproval", first),
                     lambda o: (o.get("status") or {}).get("phase") == "Accepted",
                     operator=operator)
    obj = kubectl.wait_phase("p", {"Succeeded", "Failed"}, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    bypass = kubectl.get("stageapproval", "bypass")["status"]
    assert (bypass["phase"], bypass["reason"]) == ("Refused", "NotAnApprovalStage"), bypass
    # A decision for a finished pipeline is refused, never applied later.
    people.kubectl("alice", "create", "-f", "-", input=sapr("late", "alice"))
    late = kubectl.wait_for(("stageapproval", "late"),
                            lambda o: bool((o.get("status") or {}).get("phase")),
                            operator=operator)
    assert (late["status"]["phase"], late["status"]["reason"]) == ("Refused",
                                                                    "PipelineFinished")
    # The refusal of the second decision says who decided first (not "it is Waiting":
    # both were judged in one pass).
    assert "decided by alice" in second_msg, second_msg


def test_suspend_resume_stop_terminate_change_the_phase(people: People, operator: Operator,
                                                        kubectl: Kubectl) -> None:
    notify = run_stage("notify")
    kubectl.apply(pipeline("s", [sleeper("a", 6), run_stage("b", dependsOn=["a"])]),
                  pipeline("t", [sleeper("a", 15), run_stage("b", dependsOn=["a"])],
                           **{"finally": [notify]}),
                  pipeline("u", [sleeper("a", 300)], **{"finally": [notify]}))

    def running(name: str) -> None:
        kubectl.wait_for(("agentpipeline", name), lambda o: bool(
            (o.get("status") or {}).get("stages")) and stage_of(o, "a")["phase"] == "Running",
            operator=operator)

    running("s")
    assert done(people.sc("carol", "suspend", "s")) == "agentpipeline/s suspended"
    running("t")
    assert done(people.sc("carol", "stop", "t")).startswith("agentpipeline/t stopping")
    running("u")
    started = time.monotonic()
    assert done(people.sc("carol", "terminate", "u")).startswith("agentpipeline/u terminating")

    # terminate: the running attempt is stopped at once, finally is skipped.
    obj = kubectl.wait_phase("u", {"Succeeded", "Failed", "Cancelled"}, operator=operator)
    assert time.monotonic() - started < 60
    assert (obj["status"]["phase"], obj["status"].get("reason")) == ("Cancelled", "Terminated")
    assert stage_of(obj, "a")["phase"] == "Failed" and stage_of(obj, "a")["reason"] == "Cancelled"
    assert stage_of(obj, "notify")["phase"] != "Succeeded"
    assert kubectl.items("jobs", "-l",
                         "stagecoach.dev/pipeline=u,stagecoach.dev/stage=notify") == []

    # suspend: a finishes, b does not start; resume: it does.
    obj = kubectl.wait_phase("s", {"Suspended"}, operator=operator)
    kubectl.wait_for(("agentpipeline", "s"), lambda o: stage_of(o, "a")["phase"] == "Succeeded",
                     operator=operator)
    time.sleep(3)
    obj = kubectl.get("agentpipeline", "s")
    assert obj["status"]["phase"] == "Suspended" and stage_of(obj, "b")["phase"] == "Pending"
    assert kubectl.items("jobs", "-l", "stagecoach.dev/pipeline=s,stagecoach.dev/stage=b") == []
    assert done(people.sc("carol", "resume", "s")) == "agentpipeline/s resumed"
    obj = kubectl.wait_phase("s", {"Succeeded", "Failed", "Cancelled"}, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)

    # stop: a finishes, b never starts, finally runs.
    obj = kubectl.wait_phase("t", {"Succeeded", "Failed", "Cancelled"}, operator=operator)
    assert (obj["status"]["phase"], obj["status"].get("reason")) == ("Cancelled", "Stopped")
    assert stage_of(obj, "a")["phase"] == "Succeeded"
    assert stage_of(obj, "notify")["phase"] == "Succeeded"
    assert kubectl.items("jobs", "-l", "stagecoach.dev/pipeline=t,stagecoach.dev/stage=b") == []

    # Finished pipelines take no more verbs.
    for verb, name, how in (("stop", "u", "Cancelled, Terminated"),
                            ("suspend", "t", "Cancelled, Stopped"),
                            ("terminate", "s", "Succeeded")):
        assert refused(people.sc("carol", verb, name), verb) == (
            f"agentpipeline/{name} already finished ({how}): nothing to {verb}")


def test_retry_resumes_from_the_failure_point(people: People, operator: Operator,
                                              kubectl: Kubectl, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"  # b fails until the flag exists (pods run on this host)
    check = (f"import json, os, sys\nif not os.path.exists({str(flag)!r}): sys.exit(2)\n"
             "json.dump({'ok': 1}, open(os.environ['STAGECOACH_OUTPUT'], 'w'))")
    kubectl.apply(pipeline("f", [run_stage("a"), run_stage("b", check, dependsOn=["a"])],
                           defaults={"retry": {"limit": 0}}))
    obj = kubectl.wait_phase("f", {"Succeeded", "Failed"}, operator=operator)
    assert obj["status"]["phase"] == "Failed", json.dumps(obj["status"], indent=1)

    # carol controls runs but cannot start one: retry creates a pipeline.
    msg = refused(people.sc("carol", "retry", "f"), "retry")
    assert 'User "carol" cannot create resource "agentpipelines"' in msg, msg

    flag.write_text("")
    assert done(people.sc("dave", "retry", "f")) == "agentpipeline/f-r1 created (resumes from f)"
    r1 = kubectl.get("agentpipeline", "f-r1")
    old = kubectl.get("agentpipeline", "f")
    assert r1["spec"] == {**old["spec"], "resumeFrom": {"name": "f"}}
    obj = kubectl.wait_phase("f-r1", {"Succeeded", "Failed"}, operator=operator)
    assert obj["status"]["phase"] == "Succeeded", json.dumps(obj["status"], indent=1)
    assert stage_of(obj, "a").get("reason") == "Reused", json.dumps(obj["status"], indent=1)
    assert stage_of(obj, "b").get("reason") != "Reused"
    assert kubectl.items("jobs", "-l", "stagecoach.dev/pipeline=f-r1,stagecoach.dev/stage=a") == []

    # The next retry of f is f-r2; a retry of a retry counts on from the original.
    assert done(people.sc("dave", "retry", "f")) == "agentpipeline/f-r2 created (resumes from f)"
    assert refused(people.sc("dave", "retry", "f-r1"), "retry") == (
        "agentpipeline/f-r1 Succeeded: nothing to retry")
    assert refused(people.sc("dave", "retry", "f", "--name", "f-r1"), "retry") == (
        "agentpipeline/f-r1 already exists")
    assert refused(people.sc("dave", "retry", "f", "--name", "F_1"), "retry").startswith(
        "--name 'F_1' is not a valid name")

    # A stopped run is retried without its shutdown: the retry runs.
    kubectl.apply(pipeline("g", [sleeper("a", 300)]))
    kubectl.wait_for(("agentpipeline", "g"), lambda o: bool((o.get("status") or {}).get(
        "stages")) and stage_of(o, "a")["phase"] == "Running", operator=operator)
    assert refused(people.sc("dave", "retry", "g"), "retry") == (
        "agentpipeline/g is still Running: retry it once it has finished (stagecoach stop g "
        "ends it)")
    done(people.sc("dave", "terminate", "g"))
    kubectl.wait_phase("g", {"Cancelled"}, operator=operator)
    assert done(people.sc("dave", "retry", "g", "--name", "g-again")) == (
        "agentpipeline/g-again created (resumes from g)")
    spec = kubectl.get("agentpipeline", "g-again")["spec"]
    assert "shutdown" not in spec and spec["resumeFrom"] == {"name": "g"}
    kubectl.wait_for(("agentpipeline", "g-again"), lambda o: bool((o.get("status") or {}).get(
        "stages")) and stage_of(o, "a")["phase"] == "Running", operator=operator)
    done(people.sc("dave", "terminate", "g-again"))
