"""A dataset's facts from its config, without decoding any image (torch-free for the built-ins)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from hvit_sweeps.data.catalog import BUILTIN_INFO, is_folder

if TYPE_CHECKING:
    from hvit_sweeps.data.info import DatasetInfo
    from hvit_sweeps.data.settings import DataConfig

__all__ = ["describe_dataset"]


def describe_dataset(config: DataConfig) -> DatasetInfo:
    """Static facts about ``config.dataset``, without decoding any image.

    For ``folder:`` datasets the class folders of ``train/`` are scanned and
    only image headers are read (for the channel count); mean/std are
    placeholders (0.5, 0.25) because measuring them needs the pixels:
    :func:`~hvit_sweeps.data.splits.load_dataset` returns the measured ones in
    ``DatasetSplits.info``. The answer is kept for the life of the process, so
    building many configs (a study's trials) scans a folder once.
    """
    return _describe(config.dataset, config.image_size)


# Keyed on what the facts depend on; data_dir is left out because no source's
# facts depend on where its files are downloaded to.
@functools.cache
def _describe(dataset: str, image_size: int | None) -> DatasetInfo:
    if not is_folder(dataset):
        return BUILTIN_INFO[dataset]
    from hvit_sweeps.data.folder import describe_folder  # the scan needs torchvision; built-ins do not

    return describe_folder(dataset, image_size)
