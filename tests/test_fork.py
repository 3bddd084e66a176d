"""A process that forks while it runs a store (``multiprocessing`` with the
fork start method, a pre-fork server): the child shares the parent's maps,
descriptors, file locks and signal handlers, but not its threads. The child
must die of SIGTERM as usual, hold none of the parent's locks, write nothing
to the parent's files (not even at its own exit), and be told plainly that
the parent's store and files are not its own.

Each case runs in a fresh interpreter of its own (a script): forking pytest
itself would copy its fixtures and threads, and signal handlers installed
here would be pytest's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# What every script starts with: a store on a file:// remote, with entries.
STORE_SETUP = """
import gc, multiprocessing, os, signal, sys, time
from pathlib import Path
from tieredindex import IndexFile, IndexStore, StoreConfig, TieredIndexError
directory, remote = Path(sys.argv[1]), Path(sys.argv[2])
def new_store():
    return IndexStore(directory, remote.as_uri(), StoreConfig(slots=64, capacity=1000, max_file_age_s=3600))
store = new_store()
store.start()
for i in range(10):
    store.put("orders", f"k{i}", queue_id=0, offset=i, size=10, timestamp_ms=1_000 + i)
fork = multiprocessing.get_context("fork")
def sleep_long():
    time.sleep(60)
"""


def run_script(tmp_path: Path, body: str, timeout: float = 60) -> list[str]:
    """Runs STORE_SETUP + body in a new interpreter; its stdout lines.
    Fails with the script's stderr if it exits non-zero."""
    script = tmp_path / "script.py"
    script.write_text(STORE_SETUP + textwrap.dedent(body))
    (tmp_path / "remote").mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store"), str(tmp_path / "remote")],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_a_forked_child_of_a_store_with_signal_handlers_dies_of_sigterm(tmp_path: Path) -> None:
    # multiprocessing's Process.terminate() and Pool.terminate() send
    # SIGTERM: the child inherits the store's handler, whose shutdown
    # thread it does not have.
    lines = run_script(
        tmp_path,
        """
        store.install_signal_handlers()
        child = fork.Process(target=sleep_long, daemon=True)
        child.start()
        time.sleep(0.5)
        child.terminate()
        child.join(10)
        print("alive", child.is_alive(), "exitcode", child.exitcode)
        if child.is_alive():
            child.kill()
            child.join()
        # The parent's own SIGTERM handling is untouched: a graceful shutdown.
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("not reached")
        """,
    )
    assert lines == ["alive False exitcode -15"]


def test_a_forked_child_does_not_keep_the_store_directory_locked(tmp_path: Path) -> None:
    # The child inherits the descriptor of the directory lock: while it
    # lived, a store restarted on the directory was refused as "another
    # live store".
    lines = run_script(
        tmp_path,
        """
        child = fork.Process(target=sleep_long, daemon=True)
        child.start()
        time.sleep(0.3)
        print("clean", store.shutdown(timeout_s=10).clean)
        again = new_store()
        again.start()
        print("found", len(again.query("orders", "k3", 0, 10**12)))
        again.shutdown(timeout_s=10)
        child.kill()
        child.join()
        """,
    )
    assert lines == ["clean True", "found 1"]


def test_a_forked_child_does_not_keep_an_index_file_locked(tmp_path: Path) -> None:
    lines = run_script(
        tmp_path,
        """
        path = directory / "lone.tix"
        f = IndexFile.create(path, slots=16, capacity=100, begin_ms=0)
        f.put(b"key", queue_id=0, offset=1, size=2, timestamp_ms=3)
        child = fork.Process(target=sleep_long, daemon=True)
        child.start()
        time.sleep(0.3)
        f.close()
        g = IndexFile.open(path)
        print("count", g.count)
        g.close()
        child.kill()
        child.join()
        store.shutdown(timeout_s=10)
        """,
    )
    assert lines == ["count 1"]


def test_a_forked_child_is_refused_the_parents_store_and_files(tmp_path: Path) -> None:
    lines = run_script(
        tmp_path,
        """
        f = IndexFile.create(directory / "lone.tix", slots=16, capacity=100, begin_ms=0)
        def use_them(out):
            said = []
            for name, call in (
                ("put", lambda: store.put("orders", "x", queue_id=0, offset=99, size=1, timestamp_ms=5)),
                ("query", lambda: store.query("orders", "k1", 0, 10**12)),
                ("flush", store.flush),
                ("shutdown", store.shutdown),
                ("file put", lambda: f.put(b"key", queue_id=0, offset=1, size=2, timestamp_ms=3)),
                ("file query", lambda: f.query(b"key", 0, 10**12, 10)),
            ):
                try:
                    call()
                    said.append(f"{name}: allowed")
                except TieredIndexError as exc:
                    said.append(f"{name}: refused, {'fork' in str(exc) and str(os.getppid()) in str(exc)}")
            # A store of its own, made after the fork, is the child's to use.
            (remote.parent / "child-remote").mkdir()
            own = IndexStore(directory.parent / "child-store", (remote.parent / "child-remote").as_uri())
            own.start()
            own.put("orders", "mine", queue_id=0, offset=7, size=1, timestamp_ms=5)
            said.append(f"own store: {len(own.query('orders', 'mine', 0, 10**12))} found")
            said.append(f"own store clean: {own.shutdown(timeout_s=10).clean}")
            out.put(said)
        out = fork.SimpleQueue()
        child = fork.Process(target=use_them, args=(out,), daemon=True)
        child.start()
        for line in out.get():
            print(line)
        child.join(10)
        f.put(b"key", queue_id=0, offset=1, size=2, timestamp_ms=3)
        print("parent put", len(f.query(b"key", 0, 10**12, 10)), len(store.query("orders", "k1", 0, 10**12)))
        f.close()
        print("clean", store.shutdown(timeout_s=10).clean)
        """,
    )
    assert lines == [
        "put: refused, True",
        "query: refused, True",
        "flush: refused, True",
        "shutdown: refused, True",
        "file put: refused, True",
        "file query: refused, True",
        "own store: 1 found",
        "own store clean: True",
        "parent put 1 1",
        "clean True",
    ]


@pytest.mark.parametrize("how", ["del", "exit"])
def test_a_forked_childs_exit_writes_nothing_to_the_parents_files(tmp_path: Path, how: str) -> None:
    # A plain os.fork() child that ends by returning (not os._exit) runs the
    # interpreter's finalization: its copies of the parent's open files
    # were closed "cleanly", writing a closed state and the child's count
    # into the header the parent is still writing behind.
    ending = "del f; gc.collect(); os._exit(0)" if how == "del" else "sys.exit(0)"
    lines = run_script(
        tmp_path,
        f"""
        path = directory / "lone.tix"
        f = IndexFile.create(path, slots=16, capacity=100, begin_ms=0)
        for i in range(5):
            f.put(b"key%d" % i, queue_id=0, offset=i, size=2, timestamp_ms=3)
        f.flush()
        active = sorted((directory / "active").iterdir())
        before = [p.read_bytes() for p in [path, *active]]
        pid = os.fork()
        if pid == 0:
            {ending}
        os.waitpid(pid, 0)
        after = [p.read_bytes() for p in [path, *active]]
        print("unchanged", [a == b for a, b in zip(before, after)])
        f.close()
        store.shutdown(timeout_s=10)
        """,
    )
    assert lines == ["unchanged [True, True]"]
