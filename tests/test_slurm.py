"""slurm/hvit-sweep.sbatch on a real one-node Slurm: munged, slurmctld and slurmd started here, as root.

Debian's slurm-wlm and munge (`.ci/run` installs them). The cluster lives in a temporary
folder with its own munge key and socket, its own ports and state, so it touches nothing
of the machine's; it is stopped by the pids in its pid files. Without those packages, or
not as root, the test is skipped, and fails under CI=true.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from conftest import REPO, clean_env, tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState

from hvit_sweeps.keys import ATTR_EPOCH, ATTR_PID, ATTR_RUN_ID, TAG_FAILURE
from hvit_sweeps.sweep.resume import TAG_RESUME

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SBATCH_SCRIPT = REPO / "slurm" / "hvit-sweep.sbatch"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
# Slurm holds a requeued job back for AuthInfo's cred_expire (default 120 s); 10 s keeps the test short.
CRED_EXPIRE_S = 10


@dataclass
class Slurm:
    """A running one-node cluster: its folder and the environment its client commands need."""

    root: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: {proc.stderr.strip()}\n{self.log_tail()}")
        return proc

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slurm_conf(root: Path, host: str) -> str:
    # What notes/slurm-here.md found enough for one node run as root, with every path in `root`.
    return f"""ClusterName=hvittest
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire={CRED_EXPIRE_S}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=10
MinJobAge=600
NodeName={host} CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _stop(root: Path) -> None:
    for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
        path = root / pid_file
        try:
            os.kill(int(path.read_text().split()[0]), signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            continue


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd for this host, in a temporary folder, for the session."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    reason = None
    if missing:
        reason = f"Slurm is not installed (missing {', '.join(missing)}): apt-get install slurm-wlm munge"
    elif os.geteuid() != 0:
        reason = "the one-node Slurm runs slurmd as root; run the test as root"
    if reason:
        (pytest.fail if in_ci else pytest.skip)(reason)

    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o755)
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o700)  # munged refuses a key or socket folder others can write to
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(128))
    key.chmod(0o600)
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, socket.gethostname().split(".")[0]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Slurm(root, env)
    m = root / "munge"
    munged = [
        "munged",
        "--force",
        f"--key-file={key}",
        f"--socket={m}/munge.sock",
        f"--pid-file={m}/munged.pid",
        f"--log-file={m}/munged.log",
        f"--seed-file={m}/munged.seed",
    ]
    try:
        for command in (munged, ["slurmctld", "-f", str(conf)], ["slurmd", "-f", str(conf)]):
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"{command[0]}: {proc.stderr.strip()}\n{cluster.log_tail()}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = cluster("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        assert state == "idle", f"the node is {state!r}, not idle\n{cluster.log_tail()}"
        yield cluster
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=60)
        _stop(root)


# ------------------------------------------------------------------ helpers


def _task_pids(folder: Path, job: str) -> dict[int, int]:
    """Array task -> pid of its current worker, from the line the batch script prints at each start."""
    pids = {}
    for log in folder.glob(f"hvit-sweep-{job}_*.out"):
        task = int(log.stem.rsplit("_", 1)[1])
        starts = re.findall(r"^hvit-sweep task \d+ .* pid (\d+)", log.read_text(), re.MULTILINE)
        if starts:
            pids[task] = int(starts[-1])
    return pids


def _task_state(slurm: Slurm, job: str, task: int) -> str:
    out = slurm("squeue", "-h", "-j", f"{job}_{task}", "-o", "%T", check=False).stdout.strip()
    return out or "GONE"


def _running_trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _wait(condition: Callable[[], object], what: str, slurm: Slurm, folder: Path, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(folder.glob("hvit-sweep-*.out")))
    queue = slurm("squeue", "-o", "%i %T %r", check=False).stdout
    pytest.fail(f"timed out waiting for {what}\n{queue}{logs}\n{slurm.log_tail()}")


def _story(trials: list[optuna.trial.FrozenTrial], folder: Path) -> str:
    """What each trial and task did, for a failure message."""
    rows = [f"{t.number} {t.state.name} {t.params} {t.system_attrs} {t.user_attrs.get(ATTR_PID)}" for t in trials]
    logs = [f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(folder.glob("hvit-sweep-*.out"))]
    return "\n".join(rows + logs)


# -------------------------------------------------------------------- the test


def test_sbatch_array_survives_a_cancel_and_a_requeue(
    slurm: Slurm, make_database: Callable[[], str], mlflow_server: str, tmp_path: Path
) -> None:
    # 3 array tasks share a 6-trial study on PostgreSQL and a real MLflow server. One task is hard-cancelled
    # mid-trial (SIGKILL, as a lost node), one is requeued mid-trial (SIGTERM, then it starts again): the total
    # is exactly 6 finished trials, no param set twice, no run left RUNNING, the killed trial is run again
    # with its params, and the requeued task ran twice.
    started = time.monotonic()
    name = f"slurm-{secrets.token_hex(3)}"
    (tmp_path / "studies").symlink_to(REPO / "studies")
    (tmp_path / "sweep.toml").write_text(tiny_study(name, trials=6, max_epochs=6, train_samples=640))
    storage = make_database()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **clean_env(),
        "SLURM_CONF": slurm.env["SLURM_CONF"],
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "HVIT_STUDY": "sweep.toml",
        "HVIT_STORAGE": storage,
        "MLFLOW_TRACKING_URI": mlflow_server,
    }
    submit = subprocess.run(
        # One core per task (3 tasks share this host's cores: OverSubscribe=FORCE); worker heartbeat 1 s.
        ["sbatch", "--parsable", "--array=0-2", "--cpus-per-task=1", f"--chdir={tmp_path}", str(SBATCH_SCRIPT)]
        + ["--heartbeat", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]

    def victims() -> dict[int, int] | None:
        """Two tasks, each with a trial past its first epoch: task -> trial number."""
        by_pid = {pid: task for task, pid in _task_pids(tmp_path, job).items()}
        mid = {}
        for trial in _running_trials(storage, name):
            task = by_pid.get(trial.user_attrs.get(ATTR_PID, -1))
            if task is not None and trial.user_attrs.get(ATTR_EPOCH, 0) >= 1:
                mid[task] = trial.number
        return mid if len(mid) >= 2 else None

    mid = _wait(victims, "two tasks mid-trial", slurm, tmp_path, timeout=240)
    assert isinstance(mid, dict)
    cancelled, requeued = sorted(mid)[:2]
    old_pid = _task_pids(tmp_path, job)[requeued]
    slurm("scancel", "--batch", "--signal=KILL", f"{job}_{cancelled}")  # SIGKILL to the worker itself
    slurm("scontrol", "requeue", f"{job}_{requeued}")

    _wait(
        lambda: _task_pids(tmp_path, job).get(requeued, old_pid) != old_pid,
        "the requeued task to start again",
        slurm,
        tmp_path,
        timeout=120,
    )
    _wait(
        lambda: all(_task_state(slurm, job, t) in ("GONE", "COMPLETED") for t in range(3)),
        "every task to end",
        slurm,
        tmp_path,
        timeout=400,
    )
    wall = time.monotonic() - started

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6, [(t.number, t.state.name) for t in trials]
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == 6, params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    by_number = {t.number: t for t in trials}
    killed, stopped = by_number[mid[cancelled]], by_number[mid[requeued]]
    assert killed.state == TrialState.FAIL and stopped.state == TrialState.FAIL
    # The hard-killed trial: failed after 3 missed heartbeats and run again with its params.
    assert tuple(sorted(killed.params.items())) in params, _story(trials, tmp_path)

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    stopped_tags = client.get_run(stopped.user_attrs[ATTR_RUN_ID]).data.tags
    assert "interrupted" in stopped_tags[TAG_FAILURE], stopped_tags
    if "queued to run again" in stopped_tags[TAG_FAILURE]:
        # A SIGTERM'd trial queued again with its params (the sweep's retry of stopped trials).
        assert tuple(sorted(stopped.params.items())) in params
    assert "stale" in client.get_run(killed.user_attrs[ATTR_RUN_ID]).data.tags[TAG_FAILURE]
    # Its retry continued from the killed trial's last epoch, not from epoch 0 (hvit_sweeps/sweep/resume.py).
    (retry,) = [t for t in complete if t.params == killed.params]
    resume_line = client.get_run(retry.user_attrs[ATTR_RUN_ID]).data.tags[TAG_RESUME]
    assert resume_line.startswith(f"retry of trial {killed.number} resumes at epoch "), resume_line

    restarts = slurm("scontrol", "show", "job", f"{job}_{requeued}").stdout
    assert "Restarts=1" in restarts, restarts
    requeued_log = (tmp_path / f"hvit-sweep-{job}_{requeued}.out").read_text()
    assert len(re.findall(r"^hvit-sweep task ", requeued_log, re.MULTILINE)) == 2, requeued_log
    print(f"\n[slurm] 3-task array, 6 trials, one cancel and one requeue: {wall:.0f} s wall", file=sys.stderr)
