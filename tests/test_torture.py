"""The bounded crash torture that CI runs (tests/torture.py has the long
version: `make torture`)."""

from __future__ import annotations

import os

import pytest

from torture import run, summary

TRIALS = int(os.environ.get("TIX_TORTURE_TRIALS", "8"))


@pytest.mark.crash
@pytest.mark.parametrize("seed", [11])
def test_crash_torture(remote_url: str, seed: int) -> None:
    outcomes = run([remote_url], TRIALS, seed, power_share=0.3)
    print(summary(outcomes))
    failures = [o for o in outcomes if not o.ok]
    assert not failures, "\n".join(str(o) for o in failures)
    assert sum(o.required for o in outcomes) > 0, "no acknowledged put was ever checked"
