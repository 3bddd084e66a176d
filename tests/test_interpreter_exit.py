"""An interpreter that ends while native calls run in daemon threads exits
cleanly: real child processes (the failure was a SIGABRT at exit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A daemon thread hashes with the GIL released, over and over, while the
# main thread exits. The last exit function is one C call that holds the GIL
# long enough for the daemon's call to end and wait for the GIL; no bytecode
# runs between it and the start of finalization, so the daemon is still
# waiting then. A finalizer run during finalization lets go of the GIL: the
# daemon takes it, and CPython before 3.14 ends it there with pthread_exit,
# inside the native module. The finalizer then makes a native call itself:
# the finalizing thread must get the GIL back. (-S: no site hook registers
# an exit function that would run after ours and hand the GIL over too soon.)
SCRIPT = r"""
import atexit, gc, os, random, threading, time

big = [random.random() for _ in range(2_000_000)]
atexit.register(sorted, big)  # registered first: runs last

from tieredindex import crc32c

data = bytes(16 << 20)
started = threading.Event()


def spin():
    while True:
        started.set()
        crc32c(data)


class SleepWhenCollected:
    def __del__(self, sleep=time.sleep, write=os.write, crc32c=crc32c, data=data):
        sleep(0.2)  # the GIL is free: the waiting daemon takes it
        write(1, b"collected %d\n" % crc32c(data))  # the finalizing thread's own call


cycle = SleepWhenCollected()
cycle.me = cycle  # freed by the collection finalization runs, not before
del cycle
gc.disable()
threading.Thread(target=spin, daemon=True).start()
started.wait()
"""


def test_native_call_ending_while_the_interpreter_finalizes() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for run in range(3):
        child = subprocess.run(
            [sys.executable, "-S", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
        )
        assert child.returncode == 0, f"run {run}: exit status {child.returncode}: {child.stderr[-2000:]}"
        assert child.stdout == "collected 2745926978\n", child.stderr[-2000:]


# The application shuts its store down from an exit function registered
# before tieredindex was first imported (atexit runs the last registered
# first). An exit hook of the library's own, which stopped the threads of
# stores never shut down, ran before it and cut that shutdown short.
APP_EXIT_HOOK_SCRIPT = r"""
import atexit, sys

work = sys.argv[1]
stores = []


def app_stop():
    report = stores[0].shutdown(timeout_s=10)
    print("clean:", report.clean, "uploaded:", len(report.uploaded), flush=True)


atexit.register(app_stop)
from tieredindex import IndexStore, StoreConfig

store = IndexStore(f"{work}/store", f"file://{work}/remote", StoreConfig(slots=16, capacity=100))
store.start()
store.put("t", "k", queue_id=0, offset=0, size=1, timestamp_ms=1_000)
stores.append(store)
"""


def test_an_applications_exit_hook_can_still_shut_the_store_down(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", APP_EXIT_HOOK_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == ["clean: True uploaded: 1"], child.stderr[-2000:]
