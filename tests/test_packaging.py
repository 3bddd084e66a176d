"""What the sdist and wheel ship besides the code: the license pyproject
declares, whole (maturin puts ``license-files`` in both; checked by hand
with ``pip wheel`` and ``maturin sdist``, too slow for the suite)."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SHA-256 of https://www.apache.org/licenses/LICENSE-2.0.txt, unmodified.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_the_declared_license_ships_unmodified() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
