"""A hypothesis state machine of the whole store against a dict model:
put, query, flush, seal, shutdown then restart, crash then restart, and a
fresh store on an empty directory after a clean shutdown (promise 3)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tieredindex import IndexStore

from store_helpers import FOREVER, crash_in_process, small_config

KEYS = st.sampled_from(["a", "b", "c", "é", "a#b"])
TOPICS = st.sampled_from(["t", "u#v"])


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="tix-model-"))
        self.remote_url = (self.root / "remote").as_uri()
        self.generation = 0
        self.model: dict[tuple[str, str], list[tuple[int, int, int, int]]] = {}
        self.next_offset = 0
        self.store = self._open()

    def _open(self, directory: Path | None = None) -> IndexStore:
        store = IndexStore(directory or self.root / "d", self.remote_url, small_config(capacity=7))
        store.start()
        return store

    def _expected(
        self, topic: str, key: str, begin: int, end: int, max_count: int
    ) -> list[tuple[int, int, int, int]]:
        hits = [e for e in self.model.get((topic, key), []) if begin <= e[3] <= end]
        # Newest first; equal times: the later put first (offsets grow with puts).
        hits.sort(key=lambda e: (e[3], e[1]), reverse=True)
        return hits[:max_count]

    @rule(topic=TOPICS, key=KEYS, queue_id=st.integers(0, 3), ts=st.integers(0, 40))
    def put(self, topic: str, key: str, queue_id: int, ts: int) -> None:
        offset = self.next_offset
        self.next_offset += 1
        self.store.put(topic, key, queue_id=queue_id, offset=offset, size=offset % 7, timestamp_ms=ts)
        self.model.setdefault((topic, key), []).append((queue_id, offset, offset % 7, ts))

    @rule(topic=TOPICS, key=KEYS, a=st.integers(0, 40), b=st.integers(0, 40), max_count=st.integers(1, 30))
    def query(self, topic: str, key: str, a: int, b: int, max_count: int) -> None:
        begin, end = min(a, b), max(a, b)
        got = [tuple(e) for e in self.store.query(topic, key, begin, end, max_count, strict=True)]
        assert got == self._expected(topic, key, begin, end, max_count)

    @rule()
    def flush(self) -> None:
        self.store.flush()

    @rule()
    def seal(self) -> None:
        self.store.seal()

    @rule()
    def shutdown_and_restart(self) -> None:
        assert self.store.shutdown(timeout_s=20).clean
        self.store = self._open()

    @rule()
    def crash_and_restart(self) -> None:
        crash_in_process(self.store)
        self.store = self._open()

    @precondition(lambda self: self.generation < 3)
    @rule()
    def fresh_store_answers_from_remote(self) -> None:
        assert self.store.shutdown(timeout_s=20).clean
        self.generation += 1
        fresh = self._open(self.root / f"fresh-{self.generation}")
        for (topic, key), _ in self.model.items():
            got = [tuple(e) for e in fresh.query(topic, key, 0, FOREVER, 1000, strict=True)]
            assert got == self._expected(topic, key, 0, FOREVER, 1000)
        assert fresh.shutdown().clean
        self.store = self._open()

    @invariant()
    def never_pending_after_clean_close(self) -> None:
        assert not self.store.status().closed

    def teardown(self) -> None:
        try:
            self.store.shutdown(timeout_s=20)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


StoreMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase
