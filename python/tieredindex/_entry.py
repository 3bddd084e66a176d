"""The entry type every query returns."""

from typing import NamedTuple


class Entry(NamedTuple):
    """One indexed message location."""

    queue_id: int
    offset: int
    size: int
    timestamp_ms: int
