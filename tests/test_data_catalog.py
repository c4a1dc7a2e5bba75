"""Tests for the dataset catalog, the reader table and the package's lazy exports: one dataset list, no torch to import it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hvit_sweeps import data
from hvit_sweeps.config import DataConfig
from hvit_sweeps.data import catalog, readers
from hvit_sweeps.data.describe import describe_dataset
from hvit_sweeps.data.folder import read_folder


# The config accepts exactly the catalog's names, each with its facts and a reader.
def test_every_accepted_dataset_has_facts_and_a_reader() -> None:
    assert catalog.DATASET_NAMES == tuple(catalog.BUILTIN_INFO) == tuple(readers.READERS)
    for name in catalog.DATASET_NAMES:
        config = DataConfig(dataset=name)
        assert config.dataset == name
        assert callable(readers.READERS[name])
        assert describe_dataset(config) is catalog.BUILTIN_INFO[name] and catalog.BUILTIN_INFO[name].name == name
    assert readers.FOLDER_READER is read_folder and catalog.is_folder("folder:/x")


# The validator's error lists the catalog's names, so a new dataset shows up there too.
def test_unknown_dataset_error_lists_catalog_names() -> None:
    with pytest.raises(ValueError, match=", ".join(catalog.DATASET_NAMES)):
        DataConfig(dataset="imagenet")


# Importing the config, the catalog and the package, and describing a built-in, imports no torch.
def test_config_and_catalog_import_without_torch() -> None:
    code = (
        "import sys, hvit_sweeps.config, hvit_sweeps.data, hvit_sweeps.data.catalog, hvit_sweeps.data.describe as d\n"
        "d.describe_dataset(hvit_sweeps.config.DataConfig(dataset='fashion-mnist'))\n"
        "hvit_sweeps.config.build_config({'data.dataset': 'cifar10'})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout[:500]


# Every name the package exports resolves lazily to its defining module.
def test_package_exports_resolve() -> None:
    for name in data.__all__:
        assert getattr(data, name) is not None
    assert set(data.__all__) <= set(dir(data))
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018
