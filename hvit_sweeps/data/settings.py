"""The data section of a run's config: which dataset, and how it is split, augmented and batched.

Its own module, below both :mod:`hvit_sweeps.config` (which nests it in a
``TrainConfig``) and the readers and loaders (which take it), so that neither
imports the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hvit_sweeps.data.catalog import DATASET_NAMES, FOLDER_PREFIX

__all__ = ["DataConfig"]


class DataConfig(BaseModel):
    """Where the data comes from and how it is split, augmented and batched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field("cifar100", description=f"Dataset: {', '.join(DATASET_NAMES)} or {FOLDER_PREFIX}PATH.")
    data_dir: Path = Field(Path("data"), description="Folder that holds (or receives) downloaded datasets.")
    download: bool = Field(True, description="Download a missing dataset where that is possible.")
    val_split: float = Field(0.1, gt=0, lt=1, description="Share of the train set held out for validation.")
    batch_size: int = Field(128, ge=1, description="Samples per batch.")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes (cpu loader only).")
    loader: Literal["auto", "cpu", "device"] = Field(
        "auto", description="Where batches are built: cpu workers, the device, or auto (device on CUDA and CPU)."
    )
    augment: Literal["none", "basic", "trivialaugment", "randaugment"] = Field(
        "basic", description="Train augmentation: none, basic (crop+flip), or basic plus TrivialAugment/RandAugment."
    )
    mixup_alpha: float = Field(0.0, ge=0, description="MixUp Beta(alpha, alpha); 0 turns it off.")
    cutmix_alpha: float = Field(0.0, ge=0, description="CutMix Beta(alpha, alpha); 0 turns it off.")
    image_size: int | None = Field(
        None, ge=1, description="folder: datasets only: resize images to this square size (default 32)."
    )
    max_train_samples: int | None = Field(
        None, ge=1, description="Use a stratified subset of this many train samples (smoke runs)."
    )
    max_eval_samples: int | None = Field(
        None, ge=1, description="Cap val and test at this many samples each (stratified)."
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        name = value.strip()
        if name.startswith(FOLDER_PREFIX):
            if not name[len(FOLDER_PREFIX) :].strip():
                raise ValueError("folder: needs a path, e.g. folder:/data/my_images")
            return name
        if name.lower() in DATASET_NAMES:
            return name.lower()
        raise ValueError(f"unknown dataset {value!r}; choose one of {', '.join(DATASET_NAMES)} or folder:PATH")

    @model_validator(mode="after")
    def _image_size_only_for_folders(self) -> DataConfig:
        if self.image_size is not None and not self.dataset.startswith(FOLDER_PREFIX):
            raise ValueError("image_size applies only to folder:PATH datasets; built-ins keep their native size")
        return self
