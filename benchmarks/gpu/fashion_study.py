"""Fashion-MNIST on one GPU: the `fashion-mnist` study packed on the card, then its final model.

``benchmarks/gpu/fashion_study.sh`` installs the carried wheels and runs this. The steps, each
in a hard time box (SIGTERM, then SIGKILL of its whole process tree, as gpu_driver.py does):

1. card: the machine and versions (gpu_driver.py's probe);
2. data: the carried idx.gz files (``.fmnist/``, copies of Debian's dataset-fashion-mnist)
   unpacked into torchvision's layout, which the loader reads from ``data.data_dir``;
3. search: ``hvit-sweep run --study fashion-mnist --devices 0 --trials-per-gpu K --timeout T``,
   no new trial after T s; the search sees train and val only;
4. final: :func:`hvit_sweeps.retrain.retrain_best` in a child process: the best complete trial
   trained on train+val at the study's budget, tested once, logged, registered and exported.

At most 8 files go to ``--out``, each written as soon as its step ends:

    driver.json    card, plan, each step's time box, seconds and status
    fashion.json   the summary: test top-1, trials by state, search seconds, final recipe
    MODEL_CARD.md, metrics.json, final.pth   the final model's export
    run.log        everything the steps printed
    logs.tar.gz    the sweep's worker logs

``--cpu-dry-run`` runs the same steps on the CPU with tiny sizes (--set overrides of the study)
to prove the plumbing without a GPU.

    python benchmarks/gpu/fashion_study.py --out /tmp/fmnist-out                 # on the GPU machine
    python benchmarks/gpu/fashion_study.py --out /tmp/fmnist-dry --cpu-dry-run   # here
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_harness import Terminated, stop_on_sigterm, write_json
from gpu_driver import Driver, StepResult, card, run_boxed, tar_logs

STUDY = "fashion-mnist"
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CARRIED_DATA = REPO / ".fmnist"  # git-ignored; copied from Debian's files before the device call
DEBIAN_DATA = Path("/usr/share/datasets/fashion-mnist")
EXPORTED = ("MODEL_CARD.md", "metrics.json", "final.pth")  # with the 5 others: the device tool's 8 files
RESERVE_S = 20.0  # card, data, the tarball and the summary


@dataclass(frozen=True)
class Plan:
    """Time boxes and sizes of one run."""

    search_s: float  # hard box of `hvit-sweep run`
    new_trials_s: float  # its --timeout: no trial starts later, so running ones can finish in the box
    final_s: float  # hard box of the retrain
    trials: int
    workers: int
    sets: tuple[str, ...] = ()  # --set overrides of the study, for the dry run's tiny sizes


# 480 s in all: a 30-epoch trial of the default shape is about 30-40 s alone on an H100 (issue 16),
# so 4 packed workers finish what they start in the 170 s window well inside the 300 s box.
GPU_PLAN = Plan(search_s=300, new_trials_s=170, final_s=140, trials=40, workers=4)
DRY_PLAN = Plan(
    search_s=240,
    new_trials_s=60,
    final_s=150,
    trials=3,
    workers=2,
    sets=(
        "epochs=2",
        "data.max_train_samples=300",
        "data.max_eval_samples=200",
        "runtime.device=cpu",
        "data.num_workers=0",
        "runtime.amp=false",
    ),
)


def unpack_data(source: Path, data_dir: Path) -> Path:
    """The idx.gz files of ``source`` unpacked into ``data_dir/FashionMNIST/raw`` (torchvision's layout)."""
    missing = [name for name in IDX_FILES if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"{source} lacks {', '.join(missing)}: copy Debian's files there (see fashion_study.sh)")
    raw = data_dir / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        with gzip.open(source / name, "rb") as packed, (raw / name.removesuffix(".gz")).open("wb") as plain:
            shutil.copyfileobj(packed, plain)
    return data_dir


def search_command(plan: Plan, *, root: Path, data_dir: Path, dry: bool) -> list[str]:
    # One GPU: every worker pinned to device 0; the dry run's workers share the CPU.
    placement = ["--workers", str(plan.workers)] if dry else ["--devices", "0", "--trials-per-gpu", str(plan.workers)]
    sets = [f"data.data_dir={data_dir}", "data.download=false", *plan.sets]
    return [
        sys.executable,
        "-m",
        "hvit_sweeps",
        "run",
        "--study",
        STUDY,
        "--root",
        str(root),
        "--trials",
        str(plan.trials),
        "--timeout",
        str(plan.new_trials_s),
        *placement,
        *[arg for item in sets for arg in ("--set", item)],
    ]


def final_command(*, root: Path, data_dir: Path, export: Path, record: Path, dry: bool) -> list[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "final",
        "--root",
        str(root),
        "--data-dir",
        str(data_dir),
        "--export",
        str(export),
        "--record",
        str(record),
    ]
    return command + (["--device", "cpu"] if dry else [])


# -- the final model, in its own process (its time box can kill it) ----------------------


def final_model(args: argparse.Namespace) -> int:
    """retrain_best on the study under --root; its summary JSON to --record."""
    import optuna

    from hvit_sweeps.checkpoint import load_checkpoint
    from hvit_sweeps.evaluate import evaluate_checkpoint
    from hvit_sweeps.retrain import FINAL_CHECKPOINT, final_summary, retrain_best
    from hvit_sweeps.sweep import open_storage
    from hvit_sweeps.tracking import Tracker

    study = optuna.load_study(study_name=STUDY, storage=open_storage(None, root=args.root))
    overrides: dict[str, Any] = {"data.data_dir": str(args.data_dir), "data.download": False}
    if args.device:
        overrides["runtime.device"] = args.device
    result = retrain_best(study, tracker=Tracker(None, root=args.root), dest=args.export, overrides=overrides)
    summary = final_summary(result)
    write_json(args.record, summary)
    # The check on the card itself: a fresh evaluation of the exported file gives the registered figure.
    fresh, _ = evaluate_checkpoint(
        load_checkpoint(args.export / FINAL_CHECKPOINT), overrides=overrides, splits=("test",)
    )
    summary["fresh_eval_test_acc1"] = fresh["test"]["acc1"]
    write_json(args.record, summary)
    print(
        json.dumps(
            {
                "test_acc1": result.test_acc1,
                "fresh_eval_test_acc1": fresh["test"]["acc1"],
                "seconds": round(result.seconds, 1),
            }
        )
    )
    return 0


# -- the summary -------------------------------------------------------------------------


def study_record(root: Path) -> dict[str, Any]:
    """The study's trials from its journal: counts by state, the best, and each trial's figures."""
    import optuna
    from optuna.trial import TrialState

    from hvit_sweeps.sweep import open_storage, trial_counts

    study = optuna.load_study(study_name=STUDY, storage=open_storage(None, root=root))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "epochs": len(t.intermediate_values),
            "seconds": t.duration.total_seconds() if t.duration else None,
            "params": t.params,
        }
        for t in trials
    ]
    return {
        "counts": trial_counts(study),
        "best_trial": None if best is None else best.number,
        "best_val_acc1": None if best is None else best.value,
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "trials": rows,
    }


def boxed_step(driver: Driver, name: str, command: list[str], *, box: float) -> StepResult:
    """Run one step in its time box (cut to what the budget leaves) and record how it ended."""
    box = max(0.0, min(box, driver.deadline - time.monotonic()))
    result = StepResult(name, box, box_s=round(box, 1))
    driver.results.append(result)
    driver.say(f"{name}: time box {box:.0f} s")
    start = time.monotonic()
    result.rc, _, hit = run_boxed(driver, command, box=box)
    result.seconds = round(time.monotonic() - start, 1)
    result.status = "stopped at its time box" if hit else ("ok" if result.rc == 0 else f"failed (exit {result.rc})")
    driver.say(f"{name}: {result.status} after {result.seconds:.0f} s")
    driver.save()
    return result


def run_plan(driver: Driver, plan: Plan, *, work: Path, source: Path, dry: bool) -> dict[str, Any]:
    """Data, search, final model; the summary is saved after each step."""
    summary: dict[str, Any] = {"mode": driver.record["mode"], "plan": asdict(plan)}
    root, export, record = work / "root", work / "final", work / "final.json"
    data_dir = unpack_data(source, work / "data")
    search = boxed_step(
        driver, "search", search_command(plan, root=root, data_dir=data_dir, dry=dry), box=plan.search_s
    )
    summary["search"] = {"seconds": search.seconds, "status": search.status, **study_record(root)}
    write_json(driver.out / "fashion.json", summary)
    if not summary["search"]["counts"].get("complete"):
        driver.say("final: skipped, no complete trial")
        return summary
    final = boxed_step(
        driver,
        "final",
        final_command(root=root, data_dir=data_dir, export=export, record=record, dry=dry),
        box=plan.final_s,
    )
    summary["final"] = {
        "seconds": final.seconds,
        "status": final.status,
        **(json.loads(record.read_text()) if record.is_file() else {}),
    }
    write_json(driver.out / "fashion.json", summary)
    for name in EXPORTED:
        if (export / name).is_file():
            shutil.copy2(export / name, driver.out / name)
    return summary


def headline(summary: dict[str, Any]) -> str:
    final, search = summary.get("final", {}), summary.get("search", {})
    test = final.get("test", {}).get("test_acc1")
    return (
        f"test top-1 {test if test is None else f'{test:.4f}'}; search {search.get('seconds')} s, "
        f"trials {search.get('counts')}; final {final.get('status', 'not run')}"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step")
    final = sub.add_parser("final", help="(internal) the final model of the study under --root")
    final.add_argument("--root", type=Path, required=True)
    final.add_argument("--data-dir", type=Path, required=True)
    final.add_argument("--export", type=Path, required=True)
    final.add_argument("--record", type=Path, required=True)
    final.add_argument("--device")
    parser.add_argument("--out", type=Path, help="results folder (the device tool's $OUT)")
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same steps on the CPU, tiny sizes")
    parser.add_argument("--budget", type=float, help="seconds for the whole run [the plan's boxes plus 20]")
    parser.add_argument(
        "--data", type=Path, help=f"folder of the 4 idx.gz files [{CARRIED_DATA.name}, else {DEBIAN_DATA}]"
    )
    parser.add_argument(
        "--work", type=Path, default=Path("/tmp/fmnist-study"), help="stores, data and export [/tmp/fmnist-study]"
    )
    parser.add_argument("--wheels", type=Path, help="the carried wheels, checked against what is installed (card)")
    args = parser.parse_args(argv)
    if args.step is None and args.out is None:
        parser.error("--out is required")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.step == "final":
        return final_model(args)
    plan = DRY_PLAN if args.cpu_dry_run else GPU_PLAN
    budget = args.budget or plan.search_s + plan.final_s + RESERVE_S
    source = args.data or (CARRIED_DATA if CARRIED_DATA.is_dir() else DEBIAN_DATA)
    shutil.rmtree(args.work, ignore_errors=True)  # a fresh study: a rerun must not extend an old one
    args.out.mkdir(parents=True, exist_ok=True)
    stop_on_sigterm()
    with (args.out / "run.log").open("a") as log:
        driver = Driver(
            out=args.out,
            logs=args.work / "root" / "logs",
            profile="fashion",
            plan=(),
            deadline=time.monotonic() + budget - RESERVE_S / 2,
            log=log,
        )
        driver.record.update(
            mode="cpu dry run" if args.cpu_dry_run else "gpu",
            budget_s=budget,
            plan=asdict(plan),
            data=str(source),
            command=" ".join(sys.argv),
        )
        driver.say(f"budget {budget:.0f} s, {driver.record['mode']}, data {source}; out {args.out}")
        code, summary = 0, {}
        try:
            if not card(driver, wheels=args.wheels):
                return 3
            summary = run_plan(driver, plan, work=args.work, source=source, dry=args.cpu_dry_run)
            code = 0 if summary.get("final", {}).get("status") == "ok" else 1
        except Terminated as err:
            driver.say(f"interrupted by {err}: what was written so far is kept")
            code = 143
        finally:
            driver.record["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            driver.save()
            driver.logs.mkdir(parents=True, exist_ok=True)
            driver.say(f"logs.tar.gz: {tar_logs(driver.logs, args.out / 'logs.tar.gz')} logs")
            driver.say(headline(summary))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
