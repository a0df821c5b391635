"""The code passes the project's lint (ruff with the rules in pyproject.toml's [tool.ruff.lint]: pyflakes) and is
formatted as ``ruff format`` writes it ([tool.ruff.format]), and the typed contracts (training/interfaces.py and the shared helpers) pass mypy --strict."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run(
        [ruff, "check", "--output-format", "concise", "ltx2train", "tests", "benchmarks", "data_tools", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


STRICT = [
    "ltx2train/training/interfaces.py",
    "ltx2train/utils/errors.py",
    "ltx2train/utils/format.py",
    "ltx2train/utils/autograd.py",
]  # the contracts and the shared helpers: typed completely


def test_the_interfaces_type_check_strictly():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--ignore-missing-imports",
            "--no-error-summary",
            *STRICT,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
