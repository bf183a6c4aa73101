"""The operator as the Helm chart installs it, end to end on the real control plane.

`helm template` renders the chart and `kubectl apply` installs it (docs/install.md, "without Helm
at install time"): the operator then runs as a pod under the chart's ServiceAccount with the
namespaced RBAC, watching one namespace, and drives a digits-small job whose trigger is raw PromQL,
evaluated by Debian's Prometheus scraping the serving pods. A job costs minutes of CPU, so one
install and one job serve every test here, in file order:

1. the operator runs as a pod, under its own account and with no other credentials;
2. that account cannot read Secrets or create pods (a probe pod under the same account asks);
3. the job in the cluster is the job in git plus its status (GitOps, no drift);
4. the job searches, trains and serves;
5. while Prometheus is unreachable, triggers are unhealthy and no update starts, although the
   served accuracy has fallen below the trigger's threshold;
6. once Prometheus answers, the PromQL trigger fires an update, and the gate promotes it;
7. after all that, the job still matches git.

Prometheus starts only in step 6: until then the chart points the operator at a closed port.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kubernetes
import pytest
import yaml
from cluster import Cluster
from podspecs import python_pod

from lifelong.api import GROUP, VERSION
from lifelong.prometheus import query
from tests.deploy.rendering import CHART, ROOT, helm
from tests.deploy.scrape import PrometheusServer, load_example, write_targets

pytestmark = pytest.mark.e2e

T = TypeVar("T")

RELEASE = "lifelong"
JOB = "digits-small"
INTERVAL = 2
"""The operator's reconcile interval (chart value `operator.reconcileInterval`), in seconds."""
THRESHOLD = 0.8
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SERVER_SET = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- Prometheus ------------------------------------------------------------------------------


class Prometheus:
    """Debian's Prometheus running the shipped scrape configuration (examples/prometheus), with
    Kubernetes discovery swapped for file discovery that a thread keeps in step with the pods of
    the given namespaces (tests/deploy/scrape.py writes the same meta labels)."""

    def __init__(self, folder: Path, cluster: Cluster, namespaces: Sequence[str]) -> None:
        self.server = PrometheusServer(folder)
        self.url, self.targets = self.server.url, self.server.targets
        self._done = threading.Event()
        self._follower = threading.Thread(
            target=self._follow, args=(cluster, tuple(namespaces)), daemon=True
        )
        self._follower.start()

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        self._done.set()
        self.server.close()
        self._follower.join(timeout=10)

    def log(self, lines: int = 30) -> str:
        return self.server.log(lines)

    def _follow(self, cluster: Cluster, namespaces: tuple[str, ...]) -> None:
        """Rewrite the targets whenever a pod comes, goes, gets its address or changes phase."""
        config: Any = kubernetes.config
        client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core: Any = kubernetes.client.CoreV1Api(client)
        seen: list[tuple[str, str, str, str]] | None = None
        try:
            while not self._done.wait(1.0):
                try:
                    pods = [p for ns in namespaces for p in core.list_namespaced_pod(ns).items]
                except kubernetes.client.ApiException:
                    continue  # a namespace on its way out at the end
                now = [
                    (p.metadata.namespace, p.metadata.name, p.status.pod_ip or "", p.status.phase)
                    for p in pods
                ]
                if now != seen:
                    write_targets(load_example(), self.targets,
                                  [client.sanitize_for_serialization(p) for p in pods])  # fmt: skip
                    seen = now
        finally:
            client.close()


# --- the install and the job -----------------------------------------------------------------


@dataclass
class Install:
    """The chart installed for one watched namespace, and the job it runs there."""

    cluster: Cluster
    namespace: str
    """The operator's namespace (not watched)."""
    watched: str
    """The job's namespace, the only one the operator watches."""
    elsewhere: str
    """A namespace the operator has nothing to do with."""
    account: str
    prometheus: Prometheus
    manifest: Path
    """The job as committed to git."""
    phases: list[str] = field(default_factory=list)
    """Every phase of the job seen while waiting, in order, without repeats."""
    failures_before: int | None = None
    """The session's failure count when the first test here began."""

    def pod(self) -> Any:
        pods = self.cluster.core.list_namespaced_pod(
            self.namespace, label_selector="app.kubernetes.io/component=operator"
        ).items
        assert len(pods) == 1, [p.metadata.name for p in pods]
        return pods[0]

    def log(self, lines: int = 60) -> str:
        text = self.cluster.pod_log(self.namespace, self.pod().metadata.name)
        return "\n".join(text.splitlines()[-lines:])

    def job(self) -> dict[str, Any]:
        job: dict[str, Any] = self.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.watched, "autodljobs", JOB
        )
        phase = (job.get("status") or {}).get("phase")
        if phase and (not self.phases or self.phases[-1] != phase):
            self.phases.append(phase)
        return job

    def versions(self) -> dict[str, dict[str, Any]]:
        items = self.cluster.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.watched, "modelversions"
        )["items"]
        return {v["metadata"]["name"]: v for v in items}

    def batch_jobs(self) -> list[str]:
        items = self.cluster.batch.list_namespaced_job(self.watched).items
        return sorted(j.metadata.name for j in items)

    def events(self) -> list[Any]:
        return list(
            self.cluster.core.list_namespaced_event(
                self.watched, field_selector=f"involvedObject.name={JOB}"
            ).items
        )

    def until(self, predicate: Callable[[], T], what: str, timeout: float) -> T:
        """Wait for `predicate`; a timeout says what the job and the operator were doing."""
        try:
            return self.cluster.wait_for(predicate, timeout=timeout, interval=2, message=what)
        except TimeoutError as error:
            status = json.dumps(self.job().get("status"), indent=1)[-3000:]
            raise TimeoutError(
                f"{error}\n--- job status ---\n{status}\n--- operator log ---\n{self.log()}"
            ) from None


def condition(job: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (job.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def trigger_promql(namespace: str) -> str:
    """The job's raw PromQL trigger: the stable version's online accuracy, averaged over 20 s."""
    selector = f'job_name="{JOB}",namespace="{namespace}",role!="canary"'
    return f"avg(avg_over_time(lifelong_online_accuracy{{{selector}}}[20s])) < {THRESHOLD}"


def job_manifest(namespace: str) -> str:
    """examples/digits-small.yaml in the watched namespace, its trigger written as raw PromQL."""
    document = yaml.safe_load((ROOT / "examples" / f"{JOB}.yaml").read_text())
    document["metadata"]["namespace"] = namespace
    document["spec"]["lifelong"]["triggers"] = [
        {"name": "drop", "promql": trigger_promql(namespace)}
    ]
    return yaml.safe_dump(document, sort_keys=False)


def render(namespace: str, watched: str, storage: Path, prometheus: str) -> str:
    """The chart as `helm template` renders it for this install (CRDs are applied apart)."""
    return helm(
        "template", RELEASE, CHART, "--namespace", namespace,
        "--set-json", f"watchNamespaces={json.dumps([watched])}",
        "--set", "rbac.scope=namespaced",
        "--set", f"storage.uri=file://{storage}",
        "--set", f"prometheus.url={prometheus}",
        "--set", f"operator.reconcileInterval={INTERVAL}",
        "--set", "operator.logFormat=plain",
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def install(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    """The chart installed, the operator pod ready and the job applied once."""
    folder = tmp_path_factory.mktemp("chart-install")
    # Stage pods share the store through the host's files; each pod has a private /tmp.
    storage = Path(tempfile.mkdtemp(prefix="lifelong-chart-", dir="/var/tmp"))
    namespaces = [cluster.create_namespace(p) for p in ("lifelong-system", "ml", "elsewhere")]
    namespace, watched, elsewhere = namespaces
    prometheus = Prometheus(folder, cluster, [namespace, watched])
    try:
        # The CRDs first, as docs/install.md says; then the rendered chart, as it is.
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", CHART / "crds")
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/autodljobs.lifelong.dev", "crd/modelversions.lifelong.dev",
        )  # fmt: skip
        rendered = render(namespace, watched, storage, prometheus.url)
        (folder / "rendered.yaml").write_text(rendered)
        cluster.kubectl("apply", "-f", "-", input=rendered)
        names = {d["kind"]: d["metadata"]["name"] for d in yaml.safe_load_all(rendered) if d}
        cluster.kubectl(
            "wait", "--for=condition=Available", f"deployment/{names['Deployment']}",
            "-n", namespace, "--timeout=180s", timeout=200,
        )  # fmt: skip

        # The job, as committed to git, applied once; the GitOps test applies it again.
        manifest = folder / "git" / f"{JOB}.yaml"
        manifest.parent.mkdir()
        manifest.write_text(job_manifest(watched))
        cluster.kubectl("apply", "-f", manifest)
        account = names["ServiceAccount"]
        yield Install(cluster, namespace, watched, elsewhere, account, prometheus, manifest)
    finally:
        prometheus.close()
        for name in namespaces:
            cluster.delete_namespace(name)
        try:
            # Let the pods end before their store goes, so that none writes into a removed folder.
            cluster.wait_for(
                lambda: not any(cluster.core.list_namespaced_pod(n).items for n in namespaces),
                timeout=90,
                interval=1,
                message="the install's pods to end",
            )
        finally:
            shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture(autouse=True)
def in_order(request: pytest.FixtureRequest, install: Install) -> None:
    """Each test continues the job where the previous one left it: once one has failed, the rest
    fail at once instead of waiting out their timeouts."""
    failed = request.session.testsfailed
    if install.failures_before is None:
        install.failures_before = failed
    elif failed > install.failures_before:
        pytest.fail("an earlier step of this job failed; see that failure first", pytrace=False)


# --- 1. the operator as a pod ----------------------------------------------------------------


def test_the_chart_runs_the_operator_as_a_pod_under_its_own_service_account(
    install: Install,
) -> None:
    pod = install.pod()
    assert pod.status.phase == "Running"
    assert pod.spec.service_account_name == install.account
    container = pod.spec.containers[0]
    assert container.command is None  # the image's entrypoint: `lifelong operator`
    assert container.args == ["operator"]
    assert pod.status.pod_ip.startswith("127.") and pod.status.pod_ip != "127.0.0.1"

    # Its only credential is the account's projected token: no kubeconfig, HOME is its own /tmp.
    env = {e.name: e.value for e in container.env}
    assert "KUBECONFIG" not in env and env["HOME"] == "/tmp"
    assert env["LIFELONG_NAMESPACES"] == install.watched
    projected = [v for v in pod.spec.volumes if v.projected is not None]
    tokens = [s for v in projected for s in v.projected.sources if s.service_account_token]
    assert tokens, "no service-account token is projected into the operator pod"

    # It reconciles the job in the namespace it watches: the status says so.
    observed = install.until(
        lambda: (install.job().get("status") or {}).get("observedGeneration"),
        "the operator to write the job's first status",
        timeout=90,
    )
    assert observed == 1


# --- 2. what the operator's identity may not do ----------------------------------------------

# Runs in a pod under the operator's ServiceAccount, with the in-cluster configuration: every
# call is made with the account's token, as the operator's are.
PROBE = textwrap.dedent("""
    import json, os
    import kubernetes
    from kubernetes.client import ApiException

    kubernetes.config.load_incluster_config()
    api = kubernetes.client
    core, batch, custom = api.CoreV1Api(), api.BatchV1Api(), api.CustomObjectsApi()
    own, watched, elsewhere = (os.environ[k] for k in ("OWN", "WATCHED", "ELSEWHERE"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intruder"},
           "spec": {"containers": [{"name": "main", "image": "lifelong"}]}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "main", "image": "lifelong"}]}}}}
    calls = {
        "list jobs (AutoDLJob) in the watched namespace":
            lambda: custom.list_namespaced_custom_object(
                "lifelong.dev", "v1alpha1", watched, "autodljobs"),
        "create a Job in the watched namespace (dry run)":
            lambda: batch.create_namespaced_job(watched, job, dry_run="All"),
        "list jobs (AutoDLJob) elsewhere":
            lambda: custom.list_namespaced_custom_object(
                "lifelong.dev", "v1alpha1", elsewhere, "autodljobs"),
        "get a Secret elsewhere": lambda: core.read_namespaced_secret("kept", elsewhere),
        "list Secrets elsewhere": lambda: core.list_namespaced_secret(elsewhere),
        "list Secrets in kube-system": lambda: core.list_namespaced_secret("kube-system"),
        "list Secrets in its own namespace": lambda: core.list_namespaced_secret(own),
        "list Secrets in the watched namespace": lambda: core.list_namespaced_secret(watched),
        "list Secrets in every namespace": lambda: core.list_secret_for_all_namespaces(),
        "create a pod elsewhere (dry run)":
            lambda: core.create_namespaced_pod(elsewhere, pod, dry_run="All"),
        "create a pod in its own namespace (dry run)":
            lambda: core.create_namespaced_pod(own, pod, dry_run="All"),
        "create a pod in the watched namespace (dry run)":
            lambda: core.create_namespaced_pod(watched, pod, dry_run="All"),
    }
    answers = {}
    for what, call in calls.items():
        try:
            call()
            answers[what] = "allowed"
        except ApiException as error:
            answers[what] = error.status
    review = api.AuthenticationV1Api().create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    answers["whoami"] = review.status.user_info.username
    print("RESULT " + json.dumps(answers))
""")


def test_the_operators_identity_can_neither_read_secrets_nor_create_pods_beyond_its_work(
    install: Install,
) -> None:
    cluster = install.cluster
    # A Secret that exists, so that a refusal to read it cannot be a 404 in disguise.
    cluster.core.create_namespaced_secret(
        install.elsewhere, {"metadata": {"name": "kept"}, "stringData": {"password": "hunter2"}}
    )
    env = [
        {"name": "OWN", "value": install.namespace},
        {"name": "WATCHED", "value": install.watched},
        {"name": "ELSEWHERE", "value": install.elsewhere},
    ]
    probe = python_pod(
        "identity-probe", PROBE, container={"env": env}, serviceAccountName=install.account
    )
    cluster.apply(probe, install.namespace)
    pod = cluster.wait_for_pod(install.namespace, "identity-probe", timeout=120)
    log = cluster.pod_log(install.namespace, "identity-probe")
    assert pod.status.phase == "Succeeded", log
    answers = json.loads(log.split("RESULT ", 1)[1])

    refused = 403
    assert answers == {
        "whoami": f"system:serviceaccount:{install.namespace}:{install.account}",
        # The account does its work in the watched namespace...
        "list jobs (AutoDLJob) in the watched namespace": "allowed",
        "create a Job in the watched namespace (dry run)": "allowed",
        # ...and nothing beyond it: no Secrets anywhere, no pods anywhere.
        "list jobs (AutoDLJob) elsewhere": refused,
        "get a Secret elsewhere": refused,
        "list Secrets elsewhere": refused,
        "list Secrets in kube-system": refused,
        "list Secrets in its own namespace": refused,
        "list Secrets in the watched namespace": refused,
        "list Secrets in every namespace": refused,
        "create a pod elsewhere (dry run)": refused,
        "create a pod in its own namespace (dry run)": refused,
        "create a pod in the watched namespace (dry run)": refused,
    }
    assert cluster.core.list_namespaced_pod(install.elsewhere).items == []


# --- 3. GitOps: the object in the cluster is the object in git -------------------------------


def as_in_git(live: dict[str, Any]) -> dict[str, Any]:
    """The live object less what the API server and kubectl add: the status, server-set
    metadata and kubectl's last-applied annotation. Anything else is drift."""
    found = copy.deepcopy(live)
    found.pop("status", None)
    metadata = found["metadata"]
    for key in SERVER_SET:
        metadata.pop(key, None)
    annotations = metadata.pop("annotations", None) or {}
    annotations.pop(LAST_APPLIED, None)
    if annotations:
        metadata["annotations"] = annotations
    return found


def assert_no_drift(install: Install) -> None:
    in_git = yaml.safe_load(install.manifest.read_text())
    live = install.job()
    assert as_in_git(live) == in_git
    assert live["metadata"]["generation"] == 1  # the spec was never written
    assert live["status"]["observedGeneration"] == 1
    # kubectl's own record of what it applied is the file too (it writes empty annotations).
    applied = json.loads(live["metadata"]["annotations"][LAST_APPLIED])
    if applied["metadata"].get("annotations") == {}:
        del applied["metadata"]["annotations"]
    assert applied == in_git
    # What a GitOps tool runs to decide whether to sync: no difference.
    result = install.cluster.kubectl("diff", "-f", install.manifest, check=False)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_the_job_in_the_cluster_is_the_job_in_git_plus_its_status(install: Install) -> None:
    install.until(
        lambda: install.job()["status"].get("phase") in ("Training", "Serving", "Updating"),
        "the job to reach Training",
        timeout=300,
    )
    # Applying the same manifest again, after the operator has written the status, changes
    # nothing: kubectl sees no difference, and no new generation is made.
    again = install.cluster.kubectl("apply", "-f", install.manifest)
    assert again.stdout.strip().endswith("unchanged"), again.stdout
    assert_no_drift(install)

    live = install.job()
    assert "finalizers" not in live["metadata"]
    assert "labels" not in live["metadata"]


# --- 4. search, training, serving ------------------------------------------------------------


def test_the_job_searches_trains_and_serves_under_the_charts_operator(install: Install) -> None:
    install.until(
        lambda: condition(install.job(), "Ready").get("status") == "True",
        "the job to turn Ready",
        timeout=420,
    )
    job = install.job()
    assert job["status"]["servingVersion"] == f"{JOB}-v1"
    stages = ["Searching", "Training", "Serving"]
    assert [p for p in install.phases if p in stages] == stages, install.phases
    assert install.batch_jobs() == [f"{JOB}-search", f"{JOB}-train"]
    first = install.versions()[f"{JOB}-v1"]
    assert first["spec"]["stage"] == "train"
    assert first["status"]["state"] == "Serving"

    # Every step was announced by the operator, as events on the job.
    reasons = {e.reason for e in install.events()}
    assert {"SearchStarted", "SearchSucceeded", "TrainingStarted", "VersionCreated"} <= reasons
    assert {"ServingStarted"} <= reasons


# --- 5. Prometheus unreachable ---------------------------------------------------------------


def served_accuracy(install: Install) -> float | None:
    """The stable version's online accuracy, read from the serving pod itself."""
    pods = install.cluster.core.list_namespaced_pod(
        install.watched, label_selector=f"lifelong.dev/job={JOB},lifelong.dev/stage=serve"
    ).items
    for pod in pods:
        if pod.status.phase != "Running" or not pod.status.pod_ip:
            continue
        port = pod.spec.containers[0].ports[0].container_port
        try:
            status = httpx.get(f"http://{pod.status.pod_ip}:{port}/v1/status", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            continue
        for version in status.get("versions", []):
            if version.get("role") == "stable" and version.get("accuracy") is not None:
                return float(version["accuracy"])
    return None


def test_while_prometheus_is_unreachable_triggers_are_unhealthy_and_no_update_starts(
    install: Install,
) -> None:
    url = install.prometheus.url

    def unhealthy() -> dict[str, Any]:
        found = condition(install.job(), "TriggersHealthy")
        return found if found.get("status") == "False" else {}

    found = install.until(unhealthy, "TriggersHealthy=False", timeout=60)
    assert found["reason"] == "TriggersUnavailable"
    assert url in found["message"] and "unreachable" in found["message"]
    assert "no update fires" in found["message"]

    # The stream brings digits the first version never saw: its accuracy falls well below the
    # trigger's threshold. A reachable Prometheus would fire the trigger now; this one cannot.
    def fallen() -> bool:
        accuracy = served_accuracy(install)
        return accuracy is not None and accuracy < THRESHOLD - 0.1

    install.until(
        fallen,
        "the served accuracy to fall below the trigger's threshold",
        timeout=120,
    )
    time.sleep(4 * INTERVAL)  # a few more reconcile passes
    job = install.job()
    assert condition(job, "TriggersHealthy")["status"] == "False"
    assert job["status"]["phase"] == "Serving"
    assert (job["status"].get("updates") or {}).get("total", 0) == 0
    assert install.batch_jobs() == [f"{JOB}-search", f"{JOB}-train"]
    assert "TriggerFired" not in {e.reason for e in install.events()}


# --- 6. the PromQL trigger fires through Prometheus ------------------------------------------


def test_a_promql_trigger_fires_an_update_through_prometheus_and_it_is_promoted(
    install: Install,
) -> None:
    prometheus = install.prometheus
    prometheus.start()
    promoted = f"{JOB}-v2"
    install.until(
        lambda: install.job()["status"].get("servingVersion") == promoted,
        f"{promoted} to be promoted",
        timeout=420,
    )

    # The update's version records the PromQL trigger, its parent and the gate's verdict.
    version = install.versions()[promoted]
    assert version["spec"]["trigger"] == "drop"
    assert version["spec"]["parent"] == f"{JOB}-v1"
    assert version["spec"]["stage"] == "update"
    assert version["status"]["state"] == "Serving"
    assert version["status"]["gate"]["decision"] == "promote"
    job = install.job()
    assert job["status"]["lastTrigger"] == "drop"
    # The rollout leaves a moment with no serving pod to read (TriggersHealthy is Unknown then);
    # once the new version serves, Prometheus answers again.
    install.until(
        lambda: condition(install.job(), "TriggersHealthy").get("status") == "True",
        "TriggersHealthy=True after the rollout",
        timeout=120,
    )
    fired = [e.message for e in install.events() if e.reason == "TriggerFired"]
    assert len(fired) == 1 and "Trigger drop fired" in fired[0], fired
    assert "CandidatePromoted" in {e.reason for e in install.events()}

    # Prometheus itself answered the trigger's query with samples while the update started,
    # from series it scraped off the serving pods, labelled with their namespace and pod.
    history = query(prometheus.url, f"count_over_time(({trigger_promql(install.watched)})[10m:1s])")
    assert history and history[0].value > 0, "Prometheus never saw the trigger's condition"
    # Over a range: at this moment the old serving pod's series may be stale (its target is gone)
    # and the new pod's not scraped yet.
    series = query(
        prometheus.url, f'last_over_time(lifelong_online_accuracy{{job_name="{JOB}"}}[10m])'
    )
    assert series, "Prometheus holds no online accuracy of the job's serving pods"
    assert {s.labels["namespace"] for s in series} == {install.watched}
    assert all(s.labels["pod"].startswith(f"{JOB}-serve-") for s in series)
    # ...and it scraped the operator pod's own metrics, through the chart's `metrics` port.
    up = query(prometheus.url, f'up{{job="lifelong-operator",namespace="{install.namespace}"}}')
    assert [s.value for s in up] == [1.0]
    passes = query(prometheus.url, 'lifelong_operator_reconciles_total{outcome="ok"}')
    assert passes and passes[0].value > 0


# --- 7. still no drift -----------------------------------------------------------------------


def test_after_an_update_the_job_still_matches_git(install: Install) -> None:
    assert_no_drift(install)
