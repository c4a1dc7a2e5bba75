"""How many trials share one GPU: ``hvit-sweep run --trials-per-gpu auto``.

K is the smaller of two limits:

* **memory**: the card's free memory (90% of it) over one trial's estimated peak,
  :func:`trial_bytes`, for the largest model the study can sample;
* **pay-off**: :data:`MAX_USEFUL_K`, the most concurrent trials that the concurrency
  bench (``benchmarks/bench.py``, section ``sweep-throughput``) has shown to raise
  the summed throughput. Past that, more processes only share the same SMs.

Everything here is pure arithmetic on configs and a :class:`CardMemory`, so tests can
fake a CUDA card; only :func:`probe_card` touches torch.

The estimate, per trial process (bytes)::

    CONTEXT_BYTES                          CUDA context, cuBLAS/cuDNN workspaces
  + 18 * params                            fp32 weights, grads, AdamW's two moments (16 B)
                                           and autocast's bf16 weight copies (2 B)
  + dataset                                the device loader's uint8 copy of every split
  + 1.5 * batch * sum over blocks of       saved activations (Korthikanti et al. 2022,
        (15 + 4.75 * mlp_ratio) * N * d      "Reducing Activation Recomputation": 34 s b h
        + 5 * heads * N**2                   + 5 a s^2 b bytes per 16-bit layer, MLP ratio 4)
      times 2 in fp32                      (N tokens, d width of the block's stage)

The factor 1.5 covers the allocator's rounding, the augmentation's temporaries and the
eager eval batch beside the CUDA graph's pool. It errs high: a wrong K that is too
large fails trials with out-of-memory, one that is too small only costs speed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hvit_sweeps.config import ModelConfig, TrainConfig
    from hvit_sweeps.study import StudySpec

__all__ = [
    "CONTEXT_BYTES",
    "MAX_USEFUL_K",
    "CardMemory",
    "Packing",
    "activation_bytes",
    "choose_trials_per_gpu",
    "dataset_bytes",
    "estimate_parameters",
    "measured_trial_bytes",
    "per_trial_bytes",
    "probe_card",
    "stored_trials",
    "study_trial_bytes",
    "trial_bytes",
]

# The concurrency bench has no valid GPU figure yet: the one H100 run before the barrier bench
# had K=2 windows overlapping 0% and K=4 50% (issue 11), so it proved nothing about K > 1.
# 4 is the conservative cap until benchmarks/RESULTS.md ("GPU", sweep-throughput with overlap
# >= 80%) shows where the summed img/s stops rising; then set this to that K.
MAX_USEFUL_K = 4
CONTEXT_BYTES = 768 * 2**20  # CUDA context with lazy module loading, plus library workspaces
OPTIMIZER_BYTES_PER_PARAM = 18  # weights 4 + grads 4 + AdamW moments 8 + bf16 copies 2
ACTIVATION_SLACK = 1.5
USABLE_SHARE = 0.9  # of the free memory: headroom for fragmentation and other processes
# Used when the caller does not know the split sizes: CIFAR-100's 50k train + 10k test.
DEFAULT_SAMPLES = 60_000
GIB = 2**30


@dataclass(frozen=True)
class CardMemory:
    """What one GPU offers: its name, total and free bytes (torch.cuda.mem_get_info)."""

    name: str
    total_bytes: int
    free_bytes: int


@dataclass(frozen=True)
class Packing:
    """The chosen trials per GPU and the one line ``run`` prints about it."""

    k: int
    reason: str
    per_trial_bytes: int = 0
    memory_k: int = 0


def estimate_parameters(model: ModelConfig) -> int:
    """Parameters of :class:`~hvit_sweeps.model.HierarchicalViT`, counted from its config.

    Stem conv and norm, position embedding, per block qkv + proj + two norms + MLP,
    the depthwise-then-pointwise pooling between stages, and the head.
    """
    dims, patch = model.embed_dims, model.patch_size
    grid = model.image_size // patch
    total = model.in_chans * patch * patch * dims[0] + 3 * dims[0] + grid * grid * dims[0]
    for stage, (width, depth) in enumerate(zip(dims, model.depths, strict=False)):
        hidden = round(width * model.mlp_ratio)
        block = 4 * width * width + 4 * width + 4 * width + 2 * width * hidden + hidden + width
        total += depth * block
        if stage + 1 < len(dims):
            total += 10 * width + width * dims[stage + 1] + dims[stage + 1]
    return total + 2 * dims[-1] + dims[-1] * model.num_classes + model.num_classes


def stage_tokens(model: ModelConfig) -> list[int]:
    """Tokens per stage: the stem's grid, then ceil(g / 2) per pooling."""
    grid, tokens = model.image_size // model.patch_size, []
    for _ in model.embed_dims:
        tokens.append(grid * grid)
        grid = (grid + 1) // 2
    return tokens


def activation_bytes(model: ModelConfig, *, batch_size: int, amp: bool) -> int:
    """Saved activations of one training step (see the module docstring), slack included."""
    per_image = 0.0
    per_token_width = 15 + 4.75 * model.mlp_ratio  # 34 at the usual MLP ratio of 4
    for tokens, width, heads, depth in zip(
        stage_tokens(model), model.embed_dims, model.num_heads, model.depths, strict=False
    ):
        per_image += depth * (per_token_width * tokens * width + 5 * heads * tokens * tokens)
    width_factor = 1 if amp else 2  # the formula counts 16-bit activations
    return int(ACTIVATION_SLACK * batch_size * per_image * width_factor)


def dataset_bytes(model: ModelConfig, samples: int = DEFAULT_SAMPLES) -> int:
    """The device loader's uint8 images (labels are negligible beside them)."""
    return samples * model.in_chans * model.image_size * model.image_size


def trial_bytes(config: TrainConfig, *, samples: int = DEFAULT_SAMPLES) -> int:
    """One trial process's estimated peak on a CUDA card (``amp`` None counts as on, CUDA's default)."""
    amp = config.runtime.amp is not False
    data = dataset_bytes(config.model, samples) if config.data.loader != "cpu" else 0
    return (
        CONTEXT_BYTES
        + OPTIMIZER_BYTES_PER_PARAM * estimate_parameters(config.model)
        + data
        + activation_bytes(config.model, batch_size=config.data.batch_size, amp=amp)
    )


def study_trial_bytes(spec: StudySpec, cli: dict[str, Any], *, samples: int = DEFAULT_SAMPLES) -> int:
    """The largest :func:`trial_bytes` over the corners of the study's space (the study's base when it has none).

    The corners (``StagesSpace.corner_architectures`` and each searched setting's extremes,
    batch size included) hold the largest model, so K is safe for every trial it may sample.
    """
    return max(trial_bytes(config, samples=samples) for config in _corner_configs(spec, cli))


def _corner_configs(spec: StudySpec, cli: dict[str, Any]) -> Iterable[TrainConfig]:
    architectures: list[dict[str, Any]] = [{}]
    if spec.stages is not None:
        architectures = list(spec.stages.corner_architectures())
    for arch in architectures:
        yield spec.trial_config(arch, cli)
        for path, param in spec.space.items():
            for value in param.extremes():
                yield spec.trial_config({**arch, path: value}, cli)


def choose_trials_per_gpu(
    per_trial_bytes: int,
    card: CardMemory | None,
    *,
    cpu_count: int | None = None,
    gpus: int = 1,
    cap: int = MAX_USEFUL_K,
    basis: str = "estimated for the largest model of the study",
) -> Packing:
    """K for ``--trials-per-gpu auto`` and why, in one line.

    Args:
        per_trial_bytes: One trial's estimated peak, e.g. :func:`study_trial_bytes`.
        card: The smallest GPU of ``--devices`` (None: no CUDA card, so one trial at a time).
        cpu_count: Host cores; each trial process keeps at least one busy feeding its GPU.
        gpus: GPUs that share those cores.
        cap: The most trials per GPU that the concurrency bench shows to pay off.
        basis: Where ``per_trial_bytes`` came from, for the reason line.
    """
    if card is None:
        return Packing(1, "--trials-per-gpu auto: 1 trial at a time (no CUDA device)")
    usable = int(card.free_bytes * USABLE_SHARE)
    memory_k = max(1, usable // max(1, per_trial_bytes))
    cores = cpu_count if cpu_count is not None else os.cpu_count() or 1
    core_k = max(1, cores // max(1, gpus))
    k = min(memory_k, cap, core_k)
    limits = {memory_k: "memory", cap: "the concurrency bench's cap", core_k: f"{cores} CPU cores"}
    reason = (
        f"--trials-per-gpu auto: {k} trial(s) per GPU ({card.name}: {card.free_bytes / GIB:.1f} of "
        f"{card.total_bytes / GIB:.1f} GiB free, about {per_trial_bytes / GIB:.2f} GiB per trial, "
        f"{basis}; memory allows {memory_k}, the bench's cap is {cap}; limited by {limits[k]})"
    )
    return Packing(k, reason, per_trial_bytes=per_trial_bytes, memory_k=memory_k)


def measured_trial_bytes(
    spec: StudySpec, cli: dict[str, Any], trials: Iterable[FrozenTrial], *, samples: int = DEFAULT_SAMPLES
) -> tuple[int, int] | None:
    """One trial's peak from the CUDA peaks the study's trials measured, and how many did; None before any.

    A measured trial may be smaller than the largest model the space holds, so the
    measurement calibrates the estimate rather than replacing it: the largest
    ratio of measured peak (plus the CUDA context, which ``max_memory_allocated``
    leaves out) to that trial's own estimate, times the largest model's estimate.
    """
    import optuna

    from hvit_sweeps.keys import ATTR_COST, ATTR_DEVICE

    ratios = []
    for trial in trials:
        cost = trial.user_attrs.get(ATTR_COST) or {}
        if trial.user_attrs.get(ATTR_DEVICE) != "cuda" or "peak_memory_mb" not in cost:
            continue
        measured = cost["peak_memory_mb"] * 2**20 + CONTEXT_BYTES
        # FixedTrial replays the trial's Optuna params through the study's own suggest: its exact config.
        fixed = optuna.trial.FixedTrial(dict(trial.params), trial.number)
        sampled = spec.suggest(cast("optuna.Trial", fixed))  # the same suggest_* calls
        ratios.append(measured / trial_bytes(spec.trial_config(sampled, cli), samples=samples))
    if not ratios:
        return None
    return int(max(ratios) * study_trial_bytes(spec, cli, samples=samples)), len(ratios)


def per_trial_bytes(
    spec: StudySpec, cli: dict[str, Any], trials: Iterable[FrozenTrial], *, samples: int = DEFAULT_SAMPLES
) -> tuple[int, str]:
    """The bytes to pack by, and the reason line's words for where they came from."""
    measured = measured_trial_bytes(spec, cli, trials, samples=samples)
    if measured is None:
        return study_trial_bytes(spec, cli, samples=samples), "estimated for the largest model of the study"
    bytes_, count = measured
    return bytes_, f"from the peak memory measured by {count} trial(s), scaled to the largest model of the study"


def stored_trials(storage_url: str | None, root: Path, study_name: str) -> list[FrozenTrial]:
    """The trials of an existing study (none for a new one); a missing journal file is not created."""
    import optuna

    from hvit_sweeps.keys import JOURNAL_FILE
    from hvit_sweeps.sweep.storage import open_storage

    if storage_url is None or storage_url.startswith("journal:"):
        path = Path(storage_url[len("journal:") :]) if storage_url else root / JOURNAL_FILE
        if not path.is_file():
            return []
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url, root=root))
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def probe_card(devices: Sequence[str] | None = None) -> CardMemory | None:
    """The GPU of ``devices`` (CUDA indices, all visible when None) with the least free memory; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    indices = [int(d) for d in devices] if devices else list(range(torch.cuda.device_count()))
    cards = []
    for index in indices:
        free, total = torch.cuda.mem_get_info(index)
        cards.append(CardMemory(torch.cuda.get_device_name(index), int(total), int(free)))
    return min(cards, key=lambda card: card.free_bytes, default=None)
