"""Property test: random puts against a dict model, queried on the unsealed
file, after reopen, and on the sealed file."""

from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tieredindex import Entry, IndexFile

KEYS = st.sampled_from(["a", "b", "c", "d", "é", "", "long-key-" * 5])
PUTS = st.lists(
    st.tuples(
        KEYS, st.integers(0, 3), st.integers(0, 2**63 - 1), st.integers(0, 2**32 - 1), st.integers(0, 50)
    ),
    max_size=60,
)
QUERIES = st.lists(
    st.tuples(KEYS, st.integers(0, 50), st.integers(0, 50), st.integers(1, 70)), min_size=1, max_size=10
)


def model_query(puts: list[tuple], key: str, begin: int, end: int, max_count: int) -> list[Entry]:
    hits = [
        (t, i, Entry(q, o, s, t)) for i, (k, q, o, s, t) in enumerate(puts) if k == key and begin <= t <= end
    ]
    hits.sort(key=lambda h: (h[0], h[1]), reverse=True)  # newest time first, later put first
    return [h[2] for h in hits[:max_count]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(puts=PUTS, queries=QUERIES, slots=st.integers(1, 8), spare=st.integers(0, 5))
def test_matches_dict_model(puts: list[tuple], queries: list[tuple], slots: int, spare: int) -> None:
    capacity = max(1, len(puts) - spare)
    with TemporaryDirectory() as d:
        f = IndexFile.create(Path(d) / "p.tix", slots=slots, capacity=capacity, begin_ms=10)
        accepted = [p for p in puts if f.put(*p)]
        assert accepted == puts[:capacity]
        norm = [(q[0], *q[1:]) for q in queries]
        for key, b, e, m in norm:
            begin, end = min(b, e), max(b, e)
            assert f.query(key, begin, end, m) == model_query(accepted, key, begin, end, m)
        f.close()
        g = IndexFile.open(Path(d) / "p.tix")
        s = g.seal(Path(d) / "p.sealed")
        s.verify()
        for key, b, e, m in norm:
            begin, end = min(b, e), max(b, e)
            want = model_query(accepted, key, begin, end, m)
            assert g.query(key, begin, end, m) == want
            assert s.query(key, begin, end, m) == want
