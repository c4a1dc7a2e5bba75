"""The study report from a real tiny sweep: its sections, inline images, links and errors."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import tempfile
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
import torch
from conftest import cli, ok, run_tiny_sweep
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from PIL import Image

from hvit_sweeps.checkpoint import load_checkpoint, load_model
from hvit_sweeps.data import load_dataset, make_loaders
from hvit_sweeps.errors import HvitError
from hvit_sweeps.keys import ATTR_PARENT, ATTR_RUN_ID
from hvit_sweeps.report import LOCAL_UI, SECTIONS, build_report
from hvit_sweeps.tracking import Tracker
from hvit_sweeps.visuals import log_visuals, write_trial_visuals


class Page(HTMLParser):
    """The parts of the report the tests read."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[dict[str, str]] = []
        self.links: list[str] = []
        self.sources: list[str] = []  # any src= or href= on script, link, iframe
        self.current = ""
        self.images_by_section: dict[str, list[str]] = {}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.current = values["id"]
            self.sections.append(self.current)
        elif tag == "img":
            self.images.append(values)
            self.images_by_section.setdefault(self.current, []).append(values.get("alt", ""))
        elif tag == "a":
            self.links.append(values.get("href", ""))
        elif tag in ("script", "link", "iframe"):
            self.sources += [values[k] for k in ("src", "href") if k in values]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-trial, 1-epoch study through the CLI on the embedded store; returns its --root."""
    return run_tiny_sweep(tmp_path_factory.mktemp("report"), "tiny", trials=2, max_epochs=1)


def load(root: Path, name: str = "tiny") -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def build(root: Path, out: Path) -> tuple[str, Page]:
    path = build_report(load(root), tracker=Tracker(None, root=root), out=out, interactive=False)
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


@pytest.fixture(scope="module")
def report(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Page]:
    """The report's text and parsed page, built once for the read-only tests."""
    return build(sweep, tmp_path_factory.mktemp("built") / "report.html")


# Every section is there, in order, and the nav links to each.
@pytest.mark.slow
def test_report_has_every_section(report: tuple[str, Page]) -> None:
    text, page = report
    assert page.sections == list(SECTIONS)
    assert {f"#{key}" for key in SECTIONS} <= set(page.links)
    assert "2 complete" in text and "tpe" in text
    assert "synthetic" in text and "dataset hash" in text


# Images are inline PNGs that decode; nothing is fetched from anywhere.
@pytest.mark.slow
def test_report_is_self_contained(report: tuple[str, Page]) -> None:
    text, page = report
    assert page.images, "no image at all"
    assert page.images_by_section.get("optuna-plots") and page.images_by_section.get("accuracy-cost")
    for image in page.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(image["src"][len(prefix) :]))) as decoded:
            decoded.verify()
    assert page.sources == []  # no external script, stylesheet or frame
    urls = re.findall(r"https?://[^\s'\"<>]+", text)
    assert urls, "expected MLflow run links"
    assert all(url.startswith(f"{LOCAL_UI}/#/experiments/") for url in urls), urls


# The best trials are listed with a link to each one's MLflow run.
@pytest.mark.slow
def test_report_links_best_trial_runs(sweep: Path, report: tuple[str, Page]) -> None:
    study = load(sweep)
    _, page = report
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        run_id = trial.user_attrs[ATTR_RUN_ID]
        assert any(f"/runs/{run_id}?" in link for link in page.links), run_id
    # Accuracies read as the CLI writes them.
    assert re.search(r"val_acc1 = \d+\.\d\d% \(trial \d+\)", report[0]), report[0][:3000]
    # The study's trials: the saved view, as `run`, `ui`, `show` and `best` print it.
    assert any(link.endswith("&viewStateShareKey=hvit-tiny") for link in page.links), page.links


# Visuals logged to the best trial's run as visuals/ are inlined in the last section.
@pytest.mark.slow
def test_report_inlines_best_trial_visuals(sweep: Path, tmp_path: Path) -> None:
    study = load(sweep)
    tracker = Tracker(None, root=sweep)
    run_id = study.best_trial.user_attrs[ATTR_RUN_ID]
    if not tracker.client.list_artifacts(run_id, "visuals"):
        text, page = build(sweep, tmp_path / "before.html")
        assert "best-trial-visuals" not in page.images_by_section
        assert "no <code>visuals/</code> artifacts" in text
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = load_checkpoint(tracker.download_checkpoint(run_id, Path(tmp)))
        splits = load_dataset(checkpoint.config.data, seed=checkpoint.config.seed)
        loaders = make_loaders(splits, checkpoint.config.data, device=torch.device("cpu"), seed=checkpoint.config.seed)
        out = Path(tmp) / "visuals"
        write_trial_visuals(load_model(checkpoint), loaders, splits.info, [], out)
        log_visuals(tracker, run_id, out)
    text, page = build(sweep, tmp_path / "after.html")
    shown = page.images_by_section["best-trial-visuals"]
    assert shown[:2] == ["training_curves", "confusion_matrix"]
    assert {"per_class_accuracy", "misclassified", "train_batch"} <= set(shown)
    assert "Lowest-accuracy classes" in text


# A study with no complete trial is refused with one clear line.
@pytest.mark.slow
def test_study_without_complete_trial_is_refused(sweep: Path, tmp_path: Path) -> None:
    study = optuna.create_study(study_name="empty")
    study.tell(study.ask(), state=TrialState.PRUNED)
    with pytest.raises(HvitError, match="has no complete trial yet") as err:
        build_report(study, tracker=Tracker(None, root=sweep), out=tmp_path / "r.html")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r.html").exists()


# A study this tracking store does not know (wrong --root or --tracking-uri) is refused.
@pytest.mark.slow
def test_study_unknown_to_the_tracking_store_is_refused(sweep: Path, tmp_path: Path) -> None:
    elsewhere = optuna.create_study(study_name="elsewhere")
    elsewhere.add_trial(optuna.trial.create_trial(value=0.5))
    elsewhere.set_user_attr(ATTR_PARENT, "0" * 32)  # a parent run that this store never had
    with pytest.raises(HvitError, match="is not in .*pass the --tracking-uri"):
        build_report(elsewhere, tracker=Tracker(None, root=sweep), out=tmp_path / "r.html")


# A study that hvit-sweep did not run has no MLflow runs to report.
@pytest.mark.slow
def test_foreign_study_is_refused(sweep: Path, tmp_path: Path) -> None:
    foreign = optuna.create_study(study_name="foreign")
    foreign.add_trial(optuna.trial.create_trial(value=0.5))
    with pytest.raises(HvitError, match="not run by hvit-sweep"):
        build_report(foreign, tracker=Tracker(None, root=sweep), out=tmp_path / "r.html")


# With plotly installed, plots are interactive and plotly.js travels inline, once.
@pytest.mark.slow
def test_interactive_plots_inline_plotly(sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    path = build_report(load(sweep), tracker=Tracker(None, root=sweep), out=tmp_path / "r.html", interactive=True)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    assert page.sources == []  # plotly.js is in the page, not fetched from a CDN
    figures = text.count("Plotly.newPlot")
    assert figures >= 2
    assert len(re.findall(r"\* plotly\.js v[0-9.]+", text)) == 1
    # Each figure has its own height: plotly's default, 100% of a grid cell with no height, draws nothing.
    assert len(re.findall(r'"height":\s*460', text)) == figures
    assert '"text":"Epoch"' in text.replace(" ", "")  # the intermediate values' x axis, not Optuna's "Step"
    outside_scripts = re.sub(r"<script.*?</script>", "", text, flags=re.DOTALL)
    urls = re.findall(r"https?://[^\s'\"<>]+", outside_scripts)
    assert all(url.startswith(f"{LOCAL_UI}/#/experiments/") for url in urls), urls


# A two-objective study lists its Pareto set and draws the Pareto front (runs made by hand, real stores).
def test_pareto_study_report(make_tracker: Callable[[Path], Tracker], tmp_path: Path) -> None:
    tracker = make_tracker(tmp_path / "mlruns")
    experiment = tracker.experiment_id("pareto")
    parent, _ = tracker.parent_run(experiment, "pareto", tags={})
    study = optuna.create_study(study_name="pareto", directions=["maximize", "minimize"])
    study.set_metric_names(["val_acc1", "params_m"])
    study.set_user_attr(ATTR_PARENT, parent)
    for number, (acc, size) in enumerate([(0.5, 1.0), (0.6, 2.0), (0.4, 3.0), (0.55, 0.5)]):
        run = tracker.client.create_run(experiment, tags={"hvit.role": "trial", "hvit.study": "pareto"})
        tracker.log_metrics(
            run.info.run_id, {"best/val_acc1": acc, "model/params_m": size, "model/flops_m": 10 * size}, step=1
        )
        trial = optuna.trial.create_trial(
            values=[acc, size],
            params={"optim.lr": 1e-3 * (number + 1)},
            distributions={"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
            user_attrs={ATTR_RUN_ID: run.info.run_id},
        )
        study.add_trial(trial)
    text = build_report(study, tracker=tracker, out=tmp_path / "r.html", interactive=False).read_text()
    page = Page(text)
    assert "Pareto set of 2 trial(s)" in text  # trials 1 and 3; 3 (0.55 at 0.5) dominates 0
    assert "pareto_front" in page.images_by_section["optuna-plots"]
    assert page.images_by_section["accuracy-cost"]


# The CLI writes the report; --png keeps the plots as images even where plotly is installed.
@pytest.mark.slow
def test_report_command_png_and_default(sweep: Path, tmp_path: Path) -> None:
    study = ("--study", str(sweep.parent / "tiny.toml"), "--root", str(sweep))
    ok(cli("report", *study, "--png", "--out", str(tmp_path / "png.html")))
    text = (tmp_path / "png.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" not in text and Page(text).images_by_section.get("optuna-plots")
    ok(cli("report", *study, "--out", str(tmp_path / "default.html")))
    default = (tmp_path / "default.html").read_text(encoding="utf-8")
    assert ("Plotly.newPlot" in default) == (importlib.util.find_spec("plotly") is not None)


# Tied trials share one label ("2, 3") instead of two printed over each other; distant ones keep their own.
def test_tied_points_share_one_label() -> None:
    from hvit_sweeps.report import _label_groups

    labels = _label_groups([(1.0, 0.5, 3), (1.0, 0.5, 2), (1.001, 0.5, 4), (9.0, 0.1, 7)])
    assert sorted(labels.values()) == ["2, 3, 4", "7"]
