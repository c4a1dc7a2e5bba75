"""The saved view in a real browser, on a study whose stage count varies from trial to trial."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium import Chromium, have_chromium
from conftest import clean_env, free_port, hvit, ok
from mlflow import MlflowClient

from hvit_sweeps.keys import HP_PREFIX, ROLE_TRIAL, TAG_TRIAL_STATE, role_filter
from hvit_sweeps.mlflow_view import read_study_view, view_key
from hvit_sweeps.tracking import Tracker, default_tracking_uri

# 1 to 3 stages, a depth per stage: random sampler seed 3 draws 2, 2, 1 and 1 stages.
STAGES_STUDY = """
name = "stages-vary"
trials = 4
max_epochs = 1
[objective]
metric = "val_acc1"
[sampler]
type = "random"
seed = 3
[pruner]
type = "none"
[fixed]
"data.dataset" = "synthetic"
"data.max_train_samples" = 128
"data.max_eval_samples" = 64
"data.batch_size" = 64
"data.num_workers" = 0
"runtime.amp" = false
"model.patch_size" = 4
[stages]
num_stages = { type = "int", low = 1, high = 3 }
base_width = 16
width_mult = 2.0
head_dim = 16
depth = { type = "int", low = 1, high = 2 }
"""

# The rows the parallel-coordinates card hands its plot (after MLflow drops every run that lacks
# an axis): read from the React props of the plot's element, since its lines are drawn on a canvas.
PARALLEL_ROWS = """(() => {
  const el = document.querySelector('#wrapper.parcoords');
  if (!el) return null;
  let fiber = el[Object.keys(el).find(k => k.startsWith('__reactFiber$'))];
  while (fiber && !(fiber.memoizedProps && Array.isArray(fiber.memoizedProps.data))) fiber = fiber.return;
  return fiber ? fiber.memoizedProps.data.length : -1;
})()"""


@pytest.fixture(scope="module")
def stages_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("stages")
    (workdir / "stages.toml").write_text(STAGES_STUDY)
    ok(hvit("run", "--study", "stages.toml", "--root", "mlruns", cwd=workdir))
    return workdir / "mlruns"


@pytest.fixture
def ui_base(stages_root: Path) -> Iterator[str]:
    """``hvit-sweep ui`` on the store; yields its base URL once it says the UI is up."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hvit_sweeps", "ui", "--root", str(stages_root), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        for line in process.stdout:
            if line.startswith("MLflow UI at"):
                break
        else:
            pytest.fail("hvit-sweep ui ended before the UI was up")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not have_chromium(), reason="Debian's chromium is not installed")
def test_parallel_coordinates_draw_every_complete_trial_across_stage_counts(stages_root: Path, ui_base: str) -> None:
    client = MlflowClient(default_tracking_uri(stages_root))
    experiment_id = client.get_experiment_by_name("stages-vary").experiment_id
    trials = client.search_runs([experiment_id], filter_string=role_filter(ROLE_TRIAL))
    stage_counts = {run.data.params[f"{HP_PREFIX}stages.num_stages"] for run in trials}
    assert len(stage_counts) > 1, stage_counts  # the point of the study: 1- and 2-stage trials side by side
    complete = [run for run in trials if run.data.tags.get(TAG_TRIAL_STATE) == "COMPLETE"]
    state = read_study_view(Tracker(None, root=stages_root), experiment_id, view_key("stages-vary"))
    parallel = next(chart for chart in state["compareRunCharts"] if chart["type"] == "PARALLEL")
    assert f"{HP_PREFIX}stages.num_stages" in parallel["selectedParams"]
    url = f"{ui_base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    with Chromium() as browser:
        browser.open(f"{url}&viewStateShareKey={view_key('stages-vary')}&compareRunsMode=CHART")
        assert browser.wait_for(PARALLEL_ROWS, timeout=120) == len(complete) == len(trials)
