"""The Kubernetes manifests (k8s/, kustomize): rendered here, validated offline, wiring checked.

No cluster is started: these are static checks. The manifests are rendered in Python
(the kustomization uses only `namespace`, `labels` and `resources`, which this renderer
applies as kustomize does; where `kubectl` is installed its rendering must match), then
validated against the Kubernetes API schemas bundled by PyPI's `kubernetes-validate`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from conftest import REPO

K8S = REPO / "k8s"
SECRET = "hvit-db"
SECRET_KEYS = {"username", "password"}
# Kinds that live outside any namespace (kustomize leaves their metadata alone).
CLUSTER_KINDS = {"Namespace"}
URL_CREDS_RE = re.compile(r"://[^\s/@]*:[^\s/@]*@")


def render() -> list[dict[str, Any]]:
    """The manifests as `kubectl apply -k k8s/` would send them."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "namespace", "labels", "resources"}
    assert not unknown, f"the Python renderer does not apply {unknown}"
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        assert set(entry) == {"pairs"}, entry  # no includeSelectors/includeTemplates
        labels.update(entry["pairs"])
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text()):
            if doc is None:
                continue
            meta = doc.setdefault("metadata", {})
            if doc["kind"] not in CLUSTER_KINDS:
                meta["namespace"] = kustomization["namespace"]
            meta["labels"] = {**meta.get("labels", {}), **labels}
            docs.append(doc)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Workload name -> its pod template spec."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")}


def containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name, spec in pod_specs(docs).items() for c in spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render()


# ------------------------------------------------------------------ rendering and schemas


def test_python_rendering_matches_kubectl_kustomize(docs):
    # Where kubectl is installed, its kustomize renders the same objects as this test's renderer.
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed; the Python rendering is checked on its own")
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(theirs, key=key) == sorted(docs, key=key)


def test_every_object_passes_the_kubernetes_api_schema(docs):
    # kubernetes-validate bundles the API's JSON schemas: strict validation, offline, of every rendered object.
    kv = pytest.importorskip("kubernetes_validate")
    for doc in docs:
        kv.validate(doc, kv.latest_version(), strict=True)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "Job", "PersistentVolumeClaim", "ConfigMap"}


def test_a_broken_manifest_fails_the_schema():
    # The validator rejects what the API server would: a string where an integer belongs, an unknown field.
    kv = pytest.importorskip("kubernetes_validate")
    job = by_kind(render(), "Job")["hvit-sweep-workers"]
    job["spec"]["completions"] = "four"
    with pytest.raises(kv.ValidationError):
        kv.validate(job, kv.latest_version(), strict=True)
    job = by_kind(render(), "Job")["hvit-sweep-workers"]
    job["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kv.ValidationError):
        kv.validate(job, kv.latest_version(), strict=True)


# ---------------------------------------------------------------------------- wiring


def test_services_select_their_pods_and_ports(docs):
    # postgres, mlflow and optuna-dashboard each have a Service whose selector matches the pods and whose
    # targetPort names a port the container declares.
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    assert set(services) == {"postgres", "mlflow", "optuna-dashboard"} == set(deployments)
    for name, svc in services.items():
        template = deployments[name]["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items(), name
        assert deployments[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        declared = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in declared, (name, port)


def test_urls_name_services_and_ports_that_exist(docs):
    # Every in-cluster URL in an env value (postgres:5432, http://mlflow:5000) is a Service on that port.
    services = {name: {p["port"] for p in s["spec"]["ports"]} for name, s in by_kind(docs, "Service").items()}
    seen = set()
    for workload, container in containers(docs):
        for entry in container.get("env", []):
            for host, port in re.findall(r"(?:@|://)([a-z][a-z0-9-]*):(\d+)", entry.get("value", "")):
                assert int(port) in services.get(host, set()), (workload, entry["name"], host, port)
                seen.add((workload, host))
    assert {("mlflow", "postgres"), ("optuna-dashboard", "postgres")} <= seen
    assert {("hvit-sweep-workers", "postgres"), ("hvit-sweep-workers", "mlflow")} <= seen


def test_database_urls_name_the_databases_postgres_creates(docs):
    # MLflow uses POSTGRES_DB and the dashboard and workers OPTUNA_DB, the two databases postgres creates.
    (pg,) = pod_specs(docs)["postgres"]["containers"]
    env = env_of(pg)
    mlflow_db, optuna_db = env["POSTGRES_DB"]["value"], env["OPTUNA_DB"]["value"]
    urls = {
        name: value
        for workload, c in containers(docs)
        for name, e in env_of(c).items()
        if (value := e.get("value", "")).startswith("postgresql")
    }
    assert urls["MLFLOW_BACKEND_STORE_URI"].endswith(f"/{mlflow_db}")
    assert urls["OPTUNA_STORAGE"].endswith(f"/{optuna_db}") and urls["HVIT_STORAGE"].endswith(f"/{optuna_db}")
    assert all(u.startswith("postgresql+psycopg2://") for u in urls.values())  # psycopg2 is what the images ship


def test_secrets_come_from_the_secret_and_stay_off_command_lines(docs):
    # Credentials come only from Secret hvit-db (username, password), which is not in the manifests;
    # no command, argument or probe carries a credential, and URLs get the password by $(VAR) expansion.
    assert "Secret" not in {d["kind"] for d in docs}
    refs = 0
    for workload, container in containers(docs):
        env = container.get("env", [])
        defined: list[str] = []
        for entry in env:
            source = entry.get("valueFrom", {})
            if "secretKeyRef" in source:
                assert source["secretKeyRef"]["name"] == SECRET and source["secretKeyRef"]["key"] in SECRET_KEYS
                refs += 1
            value = entry.get("value", "")
            assert "PASSWORD" not in entry["name"] or "value" not in entry, (workload, entry["name"])
            if URL_CREDS_RE.search(value):
                # Kubernetes expands $(VAR) only from variables defined earlier in the same list.
                for var in re.findall(r"\$\((\w+)\)", value):
                    assert var in defined, (workload, entry["name"], var)
                assert "$(POSTGRES_PASSWORD)" in value, (workload, value)
            defined.append(entry["name"])
        probe_cmds = [
            arg
            for probe in ("readinessProbe", "livenessProbe", "startupProbe")
            for arg in container.get(probe, {}).get("exec", {}).get("command", [])
        ]
        for arg in [*container.get("command", []), *container.get("args", []), *probe_cmds]:
            assert not URL_CREDS_RE.search(arg) and "$(POSTGRES_PASSWORD)" not in arg, (workload, arg)
    assert refs == 8  # user and password for postgres, mlflow, the dashboard and the workers
    assert f"create secret generic {SECRET}" in (K8S / "kustomization.yaml").read_text()


def test_volumes_name_claims_and_config_maps_that_exist(docs):
    claims = set(by_kind(docs, "PersistentVolumeClaim"))
    config_maps = set(by_kind(docs, "ConfigMap"))
    used = set()
    for workload, spec in pod_specs(docs).items():
        mounts = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert mounts == set(volumes), workload
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
                used.add(volume["persistentVolumeClaim"]["claimName"])
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for c in spec["containers"]:
            for entry in c.get("env", []):
                ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in by_kind(docs, "ConfigMap")[ref["name"]]["data"]
    assert used == claims == {"postgres-data", "mlflow-artifacts", "hvit-data"}


def test_postgres_init_script_is_the_compose_one(docs):
    # The Optuna database is created by the same script as in docker/postgres-init/, mounted where the image runs it.
    script = by_kind(docs, "ConfigMap")["postgres-init"]["data"]["10-create-optuna-db.sh"]
    assert script == (REPO / "docker" / "postgres-init" / "10-create-optuna-db.sh").read_text()
    (pg,) = pod_specs(docs)["postgres"]["containers"]
    assert {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True} in pg["volumeMounts"]


def test_mlflow_serves_artifacts_and_admits_the_workers_host(docs):
    security = pytest.importorskip("mlflow.server.security_utils")
    (ml,) = pod_specs(docs)["mlflow"]["containers"]
    args = ml["command"]
    assert args[:2] == ["mlflow", "server"] and "--serve-artifacts" in args
    assert "--backend-store-uri" not in args  # MLFLOW_BACKEND_STORE_URI, from the environment
    allowed = args[args.index("--allowed-hosts") + 1].split(",")
    for host in ("mlflow:5000", "mlflow.hvit-sweep.svc.cluster.local:5000", "localhost:5000"):
        assert security.is_allowed_host_header(allowed, host), host
    assert not security.is_allowed_host_header(allowed, "evil.example.com")
    dest = args[args.index("--artifacts-destination") + 1]
    assert {"name": "artifacts", "mountPath": dest} in ml["volumeMounts"]


def test_workers_are_an_indexed_job_of_gpu_pods_that_stop_on_sigterm(docs):
    # N pods, each with one GPU and requests; `hvit-sweep worker` is the container's main process (no shell),
    # so SIGTERM reaches it; the grace period leaves time to close a trial; disruptions are not failures.
    job = by_kind(docs, "Job")["hvit-sweep-workers"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] >= 2
    pod = spec["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["command"][:3] == ["hvit-sweep", "worker", "--study"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    resources = worker["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert pod["restartPolicy"] == "Never"
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "Ignore" and rule["onPodConditions"] == [{"type": "DisruptionTarget"}]
    assert env_of(worker)["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    assert any(m["mountPath"] == "/dev/shm" for m in worker["volumeMounts"])


def test_no_container_runs_as_root_or_escalates(docs):
    for workload, spec in pod_specs(docs).items():
        user = spec.get("securityContext", {}).get("runAsUser")
        assert user not in (None, 0), workload
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, workload


def test_every_image_is_pinned(docs):
    for workload, c in containers(docs):
        tag = c["image"].rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", (workload, c["image"])


def test_ci_validates_the_manifests():
    # .ci/run runs the schema validation as its own step.
    ci = (REPO / ".ci" / "run").read_text()
    assert "kubernetes-validate --strict" in ci and "k8s/" in ci
