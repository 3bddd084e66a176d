"""StoreConfig refuses bad settings at construction, naming the field."""

from __future__ import annotations

import math

import pytest

from tieredindex import StoreConfig


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("retention_s", True, TypeError),  # a bool is not a number of seconds (True would mean 1 s)
        ("retention_s", "3600", TypeError),
        ("retention_s", math.inf, ValueError),
        ("retention_s", math.nan, ValueError),
        ("retention_s", 0, ValueError),
        ("shutdown_timeout_s", 1e300, ValueError),  # beyond what a thread can wait for
        ("shutdown_timeout_s", -1.0, ValueError),
        ("flush_interval_s", False, TypeError),
        ("orphan_grace_s", -1, ValueError),
        ("store_id", 123, TypeError),
        ("store_id", "  ", TypeError),
        ("capacity", 1.5, TypeError),
        ("slots", 0, ValueError),
        # S3 settings: refused here, not later by botocore in words that name
        # no setting ("'int' object is not iterable", "Invalid endpoint").
        ("endpoint_url", 9000, TypeError),
        ("endpoint_url", "localhost:9000", ValueError),
        ("endpoint_url", "", ValueError),
        ("endpoint_url", "http://[::1", ValueError),
        ("region", 1, TypeError),
        ("region", "", ValueError),
        ("region", "eu west", ValueError),
    ],
)
def test_bad_settings_are_refused_by_name(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=f"StoreConfig.{field}"):
        StoreConfig(**{field: value})  # type: ignore[arg-type]


def test_good_settings_are_kept() -> None:
    config = StoreConfig(retention_s=60, orphan_grace_s=0, store_id="writer-a", shutdown_timeout_s=2.5)
    assert (config.retention_s, config.orphan_grace_s, config.store_id) == (60, 0, "writer-a")
    assert StoreConfig(retention_s=None).retention_s is None
    s3 = StoreConfig(endpoint_url="http://[::1]:9000/path", region="eu-west-1")
    assert (s3.endpoint_url, s3.region) == ("http://[::1]:9000/path", "eu-west-1")
