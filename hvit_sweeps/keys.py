"""The names one module writes and another reads: Optuna attributes, MLflow tags, params and artifacts.

A sweep leaves its state in two stores. Optuna's storage holds the study and its
trials, with our facts in user attributes; MLflow holds one parent run per study
and one child run per trial, with our facts in tags, params and artifacts. The
writer (:mod:`hvit_sweeps.sweep`, :mod:`hvit_sweeps.tracking`) and the readers
(the console, the CLI, the export, the tests) name each key here, so a renamed
key cannot leave a reader behind.
"""

from __future__ import annotations

__all__ = [
    "ATTR_EPOCH",
    "ATTR_EPOCHS",
    "ATTR_CONFIRMATION",
    "ATTR_COST",
    "ATTR_DEVICE",
    "ATTR_EXPERIMENT",
    "ATTR_FINGERPRINT",
    "ATTR_HEARTBEAT",
    "ATTR_HOST",
    "ATTR_PARENT",
    "ATTR_PID",
    "ATTR_RUN_ID",
    "ATTR_SURPLUS",
    "ATTR_TARGET",
    "CHECKPOINT_ARTIFACT",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
    "FAILURE_FILE",
    "JOURNAL_FILE",
    "LOCAL_UI",
    "LOCAL_UI_PORT",
    "PARAM_DATASET",
    "PARAM_MAX_EPOCHS",
    "PARAM_OBJECTIVES",
    "PARAM_PRUNER",
    "PARAM_SAMPLER",
    "PARAM_SAMPLER_SEED",
    "PARAM_STUDY_NAME",
    "PLOTS_DIR",
    "PLOT_HISTORY",
    "PLOT_INTERMEDIATE",
    "ROLE_FINAL",
    "ROLE_STUDY",
    "ROLE_TRIAL",
    "STUDY_FILE_DIR",
    "TAG_CHECKPOINT",
    "TAG_COST_BASIS",
    "TAG_DATASET",
    "TAG_DATASET_HASH",
    "TAG_FAILURE",
    "TAG_HOST",
    "TAG_NOTES",
    "TAG_PRUNED_AT",
    "TAG_IMPORTANCE_NOTE",
    "TAG_RANK",
    "TAG_REGISTERED",
    "TAG_RETRY_OF",
    "TAG_SOURCE_RUN",
    "TAG_SOURCE_TRIAL",
    "TAG_ROLE",
    "TAG_STOP_REASON",
    "TAG_STUDY",
    "TAG_STUDY_FILE",
    "TAG_TRIAL_NUMBER",
    "TAG_TRAINED_ON",
    "TAG_TRIAL_STATE",
    "TAG_VISUALS",
    "TRACKING_DB",
    "TRIAL_RUN_ENDS",
    "HP_NOT_APPLICABLE",
    "HP_PREFIX",
    "VISUALS_DIR",
    "best_metric",
    "dataset_size_param",
    "rank_tag_value",
    "trial_run_name",
    "importance_metric",
    "model_metric",
    "study_metric",
    "plot_artifact",
    "role_filter",
    "ui_base",
]

# -- Optuna study user attributes: shared by every worker of a study ---------------------

ATTR_TARGET = "hvit.target_trials"
ATTR_PARENT = "hvit.mlflow_parent_run_id"
ATTR_EXPERIMENT = "hvit.mlflow_experiment_id"
ATTR_FINGERPRINT = "hvit.definition"
ATTR_CONFIRMATION = "hvit.confirmation"  # the last `best --confirm` (hvit_sweeps.confirm)

# -- Optuna trial user attributes --------------------------------------------------------

ATTR_RUN_ID = "mlflow_run_id"  # the trial's MLflow child run
ATTR_HOST = "hvit.host"  # with ATTR_PID: a dead local worker is seen at once
ATTR_PID = "hvit.pid"
ATTR_HEARTBEAT = "hvit.heartbeat"  # time.time() of the last epoch: journal storages have no heartbeat
ATTR_EPOCH = "hvit.epoch"
ATTR_EPOCHS = "hvit.epochs"
ATTR_SURPLUS = "hvit.surplus"  # failed on purpose: asked for after the target was reached
ATTR_COST = "hvit.cost"  # the trial's measured cost figures (hvit_sweeps.cost), pruned trials included
ATTR_DEVICE = "hvit.device_type"  # cuda, cpu or mps: what the cost figures were measured on

# -- MLflow tags -------------------------------------------------------------------------

TAG_ROLE = "hvit.role"
ROLE_STUDY = "study"  # the study's one parent run
ROLE_TRIAL = "trial"
ROLE_FINAL = "final"  # a study's final model, retrained on train+val by `best --retrain`
TAG_SOURCE_TRIAL = "hvit.source_trial"
TAG_SOURCE_RUN = "hvit.source_run_id"
TAG_TRAINED_ON = "hvit.trained_on"
TAG_REGISTERED = "hvit.registered_model"
TAG_STUDY = "hvit.study"
TAG_STUDY_FILE = "hvit.study_file"
TAG_TRIAL_NUMBER = "optuna.trial_number"
TAG_TRIAL_STATE = "optuna.trial_state"
TAG_RETRY_OF = "optuna.retry_of"
TAG_PRUNED_AT = "optuna.pruned_at_epoch"
TAG_FAILURE = "hvit.failure_reason"
TAG_STOP_REASON = "hvit.stop_reason"
TAG_NOTES = "hvit.notes"
TAG_CHECKPOINT = "hvit.checkpoint"
TAG_DATASET = "hvit.dataset"
TAG_DATASET_HASH = "hvit.dataset_hash"
TAG_HOST = "hvit.host"
TAG_VISUALS = "hvit.visuals"  # logged, or why not
TAG_COST_BASIS = "hvit.cost_basis"  # how cost/device_seconds was counted on the run's device
TAG_IMPORTANCE_NOTE = "hvit.importance_note"  # on the parent run: how many trials the importances rest on
TAG_RANK = "hvit.rank"  # "000001" for the best trial: the saved view sorts by it (a tag: no chart, string order)

# How a trial's end shows in MLflow, by the TAG_TRIAL_STATE it gets: (run status, run-name suffix).
# A pruned trial ended as designed, so FINISHED like a complete one; its name says "pruned" in the
# table's first column. KILLED is kept for a stop from outside (Ctrl-C, SIGTERM), FAILED for errors.
TRIAL_RUN_ENDS: dict[str, tuple[str, str]] = {
    "COMPLETE": ("FINISHED", ""),
    "PRUNED": ("FINISHED", "pruned"),
    "FAIL": ("FAILED", "failed"),
    "INTERRUPTED": ("KILLED", "interrupted"),
}

# -- MLflow params and metrics -----------------------------------------------------------

# The study's definition, as params of its parent run (written by hvit_sweeps.sweep, read by the report).
PARAM_STUDY_NAME = "study.name"
PARAM_SAMPLER = "study.sampler"
PARAM_SAMPLER_SEED = "study.sampler_seed"
PARAM_PRUNER = "study.pruner"
PARAM_OBJECTIVES = "study.objectives"  # "val_acc1:maximize,params_m:minimize"
PARAM_MAX_EPOCHS = "study.max_epochs"
PARAM_DATASET = "study.dataset"


def dataset_size_param(split: str) -> str:
    """A run's param holding one split's image count: ``dataset.train_size``, ``dataset.val_size``, ..."""
    return f"dataset.{split}_size"


HP_PREFIX = "hp."  # a searched value under its Optuna name: hp.optim.lr, hp.stages.base_width
# The hp.* value of a parameter a trial did not sample (stages.depth_2 on a 2-stage trial): every
# trial logs every hp.* key, because MLflow's parallel coordinates drop a run that lacks an axis.
# 0 sorts below every real value (depths, widths and counts are at least 1, rates above 0) and
# matches the 0 that model.* params carry for a stage the model lacks.
HP_NOT_APPLICABLE = 0
VISUALS_DIR = "visuals"  # per-trial pictures: confusion matrix, per-class accuracy, ...


def trial_run_name(number: int, state: str = "RUNNING") -> str:
    """A trial run's name: ``trial-6``, or ``trial-6 pruned`` once it ended other than complete."""
    suffix = TRIAL_RUN_ENDS.get(state, ("", ""))[1]
    return f"trial-{number} {suffix}" if suffix else f"trial-{number}"


def rank_tag_value(rank: int) -> str:
    """Zero-padded, so that MLflow's string sort of a tag is the numeric order."""
    return f"{rank:06d}"


def best_metric(metric: str) -> str:
    """The trial-run metric holding an epoch metric's value at the best epoch.

    The ``best/`` prefix puts these one-point summaries in a chart section of their
    own in the MLflow UI, apart from the per-epoch curves.
    """
    return f"best/{metric}"


def model_metric(name: str) -> str:
    """A trial run's size figure: ``model/params_m``, ``model/flops_m``, ..."""
    return f"model/{name}"


def cost_metric(name: str) -> str:
    """A run's cost figure in MLflow: ``cost/device_seconds``, ``cost/latency_ms``, ..."""
    return f"cost/{name}"


def importance_metric(param: str) -> str:
    """A parent run's importance of one searched parameter: ``importance/optim.lr``."""
    return f"importance/{param}"


def study_metric(name: str) -> str:
    """A parent run's summary, logged at every finished trial: ``study/best_value``, ``study/complete``."""
    return f"study/{name}"


# -- MLflow artifacts --------------------------------------------------------------------

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "best.pth"  # the local file's name is the artifact's name
CHECKPOINT_ARTIFACT = f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}"
FAILURE_FILE = "failure.txt"  # a failed trial's traceback
STUDY_FILE_DIR = "study"  # the parent run's copy of the study file
PLOTS_DIR = "plots"
PLOT_HISTORY = "optimization_history"
PLOT_INTERMEDIATE = "intermediate_values"  # per-epoch values of each trial


def plot_artifact(name: str) -> str:
    """Where the parent run keeps the study plot ``name``."""
    return f"{PLOTS_DIR}/{name}.png"


def role_filter(role: str) -> str:
    """An MLflow search filter for the runs of one role."""
    return f"tags.`{TAG_ROLE}` = '{role}'"


# -- the embedded stores under --root ----------------------------------------------------

JOURNAL_FILE = "optuna.journal"
TRACKING_DB = "mlflow.db"
LOCAL_UI_PORT = 5000  # `hvit-sweep ui`'s default port
LOCAL_UI = f"http://127.0.0.1:{LOCAL_UI_PORT}"  # where `hvit-sweep ui` serves the embedded store


def ui_base(tracking_uri: str | None) -> str:
    """The MLflow UI's address: the tracking server's, or where `hvit-sweep ui` serves the embedded store."""
    return tracking_uri if tracking_uri and tracking_uri.startswith("http") else LOCAL_UI
