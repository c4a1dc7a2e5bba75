"""Tests for hvit_sweeps.data.registry and the package's lazy exports: one dataset list, no torch to import it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hvit_sweeps import config as config_module
from hvit_sweeps import data
from hvit_sweeps.config import DataConfig
from hvit_sweeps.data import registry


# The config accepts exactly the registered names, each with a reader and its facts.
def test_every_accepted_dataset_is_registered_once() -> None:
    assert config_module.BUILTIN_DATASETS == registry.DATASET_NAMES == tuple(registry.SOURCES)
    for name in registry.DATASET_NAMES:
        config = DataConfig(dataset=name)
        assert config.dataset == name
        assert callable(registry._resolve(registry.source_for(name).reader))
        assert registry.describe_dataset(config).name == name
    folder_source = registry.source_for("folder:/x")
    assert folder_source is registry.FOLDER_SOURCE
    assert callable(registry._resolve(folder_source.reader)) and callable(registry._resolve(folder_source.describer))


# The validator's error lists the registry's names, so a new source shows up there too.
def test_unknown_dataset_error_lists_registry_names() -> None:
    with pytest.raises(ValueError, match=", ".join(registry.DATASET_NAMES)):
        DataConfig(dataset="imagenet")


# A source gives its facts one way: statically or by a describer, never both or neither.
def test_source_needs_exactly_one_way_to_describe() -> None:
    info = registry.SOURCES["cifar10"].info
    with pytest.raises(ValueError, match="exactly one"):
        registry.Source("cifar.read_cifar")
    with pytest.raises(ValueError, match="exactly one"):
        registry.Source("cifar.read_cifar", info=info, describer="folder.describe_folder")


# Importing the config, the registry and the package, and describing a built-in, imports no torch.
def test_config_and_registry_import_without_torch() -> None:
    code = (
        "import sys, hvit_sweeps.config, hvit_sweeps.data, hvit_sweeps.data.registry as r\n"
        "r.describe_dataset(hvit_sweeps.config.DataConfig(dataset='fashion-mnist'))\n"
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
