"""pytest fixtures for the Python binding (tests/python).

Environment (set by the CTest entry `python_binding`, tests/CMakeLists.txt):
  STREAMDIFF_LIBRARY  the build tree's libstreamdiff.so (unset: the installed package's own library)
  STREAMDIFF_CLI      the build tree's `streamdiff` binary, for the CLI comparisons (unset: those skip)
  SD_TEST_DATA        tests/data (default: next to this folder)
The package is imported from python/ of this checkout unless STREAMDIFF_TEST_INSTALLED=1 (then the
installed one, e.g. after `pip install .`).
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if os.environ.get("STREAMDIFF_TEST_INSTALLED") != "1":
    sys.path.insert(0, str(ROOT / "python"))

import streamdiff  # noqa: E402

DATA = Path(os.environ.get("SD_TEST_DATA") or ROOT / "tests" / "data")


@pytest.fixture(scope="session")
def data() -> Path:
    d = DATA
    # committed test data: missing is a failure, not a skip
    assert (d / "models" / "tiny-sd15" / "model_index.json").is_file(), f"tests/data is missing at {d}"
    return d


@pytest.fixture(scope="session")
def cli() -> str:
    p = os.environ.get("STREAMDIFF_CLI")
    if not p:
        pytest.skip("STREAMDIFF_CLI is not set (the CLI comparisons run under CTest)")
    assert os.access(p, os.X_OK), f"STREAMDIFF_CLI={p} is not an executable"
    return p


@pytest.fixture(scope="session")
def model(data):
    m = streamdiff.Model(data / "models" / "tiny-sd15", threads=2)
    yield m
    m.close()


@pytest.fixture(scope="session")
def tmodel(data):
    """tiny-sd15 with the tiny TAESD (what streams use)."""
    m = streamdiff.Model(data / "models" / "tiny-sd15", taesd=data / "models" / "taesd-tiny", threads=2)
    yield m
    m.close()
