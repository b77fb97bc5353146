"""Every examples/NN_*.py runs in a subprocess and prints exactly its `# Output:` block."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))


def expected_output(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    start = lines.index("# Output:") + 1
    return [line[2:] if line.startswith("# ") else line[1:] for line in lines[start:] if line.startswith("#")]


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2, EXAMPLES


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_output(path: Path, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected_output(path), result.stderr
