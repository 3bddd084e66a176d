"""README.md's Python samples run as pasted, each in a fresh process and
an empty folder (the service sample's temporary directory lands there too)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
ENTRY = "Entry(queue_id=3, offset=1048576, size=512, timestamp_ms="


def test_the_readme_has_its_two_samples() -> None:
    assert len(SAMPLES) == 2


@pytest.mark.parametrize("n", range(len(SAMPLES)))
def test_readme_sample_runs_as_pasted(tmp_path: Path, n: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SAMPLES[n]],
        cwd=tmp_path,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert ENTRY in result.stdout  # the key put was found
    if "IndexStore" in SAMPLES[n]:
        assert "ShutdownReport(clean=True, uploaded=['" in result.stdout
