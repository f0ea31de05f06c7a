"""Option vocabularies: one enum each; members or strings accepted; errors list the values."""
from __future__ import annotations

import pytest

from hdn_deploy.backends import BACKENDS, create_backend
from hdn_deploy.backends.trt_cache import COMPATIBILITY, PRECISIONS, check_choice
from hdn_deploy.errors import ConfigError
from hdn_deploy.options import BackendName, Compatibility, EnginePrecision, parse, values
from hdn_deploy.package import load_package


def test_parse_accepts_members_and_strings():
    assert parse(BackendName, "ort-tensorrt", "backend") is BackendName.ORT_TENSORRT
    assert parse(BackendName, BackendName.CPU, "backend") is BackendName.CPU


def test_parse_lists_the_values():
    with pytest.raises(ConfigError, match=r"unknown precision 'int4'; expected one of 'fp32', "
                                          r"'fp16', 'bf16'"):
        parse(EnginePrecision, "int4", "precision")


def test_legacy_tuples_are_the_enum_values():
    assert BACKENDS == values(BackendName) and PRECISIONS == values(EnginePrecision)
    assert COMPATIBILITY == values(Compatibility)
    assert check_choice("precision", EnginePrecision.FP16, PRECISIONS) == "fp16"


def test_backend_by_enum_and_unknown_backend(tiny_package):
    package = load_package(tiny_package)
    assert create_backend(BackendName.CPU, package, threads=1).describe()
    with pytest.raises(ConfigError, match="unknown backend 'gpu'; expected one of 'auto', 'cpu'"):
        create_backend("gpu", package)
