"""MLflow tracking for studies: one experiment per study, one parent run, one child run per trial.

Written against :class:`mlflow.MlflowClient` with explicit run ids rather than the
fluent API, whose "active run" is process-global state: workers in other
processes nest their trial runs under the study's parent through the
``mlflow.parentRunId`` tag. Per-epoch metrics are logged with ``step=epoch``,
one batch call per epoch.

With no tracking URI, everything goes under ``mlruns/``: SQLite metadata in
``mlruns/mlflow.db`` and artifacts in ``mlruns/artifacts``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hvit_sweeps import interrupt
from hvit_sweeps.config import TrainConfig, flatten_config, max_stages
from hvit_sweeps.errors import HvitError, SweepFault, first_line
from hvit_sweeps.keys import (
    CHECKPOINT_ARTIFACT,
    CHECKPOINT_DIR,
    HP_PREFIX,
    PLOTS_DIR,
    ROLE_STUDY,
    ROLE_TRIAL,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL_NUMBER,
    TAG_TRIAL_STATE,
    TRACKING_DB,
    TRIAL_RUN_ENDS,
    plot_artifact,
    role_filter,
    trial_run_name,
)

__all__ = ["TrackedRun", "Tracker", "default_tracking_uri", "run_url", "runs_table_url"]

_PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value's length
_TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def default_tracking_uri(root: Path) -> str:
    return f"sqlite:///{(root / TRACKING_DB).resolve()}"


def runs_table_url(base_url: str, experiment_id: str, *, order_by: str | None = None, ascending: bool = False) -> str:
    """A study's trial runs in the classic runs table, sorted by the metric ``order_by``.

    MLflow 3.17's UI otherwise opens its GenAI view, and nests the trials under a
    collapsed parent run; the filter lists them flat, ready to compare.
    """
    query = {"workflowType": "machine_learning", "searchFilter": role_filter(ROLE_TRIAL)}
    if order_by is not None:
        query |= {"orderByKey": f"metrics.`{order_by}`", "orderByAsc": str(ascending).lower()}
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def run_url(base_url: str, experiment_id: str, run_id: str, *, artifact: str | None = None) -> str:
    """A run's page in the classic view, opened on ``artifact`` if given."""
    path = f"/artifacts/{artifact}" if artifact else ""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{path}?workflowType=machine_learning"


@dataclass(frozen=True)
class TrackedRun:
    """What hvit-sweep reads of an MLflow run, so that no other module handles MLflow's own ``Run``."""

    run_id: str
    experiment_id: str
    name: str
    status: str  # RUNNING, FINISHED, KILLED or FAILED
    start_time: int | None  # ms since the epoch
    end_time: int | None
    artifact_uri: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each

    @classmethod
    def of(cls, run: Run) -> TrackedRun:
        info, data = run.info, run.data
        return cls(
            run_id=info.run_id,
            experiment_id=info.experiment_id,
            name=info.run_name or "",
            status=info.status,
            start_time=info.start_time,
            end_time=info.end_time,
            artifact_uri=info.artifact_uri or "",
            tags=dict(data.tags),
            params=dict(data.params),
            metrics=dict(data.metrics),
        )


class Tracker:
    """A study's MLflow side, and the one module that talks to MLflow's client. Every method takes run ids explicitly.

    An MLflow error (a run that is not there, a registry that refuses) reaches the caller as
    MLflow's ``MlflowException``, unless a method says otherwise.
    """

    def __init__(self, tracking_uri: str | None, *, root: Path) -> None:
        # MLflow logs schema migrations at INFO on first use; our display says what matters.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # MLflow's tqdm bars would be drawn over our live view and into `best`'s output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # Its "View run ... at" lines too (HTTP stores); our own links say where to look.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.local = tracking_uri is None
        self.root = root
        self.uri = tracking_uri or default_tracking_uri(root)
        scheme = self.uri.split(":", 1)[0].split("+", 1)[0]
        if scheme not in _TRACKING_SCHEMES:
            raise HvitError(
                f"--tracking-uri {self.uri}: unknown scheme {scheme!r}; use http(s)://HOST:PORT, sqlite:///FILE, "
                "postgresql://... or omit it for the embedded store"
            )
        if self.uri.startswith(("http://", "https://")):
            _OutageNotice.install(self.uri)

    @cached_property
    def client(self) -> MlflowClient:
        """The MLflow client, made on first use: an embedded store is created then, not when a command starts.

        So a command that refuses its input before it tracks anything leaves no `mlflow.db` behind.
        """
        if self.local:
            self.root.mkdir(parents=True, exist_ok=True)
        with self._init_lock():  # a new SQLite store is created and migrated right here
            return MlflowClient(tracking_uri=self.uri)

    # -- setup -------------------------------------------------------------------------

    def check_reachable(self) -> None:
        """Fail before any training if the server or database cannot be reached."""
        if self.uri.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=10) as response:
                    response.read()
            except (urllib.error.URLError, OSError) as err:
                raise HvitError(
                    f"--tracking-uri {self.uri}: MLflow server not reachable ({getattr(err, 'reason', err)}): "
                    "start it (docker compose up -d mlflow) or fix the URL"
                ) from None
            return
        try:
            self.client.search_experiments(max_results=1)
        except Exception as err:  # noqa: BLE001 - any store error means "cannot use this URI"
            raise HvitError(f"--tracking-uri {self.uri}: cannot open the tracking store ({first_line(err)})") from None

    def _init_lock(self) -> contextlib.AbstractContextManager[Any]:
        """Two processes that create one embedded store at once would both run its migrations.

        MLflow's SQLite migration is not safe against that ("No such constraint"), so
        the first use of a local store is serialised with a lock file beside it.
        """
        if not self.local:
            return contextlib.nullcontext()
        return _file_lock(self.root / ".mlflow-init.lock")

    def reachable(self) -> bool:
        """Whether the tracking server answers now (an embedded store always does)."""
        if not self.uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=5) as response:
                response.read()
        except OSError:
            return False
        return True

    def unavailable(self) -> SweepFault:
        """The fault a sweep ends with when the tracking server stopped answering; `run` adds how to continue."""
        return SweepFault(
            f"the MLflow server at {self.uri} stopped answering: finished trials are saved; start it again"
        )

    def experiment_id(self, name: str) -> str:
        """The study's experiment, created on first use; safe when workers race."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        artifact_location = (self.root / "artifacts").resolve().as_uri() if self.local else None
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def parent_run(self, experiment_id: str, study_name: str, *, tags: dict[str, str]) -> tuple[str, bool]:
        """Find or create the study's one parent run; returns (run id, created).

        Two workers may both create one; after creating, each re-reads and keeps the
        oldest, deleting its own if it lost, so every trial nests under the same run.
        """
        existing = self._parent_runs(experiment_id, study_name)
        if existing:
            return existing[0], False
        run = self.client.create_run(
            experiment_id,
            run_name=f"study-{study_name}",
            tags={TAG_ROLE: ROLE_STUDY, TAG_STUDY: study_name, **tags},
        )
        winner = self._parent_runs(experiment_id, study_name)[0]
        if winner != run.info.run_id:
            self.client.delete_run(run.info.run_id)
        return winner, winner == run.info.run_id

    def _parent_runs(self, experiment_id: str, study_name: str) -> list[str]:
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"{role_filter(ROLE_STUDY)} AND tags.`{TAG_STUDY}` = '{study_name}'",
            order_by=["attributes.start_time ASC"],
        )
        ordered = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        return [r.info.run_id for r in ordered]

    def study_runs(self, experiment_id: str | None = None) -> list[TrackedRun]:
        """The parent runs of the studies in an experiment (one per study name), or in every active experiment."""
        ids = [experiment_id] if experiment_id else [e.experiment_id for e in self.client.search_experiments()]
        runs = (self.client.search_runs([one], filter_string=role_filter(ROLE_STUDY)) for one in ids)
        return [TrackedRun.of(run) for page in runs for run in page]

    def trial_runs(self, experiment_id: str, study_name: str) -> list[TrackedRun]:
        """Every trial run of the study, in as few searches as pages."""
        query = f"{role_filter(ROLE_TRIAL)} AND tags.`{TAG_STUDY}` = '{study_name}'"
        runs: list[TrackedRun] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], filter_string=query, max_results=5000, page_token=token)
            runs += [TrackedRun.of(run) for run in page]
            token = page.token
            if not token:
                return runs

    def run(self, run_id: str) -> TrackedRun:
        """A run by id; MlflowException when the store has none."""
        return TrackedRun.of(self.client.get_run(run_id))

    def run_status(self, run_id: str) -> str:
        """RUNNING, FINISHED, KILLED or FAILED."""
        return self.run(run_id).status

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def experiment_tag(self, experiment_id: str, key: str) -> str | None:
        return self.client.get_experiment(experiment_id).tags.get(key)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(experiment_id, key, value)

    def create_child_run(self, experiment_id: str, parent_run_id: str, *, name: str, tags: dict[str, str]) -> str:
        """A new run nested under ``parent_run_id`` (a trial, replicate or final run); returns its id."""
        run = self.client.create_run(experiment_id, run_name=name, tags={MLFLOW_PARENT_RUN_ID: parent_run_id, **tags})
        return run.info.run_id

    # -- trials ------------------------------------------------------------------------

    def start_trial(
        self,
        *,
        experiment_id: str,
        parent_run_id: str,
        study_name: str,
        trial_number: int,
        config: TrainConfig,
        sampled: dict[str, Any],
        tags: dict[str, str],
    ) -> str:
        """Create the trial's child run and log its flattened config as params."""
        run_id = self.create_child_run(
            experiment_id,
            parent_run_id,
            name=trial_run_name(trial_number),
            tags={
                TAG_ROLE: ROLE_TRIAL,
                TAG_STUDY: study_name,
                TAG_TRIAL_NUMBER: str(trial_number),
                TAG_TRIAL_STATE: "RUNNING",
                **tags,
            },
        )
        # Every trial of a study gets the same keys: stages it lacks are logged as 0.
        stages = max_stages(config.model.image_size, config.model.patch_size)
        params = {**flatten_config(config, stages=stages), **{f"{HP_PREFIX}{k}": v for k, v in sampled.items()}}
        self.log_params(run_id, params)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params in one batch call; lists and dicts as JSON, every value cut to MLflow's limit."""
        self.client.log_batch(run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int) -> None:
        """Log one epoch's metrics in one synchronous batch call.

        MLflow's asynchronous mode was measured slower here: its queue added about
        1 s per trial (benchmarks/RESULTS.md, tracking overhead), while one
        synchronous batch per epoch costs a few milliseconds.
        """
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_summary(self, run_id: str, values: Mapping[str, float], *, charted: Collection[str], step: int) -> None:
        """A trial's one-point figures: those in ``charted`` as metrics, the rest as params of the same name.

        Every metric gets a chart on the run page, before the per-epoch curves; a one-point
        chart says nothing. The table's sort and columns need the objectives, best/val_acc1
        and the model's size as metrics; the others read as well in the params table.
        """
        self.log_metrics(run_id, {k: v for k, v in values.items() if k in charted}, step=step)
        self.log_params(run_id, {k: f"{v:.6g}" for k, v in values.items() if k not in charted})

    def end_run(self, run_id: str, status: str, *, tags: dict[str, str] | None = None) -> None:
        """Tag and close a run: FINISHED, KILLED (pruned or stopped) or FAILED."""
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])
        self.client.set_terminated(run_id, status=status)

    def end_trial(self, run_id: str, number: int, state: str, *, tags: dict[str, str] | None = None) -> None:
        """Close a trial run as TRIAL_RUN_ENDS says for ``state`` (COMPLETE, PRUNED, FAIL, INTERRUPTED)."""
        status, _ = TRIAL_RUN_ENDS[state]
        self.client.update_run(run_id, name=trial_run_name(number, state))
        self.end_run(run_id, status, tags={**(tags or {}), TAG_TRIAL_STATE: state})

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_dir)

    def log_dict(self, run_id: str, data: dict[str, Any], artifact_file: str) -> None:
        self.client.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        """Upload every file of ``local_dir`` to the run under ``artifact_path``."""
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def has_artifacts(self, run_id: str, artifact_path: str) -> bool:
        return bool(self.client.list_artifacts(run_id, artifact_path))

    def download_artifacts(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        """Fetch a run's artifact file or folder into ``dst``; MlflowException or OSError when it has none."""
        return Path(self.client.download_artifacts(run_id, artifact_path, str(dst)))

    def delete_artifacts(self, run_id: str, artifact_path: str) -> None:
        """Drop a run's artifacts under ``artifact_path``; a store that cannot delete keeps them."""
        artifact_uri = self.run(run_id).artifact_uri
        try:
            get_artifact_repository(artifact_uri, tracking_uri=self.uri).delete_artifacts(artifact_path)
        except (MlflowException, OSError, NotImplementedError):
            pass  # only disk is lost

    def delete_checkpoint(self, run_id: str) -> None:
        """Drop a trial's checkpoint artifact (for keep_top_k)."""
        self.delete_artifacts(run_id, CHECKPOINT_DIR)

    def download_checkpoint(self, run_id: str, dst: Path) -> Path:
        """Fetch a trial's checkpoint into ``dst`` and return its path."""
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT, dst_path=str(dst), tracking_uri=self.uri
            )
        except (MlflowException, OSError) as err:
            raise HvitError(
                f"run {run_id} has no checkpoint artifact ({first_line(err, limit=160)}): "
                "it was pruned by keep_top_k or its artifacts were deleted"
            ) from None
        return Path(local)

    def log_plots(self, run_id: str, figures: dict[str, Any]) -> list[str]:
        """Save matplotlib figures as PNG artifacts under plots/."""
        import matplotlib.pyplot as plt

        names = []
        with tempfile.TemporaryDirectory() as tmp:
            for name, figure in figures.items():
                path = Path(tmp) / plot_artifact(name)  # the local name is the artifact's name
                path.parent.mkdir(exist_ok=True)
                figure.savefig(path, dpi=120, bbox_inches="tight")
                plt.close(figure)
                self.client.log_artifact(run_id, str(path), PLOTS_DIR)
                names.append(path.name)
        return names

    # -- the model registry --------------------------------------------------------------

    def create_registered_model(self, name: str, *, description: str) -> None:
        """MlflowException with error code RESOURCE_ALREADY_EXISTS when the registry has ``name``."""
        self.client.create_registered_model(name, description=description)

    def register_model_version(
        self, name: str, source: str, *, run_id: str, tags: dict[str, str], description: str, alias: str
    ) -> str:
        """A new version of registered model ``name`` from ``source``, with ``alias`` moved to it; returns the version."""
        version = self.client.create_model_version(name, source, run_id=run_id, tags=tags, description=description)
        self.client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)


class _OutageNotice(logging.Filter):
    """One line when MLflow starts retrying a request to the server, and one when the server answers again.

    MLflow retries a refused or failed request for about four minutes by default, through urllib3,
    whose log goes to a NullHandler: without this a sweep would stall without a word. urllib3 logs
    each answered request at DEBUG, which is how the return is seen. A filter on urllib3's logger
    sees every record; the DEBUG ones exist only for it and stop here, unless logging was already
    set to show them.
    """

    _LOGGER = "urllib3.connectionpool"
    _ANSWERED = re.compile(r'HTTP/[0-9.]+" [1-4][0-9][0-9] ')  # '... "POST /api/... HTTP/1.1" 200 2'

    def __init__(self, uri: str, *, pass_debug: bool) -> None:
        super().__init__()
        self.uri = uri
        self.pass_debug = pass_debug
        self.since: float | None = None

    @classmethod
    def install(cls, uri: str) -> None:
        logger = logging.getLogger(cls._LOGGER)
        if not any(isinstance(f, cls) for f in logger.filters):  # one per process, whichever Tracker is first
            logger.addFilter(cls(uri, pass_debug=logger.isEnabledFor(logging.DEBUG)))
            logger.setLevel(logging.DEBUG)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Retrying"):
            if self.since is None:
                self.since = time.monotonic()
                _say(f"tracking: the MLflow server at {self.uri} is not answering; retrying while training waits")
            # From now a stop (a scheduler's SIGTERM) raises at once, out of MLflow's retries; a request made
            # after a stop (closing the runs) gives up at its first retry instead of waiting the server out.
            interrupt.set_waiting_on_server(True)
        elif self.since is not None and self._ANSWERED.search(message):
            _say(f"tracking: the MLflow server answers again, after {time.monotonic() - self.since:.0f} s")
            self.since = None
            interrupt.set_waiting_on_server(False)
        return self.pass_debug or record.levelno > logging.DEBUG


def _say(line: str) -> None:
    # stderr: a live rich display redirects it above itself; a worker's goes to its log.
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:_PARAM_VALUE_LIMIT]
