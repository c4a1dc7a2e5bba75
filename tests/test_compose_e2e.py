"""End to end: the compose stack built and started on this machine (issue 13).

docker/standins/harness.py builds local stand-ins for the public base images
(Debian packages and PyPI only, tagged with the public names), then this test
builds the project's own images from its unchanged Dockerfiles and runs the
unchanged docker-compose.yml: it tests the WIRING, not the public images.

Skipped when no Docker engine can be reached or started (e.g. not root), except
under CI=true, where that is a failure. Slow: minutes cold, about one warm.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docker" / "standins"))
import harness  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.docker]

STUDY = "smoke"
TRIALS = 3
PROFILES = ["--profile", "cpu", "--profile", "dashboard"]
STACK_VARS = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "MLFLOW_DB",
    "OPTUNA_DB",
    "HVIT_STUDY",
    "HVIT_CPU_STUDY",
    "WORKER_SHM_SIZE",
    "BIND_ADDR",
    "MLFLOW_PORT",
    "POSTGRES_PORT",
    "DASHBOARD_PORT",
    "MLFLOW_ALLOWED_HOSTS",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_worktree(dest: Path) -> None:
    """The files git would commit (tracked + untracked, not ignored): the build context a clone has."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode != 0:
        shutil.copytree(
            ROOT,
            dest,
            ignore=shutil.ignore_patterns(".git", ".venv*", "mlruns", "data", "checkpoints", "__pycache__", ".env"),
        )
        return
    for rel in filter(None, listed.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _http(url: str, *, host: str | None = None, data: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=None if data is None else json.dumps(data).encode(), headers={"Content-Type": "application/json"}
    )
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Stack:
    def __init__(self, workdir: Path, env_file: Path, env: dict[str, str], project: str, logdir: Path):
        self.workdir, self.env_file, self.env, self.project, self.logdir = workdir, env_file, env, project, logdir
        self.compose = harness.compose_cmd()
        self.proc_env = {k: v for k, v in os.environ.items() if k not in STACK_VARS and not k.startswith("COMPOSE_")}
        self.mlflow = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
        self.storage = (
            f"postgresql+psycopg2://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
            f"@127.0.0.1:{env['POSTGRES_PORT']}/{env['OPTUNA_DB']}"
        )

    def cmd(self, *args: str, profiles: bool = False) -> list[str]:
        return [
            *self.compose,
            "-p",
            self.project,
            "--env-file",
            str(self.env_file),
            *(PROFILES if profiles else []),
            *args,
        ]

    def __call__(self, *args: str, profiles: bool = False, timeout: float = 300, check: bool = True):
        proc = subprocess.run(
            self.cmd(*args, profiles=profiles),
            cwd=self.workdir,
            env=self.proc_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise harness.HarnessError(
                f"`compose {' '.join(args[:3])}` failed ({proc.returncode}): "
                f"{harness._tail(proc.stderr + proc.stdout, 4)}"
            )
        return proc

    def containers(self, service: str | None = None, all_: bool = False) -> list[str]:
        flt = ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            flt += ["--filter", f"label=com.docker.compose.service={service}"]
        out = subprocess.run(["docker", "ps", "-q", *(["-a"] if all_ else []), *flt], capture_output=True, text=True)
        return out.stdout.split()

    def running_services(self) -> set[str]:
        out = subprocess.run(
            [
                "docker",
                "ps",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
                "--format",
                '{{.Label "com.docker.compose.service"}}',
            ],
            capture_output=True,
            text=True,
        )
        return set(out.stdout.split())

    def service_log_tail(self, service: str, n: int = 6) -> str:
        proc = self("logs", "--no-color", "--tail", str(n), service, check=False, timeout=60)
        return harness._tail(proc.stdout + proc.stderr, n)

    def wait_healthy(self, services: list[str], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            for svc in list(pending):
                ids = self.containers(svc, all_=True)
                state = "missing"
                if ids:
                    out = subprocess.run(
                        [
                            "docker",
                            "inspect",
                            "--format",
                            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                            ids[0],
                        ],
                        capture_output=True,
                        text=True,
                    ).stdout.split()
                    state = " ".join(out)
                    if out[-1:] == ["healthy"]:
                        pending.remove(svc)
                        continue
                    if out and out[0] in ("exited", "dead"):
                        raise harness.HarnessError(
                            f"service {svc} exited; last log lines: {self.service_log_tail(svc)}"
                        )
                if time.monotonic() > deadline:
                    raise harness.HarnessError(
                        f"service {svc} unhealthy after {timeout:.0f}s ({state}); "
                        f"last log lines: {self.service_log_tail(svc)}"
                    )
            if pending:
                time.sleep(2)

    def down(self) -> subprocess.CompletedProcess:
        return self("down", "-v", "--remove-orphans", "--timeout", "20", profiles=True, check=False, timeout=180)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    try:
        harness.ensure_engine()
        harness.compose_cmd()
    except harness.EngineUnavailable as exc:
        (pytest.fail if in_ci else pytest.skip)(f"harness: {exc}")

    tmp = tmp_path_factory.mktemp("compose-e2e")
    workdir = tmp / "repo"
    workdir.mkdir()
    _copy_worktree(workdir)
    env = {
        "POSTGRES_USER": "hvit",
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "MLFLOW_DB": "mlflow",
        "OPTUNA_DB": "optuna",
        "HVIT_STUDY": STUDY,
        "HVIT_CPU_STUDY": STUDY,
        "WORKER_SHM_SIZE": "256m",
        "BIND_ADDR": "127.0.0.1",
        "MLFLOW_PORT": str(_free_port()),
        "POSTGRES_PORT": str(_free_port()),
        "DASHBOARD_PORT": str(_free_port()),
    }
    env_file = tmp / "stack.env"  # outside the build context; never in the repo
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    project = "hvite2e" + secrets.token_hex(3)
    st = Stack(workdir, env_file, env, project, tmp)

    t0 = time.monotonic()
    try:
        print(f"\n{harness.NOTICE}", file=sys.stderr)
        # The README's step before `up`: the env file passes the project's own check.
        check = subprocess.run(
            [sys.executable, str(workdir / "docker" / "check_env.py"), "--env-file", str(env_file), "--dashboard"],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        harness.ensure_standins()
        config = yaml.safe_load(st("config", profiles=True).stdout)
        harness.build_project_images(config)
        st.build_s = time.monotonic() - t0
        st("up", "-d", timeout=300)
        st.wait_healthy(["postgres", "mlflow"])
        st.up_s = time.monotonic() - t0 - st.build_s
    except harness.HarnessError as exc:
        st.down()
        pytest.fail(f"harness: {exc}", pytrace=False)
    try:
        yield st
    finally:
        if st.containers(all_=True):
            for svc in ("postgres", "mlflow", "optuna-dashboard"):
                (tmp / f"{svc}.log").write_text(st.service_log_tail(svc, 200))
            st.down()
        print(
            f"\n[compose-e2e] images {st.build_s:.0f}s, up+healthy {st.up_s:.0f}s, total {time.monotonic() - t0:.0f}s",
            file=sys.stderr,
        )


def _experiment_id(st: Stack) -> str:
    status, body = _http(f"{st.mlflow}/api/2.0/mlflow/experiments/get-by-name?experiment_name={STUDY}")
    assert status == 200, body[:300]
    return json.loads(body)["experiment"]["experiment_id"]


def _runs(st: Stack, exp_id: str) -> list[dict]:
    status, body = _http(
        f"{st.mlflow}/api/2.0/mlflow/runs/search", data={"experiment_ids": [exp_id], "max_results": 200}
    )
    assert status == 200, body[:300]
    return json.loads(body).get("runs", [])


def _process_uids(cid: str) -> tuple[set[str], str]:
    """Numeric uids of a container's service: its main process and every descendant.

    Processes that `docker exec` starts, the healthcheck's `pg_isready` among them, are not the
    service: they run as the image's default user and come and go, so they are left out.
    """
    main = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", cid], capture_output=True, text=True
    ).stdout.strip()
    top = subprocess.run(["docker", "top", cid, "-o", "pid,ppid,uid,args"], capture_output=True, text=True)
    rows = [line.split(None, 3) for line in top.stdout.splitlines()[1:] if line.strip()]
    service: set[str] = set()
    grown = {main}
    while grown != service:  # add children until no process is left to add
        service = grown
        grown = service | {pid for pid, ppid, *_ in rows if ppid in service}
    return {uid for pid, _, uid, *_ in rows if pid in service}, (top.stdout + top.stderr).strip()


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


# ------------------------------------------------------------------- tests (in order)


def test_plain_up_starts_only_postgres_and_mlflow(stack):
    # Plain `up` brings no worker (no GPU needed) and no dashboard.
    assert stack.running_services() == {"postgres", "mlflow"}


def test_published_ports_are_loopback_only(stack):
    for cid in stack.containers():
        ports = (
            json.loads(
                subprocess.run(
                    ["docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", cid],
                    capture_output=True,
                    text=True,
                ).stdout
            )
            or {}
        )
        for bindings in ports.values():
            for b in bindings or []:
                assert b["HostIp"] == "127.0.0.1", (cid, ports)


# /health and /version are exempt from MLflow's Host check; an API route is not.
API_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def test_mlflow_allowed_hosts_from_host(stack):
    assert _http(f"{stack.mlflow}{API_PROBE}")[0] == 200
    assert _http(f"{stack.mlflow}{API_PROBE}", host=f"localhost:{stack.env['MLFLOW_PORT']}")[0] == 200
    status, _ = _http(f"{stack.mlflow}{API_PROBE}", host="evil.example.com")
    assert status in (400, 403), f"MLflow accepted Host: evil.example.com ({status})"


def test_mlflow_allowed_hosts_from_worker_network(stack):
    # A CPU worker container reaches MLflow by service name; a foreign Host header is refused.
    probe = (
        "import json, urllib.request, urllib.error\n"
        "def get(host=None):\n"
        f"    req = urllib.request.Request('http://mlflow:5000{API_PROBE}')\n"
        "    if host: req.add_header('Host', host)\n"
        "    try: return urllib.request.urlopen(req, timeout=10).status\n"
        "    except urllib.error.HTTPError as e: return e.code\n"
        "print(json.dumps({'service': get(), 'evil': get('evil.example.com')}))\n"
    )
    proc = stack("run", "--rm", "--no-deps", "-T", "worker-cpu", "python", "-c", probe, profiles=True, timeout=180)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["service"] == 200, result
    assert result["evil"] in (400, 403), result


def test_containers_run_unprivileged(stack):
    for svc in ("postgres", "mlflow"):
        (cid,) = stack.containers(svc)
        uids, top = _process_uids(cid)
        assert uids and "0" not in uids, f"{svc} runs as root: {top}"
    user = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Config.User}}", "hvit-sweep:0.1.0"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert user not in ("", "root", "0")


def test_cpu_worker_runs_smoke_study_through_mlflow_restart(stack):
    # One CPU worker container runs a 3-trial smoke study against postgres + mlflow by service
    # name; MLflow is restarted while it runs, and no trial is lost.
    log = stack.logdir / "worker-run.log"
    with open(log, "w") as fh:
        # MLflow's client retries with backoff 2**n x factor (default 2); factor 1 only shortens the
        # wait after the restart, the retry path is the same.
        proc = subprocess.Popen(
            stack.cmd(
                "run",
                "--rm",
                "-T",
                "-e",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1",
                "worker-cpu",
                "hvit-sweep",
                "run",
                "--study",
                STUDY,
                "--trials",
                str(TRIALS),
                profiles=True,
            ),
            cwd=stack.workdir,
            env=stack.proc_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        # Restart MLflow as soon as the first trial run exists.
        deadline = time.monotonic() + 300
        restarted = False
        while proc.poll() is None and time.monotonic() < deadline:
            status, body = _http(f"{stack.mlflow}/api/2.0/mlflow/experiments/get-by-name?experiment_name={STUDY}")
            if status == 200:
                runs = _runs(stack, json.loads(body)["experiment"]["experiment_id"])
                if any(_tags(r).get("hvit.role") == "trial" for r in runs):
                    stack("restart", "mlflow", timeout=120)
                    restarted = True
                    break
            time.sleep(1)
        assert restarted, (
            f"no trial run appeared before the sweep ended; worker log: {harness._tail(log.read_text(), 6)}"
        )
        stack.wait_healthy(["mlflow"], timeout=180)
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, f"worker exited {rc}: {harness._tail(log.read_text(), 10)}"
    stack.restarted = True


def test_mlflow_rest_shows_parent_and_finished_children(stack):
    exp_id = _experiment_id(stack)
    runs = _runs(stack, exp_id)
    parents = [r for r in runs if _tags(r).get("hvit.role") == "study"]
    children = [r for r in runs if _tags(r).get("hvit.role") == "trial"]
    assert len(parents) == 1, [r["info"]["run_name"] for r in runs]
    parent_id = parents[0]["info"]["run_id"]
    assert len(children) == TRIALS, [(r["info"]["run_name"], r["info"]["status"]) for r in children]
    for child in children:
        tags = _tags(child)
        assert tags.get("mlflow.parentRunId") == parent_id
        # FINISHED when complete or pruned (a pruned one is tagged with its epoch).
        assert child["info"]["status"] == "FINISHED", (child["info"], tags)
        status, body = _http(
            f"{stack.mlflow}/api/2.0/mlflow/metrics/get-history?run_id={child['info']['run_id']}&metric_key=val_acc1"
        )
        assert status == 200, body[:300]
        steps = sorted(m["step"] for m in json.loads(body).get("metrics", []))
        assert len(steps) >= 1 and steps == sorted(set(steps)), steps
        if "optuna.pruned_at_epoch" not in tags:
            assert len(steps) >= 2, f"per-epoch metrics expected, got steps {steps}"
    stack.children = children


def test_checkpoint_downloads_through_proxied_artifact_store(stack):
    children = getattr(stack, "children", None) or pytest.skip("no child runs")
    finished = [c for c in children if c["info"]["status"] == "FINISHED"]
    run = finished[0]["info"]
    uri = run["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:/"), uri
    path = uri[len("mlflow-artifacts:/") :].lstrip("/") + "/checkpoint/best.pth"
    status, body = _http(f"{stack.mlflow}/api/2.0/mlflow-artifacts/artifacts/{path}", timeout=60)
    assert status == 200, body[:300]
    assert len(body) > 1000 and body[:2] == b"PK", "best.pth is not a torch zip checkpoint"
    torch = pytest.importorskip("torch")
    ckpt_file = stack.logdir / "best.pth"
    ckpt_file.write_bytes(body)
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    assert isinstance(ckpt, dict) and ckpt


def test_show_lists_the_trials_from_the_host(stack):
    exe = Path(sys.executable).with_name("hvit-sweep")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "hvit_sweeps.cli"]
    proc = subprocess.run(
        [*cmd, "show", "--study", STUDY, "--storage", stack.storage],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    optuna = pytest.importorskip("optuna")
    trials = optuna.load_study(study_name=STUDY, storage=stack.storage).get_trials(deepcopy=False)
    assert len(trials) == TRIALS, [(t.number, t.state) for t in trials]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), [(t.number, t.state) for t in trials]
    # Every trial is in `show`'s table and points at a child run MLflow still has.
    for t in trials:
        assert str(t.number) in proc.stdout
    run_ids = {c["info"]["run_id"] for c in getattr(stack, "children", [])}
    assert {t.user_attrs.get("mlflow_run_id") for t in trials} == run_ids


def test_dashboard_profile_answers(stack):
    stack("--profile", "dashboard", "up", "-d", "optuna-dashboard", timeout=180)
    url = f"http://127.0.0.1:{stack.env['DASHBOARD_PORT']}"
    deadline = time.monotonic() + 90
    status = None
    while time.monotonic() < deadline:
        try:
            status, _ = _http(url + "/", timeout=5)
            if status == 200:
                break
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(2)
    assert status == 200, f"dashboard: {status}; last log lines: {stack.service_log_tail('optuna-dashboard')}"
    status, body = _http(url + "/api/studies", timeout=20)
    assert status == 200 and STUDY.encode() in body, body[:300]
    (cid,) = stack.containers("optuna-dashboard")
    uids, top = _process_uids(cid)
    assert uids and "0" not in uids, top


def test_no_password_on_any_command_line(stack):
    # With postgres, mlflow (and its web workers) and the dashboard up, no process on the host shows the
    # database password in its command line (containers' processes are host processes).
    running = {svc: stack.containers(svc) for svc in ("postgres", "mlflow", "optuna-dashboard")}
    assert all(running.values()), running
    ps = subprocess.run(["ps", "-eo", "pid,args", "--no-headers"], capture_output=True, text=True, check=True)
    leaks = [line for line in ps.stdout.splitlines() if stack.env["POSTGRES_PASSWORD"] in line]
    assert not leaks, leaks
    assert "mlflow" in ps.stdout and "optuna_dashboard" in ps.stdout


def test_down_v_leaves_nothing(stack):
    proc = stack.down()
    assert proc.returncode == 0, proc.stderr[-2000:]
    label = f"label=com.docker.compose.project={stack.project}"
    left = {
        "containers": stack.containers(all_=True),
        "networks": subprocess.run(
            ["docker", "network", "ls", "-q", "--filter", label], capture_output=True, text=True
        ).stdout.split(),
        "volumes": subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", label], capture_output=True, text=True
        ).stdout.split(),
    }
    nets = subprocess.run(
        ["docker", "network", "ls", "--format", "{{.Name}}"], capture_output=True, text=True
    ).stdout.split()
    vols = subprocess.run(
        ["docker", "volume", "ls", "--format", "{{.Name}}"], capture_output=True, text=True
    ).stdout.split()
    left["networks"] += [n for n in nets if n.startswith(stack.project)]
    left["volumes"] += [v for v in vols if v.startswith(stack.project)]
    assert not any(left.values()), left
