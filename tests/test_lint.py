"""The linter: pyflakes finds no undefined name, unused import or unused variable in the package, the tests, the
benchmarks and the scripts (it reads the code; nothing is run)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pyflakes_finds_nothing():
    pytest.importorskip("pyflakes")
    out = subprocess.run([sys.executable, "-m", "pyflakes", "metalearn_core", "tests", "benchmarks", "scripts"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"pyflakes found:\n{out.stdout}{out.stderr}"
