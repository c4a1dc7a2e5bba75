"""`best`: the best trial (or the Pareto set), its export, its retraining as the final model, or a seed confirmation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvit_sweeps.app.links import run_links, trials_link
from hvit_sweeps.app.options import StudyRef
from hvit_sweeps.errors import HvitError
from hvit_sweeps.flags import check_values, parse_sets
from hvit_sweeps.keys import ATTR_RUN_ID, CHECKPOINT_ARTIFACT, ui_base

if TYPE_CHECKING:
    import optuna

    from hvit_sweeps.sweep.record import StudyRecord
    from hvit_sweeps.tracking import Tracker

__all__ = ["BestRequest", "best", "warn_if_unconfirmed"]


@dataclass(frozen=True)
class BestRequest:
    """What `best` was asked for, beyond the study."""

    export: Path | None = None
    top: int = 1
    retrain: bool = False
    registry_name: str | None = None
    alias: str = "champion"
    seed: int | None = None
    force: bool = False
    confirm: bool = False
    seeds: int = 3
    sets: list[str] | None = None


def best(ref: StudyRef, request: BestRequest) -> None:
    """Show the best trials; export, retrain or confirm them as asked. Prints as it goes."""
    overrides = parse_sets(request.sets)  # a bad --set is refused before the study is read or MLflow loads
    check_values(overrides, source="--set")
    from hvit_sweeps.confirm import confirmation_table, stored_confirmation
    from hvit_sweeps.console import console, trials_table
    from hvit_sweeps.sweep.record import StudyRecord

    export, force = request.export, request.force
    if export is not None:
        from hvit_sweeps.export import check_export_dest

        check_export_dest(export, force=force)  # before the study is read or anything is trained
    loaded = ref.load()
    record = StudyRecord.of(loaded)
    if request.confirm:
        _confirm(loaded, ref.tracker(), top=request.top, seeds=request.seeds, overrides=overrides)
        return
    confirmed = stored_confirmation(loaded)
    if confirmed is not None and (request.retrain or export is not None):
        console.print(f"taking trial {confirmed.winner}, the seed-confirmed winner: {confirmed.statement}")
        warn_if_unconfirmed(record, confirmed)
    if request.retrain:
        _retrain(
            loaded,
            record,
            ref.tracker(),
            export=export,
            force=force,
            registry_name=request.registry_name,
            alias=request.alias,
            seed=request.seed,
            overrides=overrides,
            trial_number=confirmed.winner if confirmed else None,
        )
        return
    if export is not None:
        from hvit_sweeps.sweep.background import wait_for_background

        wait_for_background(ref.root, loaded.study_name)  # the visuals that `run` draws after its trials
    # The export takes the confirmed winner, not the search's luckiest draw; the listing, the best by value.
    chosen = record.chosen(request.top) if export is not None else record.best(request.top)
    if confirmed is not None:
        console.print(confirmation_table(confirmed))
    if not chosen:
        raise HvitError(f"study {record.name!r} has no complete trial yet: run more trials first")
    title = "Pareto set" if record.multi_objective else f"best {len(chosen)} of study {record.name}"
    console.print(trials_table(chosen, title=title, metric_names=record.metric_names))
    for line in trials_link(ref, record):
        console.print(line, soft_wrap=True)
    for trial, line in zip(
        chosen, run_links(chosen, experiment_id=record.experiment_id, base=ui_base(ref.tracking_uri)), strict=False
    ):
        run_id = trial.user_attrs.get(ATTR_RUN_ID)
        console.print(f"{line}\n  checkpoint: runs:/{run_id}/{CHECKPOINT_ARTIFACT}", soft_wrap=True)
    if export is not None:
        from hvit_sweeps.export import export_trials  # torch: only to write a checkpoint

        for path in export_trials(loaded, chosen, tracker=ref.tracker(), dest=export, force=force):
            console.print(f"exported {path}")


def _retrain(
    loaded: optuna.Study,
    record: StudyRecord,
    tracker: Tracker,
    *,
    export: Path | None,
    force: bool,
    registry_name: str | None,
    alias: str,
    seed: int | None,
    overrides: dict[str, Any],
    trial_number: int | None = None,
) -> None:
    from hvit_sweeps.console import TrainProgress, console
    from hvit_sweeps.interrupt import graceful_interrupts
    from hvit_sweeps.keys import ATTR_EPOCHS
    from hvit_sweeps.retrain import retrain_best

    source = record.best_complete(trial_number)  # no complete trial: one line, exit 2
    epochs = int(source.user_attrs.get(ATTR_EPOCHS, 1))
    with graceful_interrupts(console.print), TrainProgress(epochs) as progress:
        result = retrain_best(
            loaded,
            tracker=tracker,
            dest=export,
            seed=seed,
            registry_name=registry_name,
            alias=alias,
            overrides=overrides,
            callbacks=[progress],
            force=force,
            trial_number=trial_number,
        )
    console.print(
        f"final model of trial {result.source_trial}: test top-1 {100 * result.test_acc1:.2f}% "
        f"(trained on train+val, {result.config.epochs} epochs, seed {result.config.seed}); MLflow run {result.run_id}"
    )
    if result.registered:
        console.print(f"registered {result.registered.uri} (version {result.registered.version})")
    if result.exported:
        console.print(f"exported {result.exported}")


def warn_if_unconfirmed(record: StudyRecord, confirmed: Any) -> None:
    """A trial that beat the confirmed ones after the confirmation is not silently passed over."""
    from hvit_sweeps.console import console

    leader = record.best(1)
    if leader and leader[0].number not in {r.trial for r in confirmed.ranked}:
        console.print(
            f"[yellow]note:[/yellow] trial {leader[0].number}, now the best by its single run, was not in the "
            "confirmation: run `best --confirm` again to include it"
        )


def _confirm(loaded: optuna.Study, tracker: Tracker, *, top: int, seeds: int, overrides: dict[str, Any]) -> None:
    """`best --confirm`: replicates of the top trials, one after another, then the ranking and its statement."""
    from rich.progress import Progress

    from hvit_sweeps.confirm import candidates, confirm_top, confirmation_table
    from hvit_sweeps.console import console
    from hvit_sweeps.interrupt import graceful_interrupts

    candidates(loaded, top=top, seeds=seeds)  # a refusal is one line, before any progress or training
    with graceful_interrupts(console.print), Progress(console=console) as bar:
        task = bar.add_task("replicates", total=top * seeds)

        started: list[int] = []

        def progress(trial: int, seed: int) -> list[Any]:
            bar.update(task, completed=len(started))  # the replicates before this one are done
            started.append(trial)
            bar.console.print(f"replicate {len(started)} of {top * seeds}: trial {trial}, seed {seed}")
            return []

        confirmation = confirm_top(
            loaded, tracker=tracker, top=top, seeds=seeds, overrides=overrides, progress=progress
        )
        bar.update(task, completed=top * seeds)
    console.print(confirmation_table(confirmation))
    console.print(confirmation.statement)
