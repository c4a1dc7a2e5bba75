"""The library calls hvit_sweeps makes for sweeps and tracking, without torch or hvit_sweeps.

Checks a wheel set on an interpreter that has no torch (this machine has none for Python 3.12):

    /root/.pyenv/versions/3.12.1/bin/python3.12 -m venv /tmp/venv312
    /tmp/venv312/bin/python -m pip install numpy==2.5.2 pandas matplotlib "typer<0.27" rich click pyyaml tqdm \
        packaging requests protobuf cloudpickle anyio markupsafe h11 zipp annotated-doc "typing-extensions<4.16"
    /tmp/venv312/bin/python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site-test .whl/*.whl                                   # as the device does
    PYTHONPATH=/tmp/site-test /tmp/venv312/bin/python benchmarks/gpu/smoke_libs.py

MlflowClient on a SQLite store (experiment, parent and child runs, params, metrics, tags,
artifacts, download, delete, search), Optuna on a journal file (TPE, Hyperband, load_study),
on SQLite RDB storage with heartbeats, CMA-ES and grid samplers, Optuna's matplotlib plots,
and a strict pydantic model. Prints one JSON line ending in "ok": true.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def check_mlflow(tmp: Path) -> dict[str, str]:
    import mlflow
    import mlflow.version
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.store.artifact.artifact_repository_registry import (
        get_artifact_repository,
    )

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments(max_results=1)
    experiment = client.create_experiment("e", artifact_location=(tmp / "artifacts").resolve().as_uri())
    parent = client.create_run(experiment, run_name="study", tags={"hvit.role": "study", "hvit.study": "s"})
    found = client.search_runs(
        [experiment],
        filter_string="tags.`hvit.role` = 'study' AND tags.`hvit.study` = 's'",
        order_by=["attributes.start_time ASC"],
    )
    assert [r.info.run_id for r in found] == [parent.info.run_id]
    run = client.create_run(experiment, run_name="trial-0", tags={"mlflow.parentRunId": parent.info.run_id}).info.run_id
    client.log_batch(run, params=[Param("model.depths", "[2, 2]"), Param("optim.lr", "0.001")])
    now = int(time.time() * 1000)
    client.log_batch(run, metrics=[Metric("val_acc1", 0.5, now, 1), Metric("train_loss", 1.0, now, 1)])
    checkpoint = tmp / "best.pth"
    checkpoint.write_bytes(b"x" * 1000)
    client.log_artifact(run, str(checkpoint), "checkpoint")
    client.log_text(run, json.dumps({"a": 1}), "config.json")
    client.log_batch(run, tags=[RunTag("optuna.trial_state", "COMPLETE")])
    client.set_terminated(run, status="FINISHED")
    local = mlflow.artifacts.download_artifacts(
        run_id=run, artifact_path="checkpoint/best.pth", dst_path=str(tmp / "download"), tracking_uri=uri
    )
    assert Path(local).read_bytes() == checkpoint.read_bytes()
    get_artifact_repository(client.get_run(run).info.artifact_uri, tracking_uri=uri).delete_artifacts("checkpoint")
    assert client.get_run(run).data.metrics["val_acc1"] == 0.5
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    plt.plot([1, 2])
    figure.savefig(tmp / "plot.png")
    client.log_artifact(parent.info.run_id, str(tmp / "plot.png"), "plots")
    client.set_terminated(parent.info.run_id, status="FINISHED")
    return {"mlflow": mlflow.__version__, "mlflow_skinny_only": str(mlflow.version.IS_MLFLOW_SKINNY)}


def check_optuna(tmp: Path) -> dict[str, str]:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend
    from optuna.visualization import matplotlib as vis

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp / "optuna.journal")))
    study = optuna.create_study(
        study_name="s",
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=4, reduction_factor=3),
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        depth = trial.suggest_int("depth", 1, 4)
        trial.suggest_categorical("width", [32, 64])
        for epoch in range(4):
            trial.report(lr * epoch + depth, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return lr + depth

    study.optimize(objective, n_trials=6)
    study.set_user_attr("hvit.target_trials", 6)
    assert len(optuna.load_study(study_name="s", storage=storage).get_trials(deepcopy=False)) == 6
    rdb = optuna.storages.RDBStorage(
        f"sqlite:///{tmp / 'optuna.db'}",
        heartbeat_interval=60,
        grace_period=180,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
        engine_kwargs={"pool_pre_ping": True},
    )
    optuna.create_study(study_name="r", storage=rdb).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    optuna.create_study(sampler=optuna.samplers.CmaEsSampler(seed=0)).optimize(
        lambda t: t.suggest_float("x", -1, 1) ** 2 + t.suggest_float("y", -1, 1) ** 2, n_trials=4
    )
    optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1, 2]})).optimize(
        lambda t: t.suggest_categorical("x", [1, 2]), n_trials=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vis.plot_optimization_history(study)
        vis.plot_intermediate_values(study)
    return {"optuna": optuna.__version__}


def check_pydantic() -> dict[str, str]:
    import pydantic

    class Runtime(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        epochs: int = pydantic.Field(20, ge=1)

    assert Runtime(epochs=2).epochs == 2
    try:
        Runtime(epoch=2)
    except pydantic.ValidationError:
        return {"pydantic": pydantic.__version__}
    raise AssertionError("extra='forbid' did not forbid")


def main() -> int:
    import alembic
    import sqlalchemy

    with tempfile.TemporaryDirectory(prefix="smoke-libs-") as tmp:
        result = {
            "python": sys.version.split()[0],
            **check_mlflow(Path(tmp)),
            **check_optuna(Path(tmp)),
            **check_pydantic(),
            "sqlalchemy": sqlalchemy.__version__,
            "alembic": alembic.__version__,
            "ok": True,
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
