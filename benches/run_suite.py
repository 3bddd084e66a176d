"""The whole benchmark suite in one command, and its report (issue 4).

    python benches/run_suite.py            # make bench: ~22 min, writes benches/REPORT.md + benches/plots/
    python benches/run_suite.py --quick    # make bench-quick: < 3 min, writes benches/REPORT-quick.md
    python benches/run_suite.py --render-only   # re-render from the last run's JSON

Runs each piece in its own process (pytest-benchmark for the Python API,
criterion for the bare Rust kernels), keeps every piece's JSON and log under
``benches/results/<full|quick>/``, then renders the Markdown report and the
PNG plots (matplotlib, Agg) from those files alone. Every figure in the
report is a ratio against an anchor measured in the same run; nothing here
asserts a timing. A piece that fails is reported as failed (with the end of
its log), the others still run, and the exit status is 1.

Scratch files go to ``$TIEREDINDEX_BENCH_DIR`` if set, else to a temporary
directory under ``target/`` (on the repository's disk, not a tmpfs); they
are deleted at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
MiB = 1 << 20
MB = 1_000_000
CRC_FLAGS = ("sse4_2", "pclmulqdq", "avx2", "avx512f", "vpclmulqdq")
DEFAULT_SLOTS, DEFAULT_CAPACITY = 5_000_000, 20_000_000
# The second S3 server of the `remote-s3s` step (benches/test_remote_bench.py
# finds it at target/bench-tools/bin/s3s-fs).
S3S_FS_VERSION = "0.14.1"


# ----------------------------------------------------------------------------------------------
# The pieces


@dataclasses.dataclass
class Step:
    name: str
    title: str
    cmd: list[str]
    env: dict[str, str]
    json: str | None  # file name under the results dir (pytest-benchmark JSON)
    timeout_s: int = 1500

    def shell(self, json_path: str | None = None) -> str:
        """The command as one would type it (scratch dir left to the default)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        cmd = [c if c != "{json}" else f"--benchmark-json={json_path or self.json}" for c in self.cmd]
        return (env + " " if env else "") + " ".join(shlex.quote(c) if " " in c else c for c in cmd)


def _pytest(module: str, *extra: str) -> list[str]:
    return ["python", "-m", "pytest", f"benches/{module}", "--benchmark-only", "-q", "{json}", *extra]


def plan(quick: bool) -> list[Step]:
    """What runs, in order. The full suite stays under 25 minutes on 2 cores."""
    if quick:
        rounds = {"TIX_BENCH_CORE_ROUNDS": "1"}
        remote = {
            "TIX_BENCH_LINKS": "10:200",
            "TIX_BENCH_SIZES_MIB": "16",
            "TIX_BENCH_ROUNDS": "1",
            "TIX_BENCH_RSS_MB": "64",
            "TIX_BENCH_CATALOG_FILES": "40",
        }
        return [
            Step("disk", "Disk and memory limits", _pytest("test_disk_bench.py"),
                 {"TIX_BENCH_DISK_MIB": "64", **rounds}, "disk.json"),
            Step("criterion", "Bare Rust kernels (criterion)",
                 ["flock", "/tmp/tieredindex-build.lock", "cargo", "bench", "--bench", "core"],
                 {"TIX_BENCH_QUICK": "1"}, None),
            Step("core", "Local profile by file size", _pytest("test_core_bench.py"),
                 {"TIX_BENCH_SCALES": "1/100,1/10", "TIX_BENCH_FILLS": "1/10,1/2", **rounds}, "core.json"),
            Step("rocketmq", "RocketMQ compacted-file verify", _pytest("test_rocketmq_bench.py"),
                 {"TIX_BENCH_RMQ_SCALE": "1/100", **rounds}, "rocketmq.json"),
            Step("remote-grid", "Remote: one link", _pytest("test_remote_bench.py"), remote,
                 "remote-grid.json"),
        ]  # fmt: skip
    return [
        Step("disk", "Disk and memory limits", _pytest("test_disk_bench.py"), {}, "disk.json"),
        Step("criterion", "Bare Rust kernels (criterion)",
             ["flock", "/tmp/tieredindex-build.lock", "cargo", "bench", "--bench", "core"], {}, None),
        Step("core", "Local profile by file size", _pytest("test_core_bench.py"),
             {"TIX_BENCH_SCALES": "1/100,1/10,1/2,1", "TIX_BENCH_FILLS": "1/100,1/10,1/2"}, "core.json"),
        Step("rocketmq", "RocketMQ compacted-file verify", _pytest("test_rocketmq_bench.py"), {},
             "rocketmq.json"),
        # Round trip x bandwidth, the store's default part size and concurrency.
        Step("remote-grid", "Remote: links",
             _pytest("test_remote_bench.py", "-k", "not rss and not catalog and not verify and not wide and not retention"),
             {"TIX_BENCH_LINKS": "0:inf,10:inf,50:inf,0:200,10:200,50:200,50:100,0:50,10:50,50:50",
              "TIX_BENCH_SIZES_MIB": "64", "TIX_BENCH_ROUNDS": "3"}, "remote-grid.json"),
        # Issue 3's example link once more over plain http, beside the https grid.
        Step("remote-http", "Remote: the example link over plain http",
             _pytest("test_remote_bench.py", "-k", "not rss and not query and not catalog and not verify and not wide and not retention"),
             {"TIX_BENCH_SCHEME": "http", "TIX_BENCH_LINKS": "50:100", "TIX_BENCH_SIZES_MIB": "64",
              "TIX_BENCH_ROUNDS": "3"}, "remote-http.json"),
        # Issue 3's SIGTERM figure on its example link, round by round: its
        # spread across runs, at each step where the clock could stop.
        Step("remote-sigterm", "Remote: SIGTERM on the example link, round by round",
             _pytest("test_remote_bench.py", "-k", "seal_anchor or sigterm"),
             {"TIX_BENCH_LINKS": "50:100", "TIX_BENCH_SIZES_MIB": "64", "TIX_BENCH_ROUNDS": "9"},
             "remote-sigterm.json"),
        # A prefix of many files on issue 3's example link: what a fresh store's
        # first query and a verify cost before any file is read.
        Step("remote-catalog", "Remote: a prefix of many files",
             _pytest("test_remote_bench.py", "-k", "catalog or verify or wide or retention"),
             {"TIX_BENCH_LINKS": "50:100", "TIX_BENCH_CATALOG_FILES": "200", "TIX_BENCH_ROUNDS": "3"},
             "remote-catalog.json"),
        # A file above the multipart threshold on issue 3's example link.
        Step("remote-multipart", "Remote: a multipart-sized upload",
             _pytest("test_remote_bench.py", "-k", "test_upload and not rss"),
             {"TIX_BENCH_LINKS": "50:100", "TIX_BENCH_SIZES_MIB": "256", "TIX_BENCH_ROUNDS": "3"},
             "remote-multipart.json"),
        # Part size x concurrency on a link with 10 MB in flight (50 ms x 200 MB/s). Uploads
        # only: the SIGTERM file (~64 MiB) goes up in one PutObject whatever the part size.
        Step("remote-sweep", "Remote: part size x concurrency",
             _pytest("test_remote_bench.py", "-k", "test_upload and not rss"),
             {"TIX_BENCH_LINKS": "50:200", "TIX_BENCH_UPLOADS": "8:1,8:4,8:8,8:16,16:4,16:8,32:4",
              "TIX_BENCH_SIZES_MIB": "128", "TIX_BENCH_ROUNDS": "2"}, "remote-sweep.json"),
        # The same figures on a second S3 server, s3s-fs (Rust), which does
        # its own work (MD5, CRC-32C, the file write) as the bytes arrive,
        # where moto does it in Python after the last byte: issue 3's targets
        # on a server whose own time is small. Built first, pinned with its
        # lock file (about 3 minutes the first time; cargo then finds it installed).
        Step("s3s-fs-build", "Build the second S3 server (s3s-fs)",
             ["cargo", "install", "--locked", f"s3s-fs@{S3S_FS_VERSION}", "--features", "binary",
              "--root", "target/bench-tools"], {}, None),
        Step("remote-s3s", "Remote: the example link on a second S3 server (s3s-fs)",
             _pytest("test_remote_bench.py", "-k", "seal_anchor or sigterm or (test_upload and not rss)"),
             {"TIX_BENCH_SERVER": "s3s-fs", "TIX_BENCH_LINKS": "50:100", "TIX_BENCH_SIZES_MIB": "64,256",
              "TIX_BENCH_ROUNDS": "9"}, "remote-s3s.json"),
        Step("remote-rss", "Remote: memory of a 600 MB upload",
             _pytest("test_remote_bench.py", "-k", "rss"),
             {"TIX_BENCH_LINKS": "0:inf", "TIX_BENCH_RSS_MB": "600"}, "remote-rss.json"),
    ]  # fmt: skip


def run_step(step: Step, results: Path, scratch: Path) -> dict[str, Any]:
    json_path = results / step.json if step.json else None
    cmd = [sys.executable if c == "python" else c for c in step.cmd]
    cmd = [f"--benchmark-json={json_path}" if c == "{json}" else c for c in cmd]
    if json_path is not None:
        json_path.unlink(missing_ok=True)
    env = {
        **os.environ,
        **step.env,
        "TIEREDINDEX_BENCH_DIR": str(scratch),
        "PYTHONUNBUFFERED": "1",
        "CARGO_TERM_COLOR": "never",
    }
    log = results / f"{step.name}.log"
    started_wall = time.time()
    started = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {step.name}: {step.shell()}", flush=True)
    with log.open("w") as out:
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=step.timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            out.write(f"\n[run_suite] timed out after {step.timeout_s} s\n")
    seconds = time.perf_counter() - started
    print(f"[{time.strftime('%H:%M:%S')}] {step.name}: exit {rc} in {seconds:.0f} s", flush=True)
    info: dict[str, Any] = {
        "name": step.name,
        "title": step.title,
        "shell": step.shell(f"benches/results/{results.name}/{step.json}" if step.json else None),
        "rc": rc,
        "seconds": seconds,
        "started": started_wall,
        "json": step.json,
    }
    if rc != 0:
        info["log_tail"] = log.read_text(errors="replace")[-3000:]
    if step.name == "criterion":
        crit = collect_criterion(ROOT / "target" / "criterion", since=started_wall)
        (results / "criterion.json").write_text(json.dumps(crit, indent=1))
        info["json"] = "criterion.json"
    return info


def collect_criterion(base: Path, since: float) -> dict[str, Any]:
    """Criterion's estimates written by this run (older ones are ignored)."""
    out: dict[str, Any] = {}
    for est in sorted(base.glob("*/*/new/estimates.json")):
        if est.stat().st_mtime < since - 1:
            continue
        new = est.parent
        meta = json.loads((new / "benchmark.json").read_text()) if (new / "benchmark.json").exists() else {}
        e = json.loads(est.read_text())
        row: dict[str, Any] = {
            "median_ns": e["median"]["point_estimate"],
            "mean_ns": e["mean"]["point_estimate"],
            "throughput": meta.get("throughput") or {},
        }
        if (new / "sample.json").exists():
            sample = json.loads((new / "sample.json").read_text())
            row["best_ns"] = min(t / i for t, i in zip(sample["times"], sample["iters"], strict=True))
        out[f"{new.parent.parent.name}/{new.parent.name}"] = row
    return out


# ----------------------------------------------------------------------------------------------
# The machine


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(scratch: Path) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""

    def field(name: str) -> str:
        m = re.search(rf"^{name}\s*:\s*(.*)$", cpuinfo, re.M)
        return m.group(1).strip() if m else "?"

    flags = set(field("flags").split())
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = int(m.group(1)) if (m := re.search(r"MemTotal:\s+(\d+)", meminfo)) else 0
    lscpu = _run(["lscpu"])
    hyper = m.group(1).strip() if (m := re.search(r"Hypervisor vendor:\s*(.*)", lscpu)) else "none"
    source, fstype, options = (
        _run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", str(scratch)]).split() + ["?"] * 3
    )[:3]
    dev = Path(source).name
    block = re.sub(r"p?\d+$", "", dev) if not Path(f"/sys/block/{dev}").exists() else dev

    def sysblock(rel: str) -> str:
        p = Path(f"/sys/block/{block}/{rel}")
        return p.read_text().strip() if p.exists() else "?"

    versions = {}
    for mod in ("numpy", "boto3", "moto", "crc32c", "google_crc32c", "pytest_benchmark", "matplotlib"):
        try:
            from importlib.metadata import version

            versions[mod] = version(mod.replace("_", "-"))
        except Exception:
            versions[mod] = "?"
    git = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = bool(_run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]))
    return {
        "cpu_model": field("model name"),
        "cpu_id": f"family {field('cpu family')} model {field('model')} stepping {field('stepping')}",
        "crc_flags": {f: f in flags for f in CRC_FLAGS},
        "cores": os.cpu_count(),
        "threads_per_core": m.group(1) if (m := re.search(r"Thread\(s\) per core:\s*(\d+)", lscpu)) else "?",
        "hypervisor": hyper,
        "ram_gib": mem_kib / (1 << 20),
        "disk": {
            "scratch": str(scratch),
            "device": source,
            "fstype": fstype,
            "options": options,
            "model": sysblock("device/model"),
            "rotational": sysblock("queue/rotational"),
            "scheduler": sysblock("queue/scheduler"),
            "size_gb": int(sysblock("size")) * 512 / 1e9 if sysblock("size").isdigit() else None,
        },
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release 2>/dev/null && echo $PRETTY_NAME"]) or platform.platform(),
        "python": platform.python_version(),
        "rustc": _run(["rustc", "-V"]),
        "versions": versions,
        "git": git + (" (dirty)" if dirty else ""),
    }


# ----------------------------------------------------------------------------------------------
# Reading the results


class Bench:
    """One pytest-benchmark JSON file, by test name."""

    def __init__(self, path: Path | None) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            for b in json.loads(path.read_text())["benchmarks"]:
                self.rows[b["name"]] = b

    def __bool__(self) -> bool:
        return bool(self.rows)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.rows.get(name)

    def med(self, name: str) -> float | None:
        b = self.rows.get(name)
        return float(b["stats"]["median"]) if b else None

    def info(self, name: str) -> dict[str, Any]:
        b = self.rows.get(name)
        return dict(b["extra_info"]) if b else {}

    def pct(self, name: str, q: float) -> float | None:
        b = self.rows.get(name)
        data = b["stats"].get("data") if b else None
        if not data:
            return None
        data = sorted(data)
        return float(data[min(len(data) - 1, int(q * len(data)))])

    def where(self, prefix: str) -> list[dict[str, Any]]:
        return [b for n, b in self.rows.items() if n.startswith(prefix)]


def fmt_rate(v: float | None, unit: str = "M/s", div: float = 1e6) -> str:
    return "n/a" if v is None else f"{v / div:.2f} {unit}"


def fmt_gbs(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1e9:.2f} GB/s"


def fmt_s(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v < 1e-3:
        return f"{v * 1e6:.2f} µs"
    if v < 1:
        return f"{v * 1e3:.1f} ms"
    return f"{v:.2f} s"


def fmt_x(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}x"


def frac_name(scale: float) -> str:
    for name, value in (("1/100", 0.01), ("1/10", 0.1), ("1/2", 0.5), ("1", 1.0)):
        if abs(scale - value) < 1e-9:
            return name
    return f"{scale:g}"


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# The columns every upload table has: ours beside boto3 at its defaults and
# beside boto3 asked for a full-object checksum.
UPLOAD_HEADER = ("ours MB/s", "boto3 MB/s", "ours / boto3", "boto3 full-object CRC MB/s", "ours / it")


def upload_cells(r: dict[str, Any]) -> tuple[str, ...]:
    """UPLOAD_HEADER's cells for one row of ``Report.remote_links``."""
    return (
        f"{r['ours_mbps']:.0f}",
        f"{r['boto_mbps']:.0f}" if r["boto_mbps"] else "n/a",
        fmt_x(ratio(r["ours_mbps"], r["boto_mbps"])),
        f"{r['boto_full_mbps']:.0f}" if r["boto_full_mbps"] else "n/a",
        fmt_x(ratio(r["ours_mbps"], r["boto_full_mbps"])),
    )


# ----------------------------------------------------------------------------------------------
# The report


class Report:
    def __init__(self, results: Path, plots: Path, meta: dict[str, Any]) -> None:
        self.results = results
        self.plots = plots
        self.meta = meta
        self.steps = {s["name"]: s for s in meta["steps"]}
        self.disk = Bench(results / "disk.json")
        self.core = Bench(results / "core.json")
        self.rmq = Bench(results / "rocketmq.json")
        self.grid = Bench(results / "remote-grid.json")
        self.sweep = Bench(results / "remote-sweep.json")
        self.multipart = Bench(results / "remote-multipart.json")
        self.http = Bench(results / "remote-http.json")
        self.sigterm = Bench(results / "remote-sigterm.json")
        self.s3s = Bench(results / "remote-s3s.json")
        self.rss = Bench(results / "remote-rss.json")
        catalog = Bench(results / "remote-catalog.json")
        self.catalog, self.catalog_step = (
            (catalog, "remote-catalog") if catalog else (self.grid, "remote-grid")
        )
        crit = results / "criterion.json"
        self.crit: dict[str, Any] = json.loads(crit.read_text()) if crit.exists() else {}
        self.out: list[str] = []
        self.headlines: list[tuple[str, str, str, str]] = []
        self.images: list[str] = []
        spawn = self.disk.med("test_spawn")
        self.spawn = spawn or 0.0

    # -- helpers

    def w(self, *lines: str) -> None:
        self.out.extend(lines)

    def how(self, *steps: str) -> str:
        names = ", ".join(f"`{s}`" for s in steps)
        return f"*Reproduce: steps {names} (commands in [How to reproduce](#how-to-reproduce)).*"

    def net(self, seconds: float | None, spawns: int = 1) -> float | None:
        """An external command's time without its process start-up."""
        if seconds is None:
            return None
        return max(seconds - spawns * self.spawn, seconds * 0.05)

    def plot(
        self, name: str, draw: Callable[[Any], None], caption: str, size: tuple[float, float] = (9, 5)
    ) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=size, dpi=100)
        try:
            draw(fig)
            fig.tight_layout()
            self.plots.mkdir(parents=True, exist_ok=True)
            fig.savefig(self.plots / name)
        finally:
            plt.close(fig)
        rel = os.path.relpath(self.plots / name, self.meta["report_dir"])
        self.w("", f"![{caption}]({rel})", "")
        self.images.append(name)

    def scales(self) -> list[float]:
        return sorted({b["extra_info"]["scale"] for b in self.core.where("test_put_batch_fill[")})

    @staticmethod
    def sid(scale: float) -> str:
        return f"s{scale:g}"

    # -- sections

    def render(self) -> str:
        m = self.meta
        title = "tieredindex benchmark report" + (" (quick mode)" if m["quick"] else "")
        self.w(f"# {title}", "")
        self.w(
            f"Generated by `{m['command']}` on {m['date']} (commit {m['machine']['git']}); "
            f"the run took **{m['total_s'] / 60:.1f} minutes**. Every figure below is a ratio "
            "against an anchor measured in the same run, on this machine; medians of the rounds "
            "unless said otherwise. Regenerate everything with `make bench` "
            "(`make bench-quick` for the reduced CI run, which writes `benches/REPORT-quick.md`).",
            "",
        )
        failed = [s for s in m["steps"] if s["rc"] != 0]
        if failed:
            self.w(
                "> **Some pieces failed in this run**: "
                + ", ".join(f"`{s['name']}` (exit {s['rc']})" for s in failed)
                + ". See the end of the report.",
                "",
            )
        body_start = len(self.out)
        self.section_machine()
        self.section_disk()
        self.section_local()
        self.section_scaling()
        self.section_remote()
        self.section_kernels()
        body = self.out[body_start:]
        self.out = self.out[:body_start]
        self.section_headlines()
        self.out += body
        self.section_reproduce()
        self.section_failures()
        return "\n".join(self.out) + "\n"

    def section_headlines(self) -> None:
        self.w("## Headline ratios", "")
        self.w(table(["figure", "ours", "anchor (same run)", "ratio"], self.headlines), "")

    def section_machine(self) -> None:
        mi = self.meta["machine"]
        d = mi["disk"]
        flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in mi["crc_flags"].items())
        self.w("## Machine", "")
        rows = [
            ("CPU", f"{mi['cpu_model']} ({mi['cpu_id']})"),
            ("CRC-relevant flags", flags),
            (
                "cores",
                f"{mi['cores']} ({mi['threads_per_core']} thread(s) per core), hypervisor: {mi['hypervisor']}",
            ),
            ("RAM", f"{mi['ram_gib']:.1f} GiB"),
            (
                "disk (scratch files)",
                f"{d['device']} ({d['fstype']}, {d['options']}); model {d['model']}, "
                f"rotational={d['rotational']}, scheduler {d['scheduler']}"
                + (f", {d['size_gb']:.0f} GB" if d.get("size_gb") else ""),
            ),
            ("kernel / OS", f"{mi['kernel']} / {mi['os']}"),
            ("Python / Rust", f"{mi['python']} / {mi['rustc']}"),
            ("packages", ", ".join(f"{k} {v}" for k, v in mi["versions"].items())),
        ]
        self.w(table(["", ""], rows), "")

    def section_disk(self) -> None:
        d = self.disk
        self.w("## 1. The disk's and memory's own limits (the local anchors)", "")
        if not d:
            self.w("Not measured (the `disk` step failed).", "")
            return
        rows = []
        for how in ("new file", "preallocated", "direct"):
            name = f"test_disk_seq_write[{how}]"
            t = d.med(name)
            if t is not None:
                rows.append(
                    (
                        f"sequential write, dd bs=1M, {how}",
                        fmt_gbs(d.info(name)["bytes"] / self.net(t)),
                        f"`{d.info(name)['what'].split(' of=')[0]} ... {d.info(name)['what'].split(' bs=')[1]}`",
                    )
                )
        for call in ("fsync", "fdatasync", "msync"):
            name = f"test_sync_latency[{call}]"
            if d.get(name):
                rows.append(
                    (
                        f"{call} of one dirty 4 KiB page (median / p99)",
                        f"{fmt_s(d.med(name))} / {fmt_s(d.pct(name, 0.99))}",
                        d.info(name)["what"],
                    )
                )
        if (t := d.med("test_memcpy")) is not None:
            rows.append(
                (
                    "memory copy (read + write)",
                    fmt_gbs(d.info("test_memcpy")["bytes"] / t),
                    d.info("test_memcpy")["what"],
                )
            )
        rows.append(
            (
                "process start-up",
                fmt_s(self.spawn),
                'subprocess.run(["true"]); subtracted from every cp/dd anchor below',
            )
        )
        for b in d.where("test_fio["):
            info = b["extra_info"]
            lat = (
                f"; sync latency p50 {info['sync_lat_ns_p50'] / 1e3:.0f} µs, p99 {info['sync_lat_ns_p99'] / 1e3:.0f} µs"
                if info.get("sync_lat_ns_p50")
                else ""
            )
            rows.append(
                (f"fio: {info['job']}", f"{info['bw_bytes'] / 1e9:.2f} GB/s{lat}", f"`{info['what']}`")
            )
        if not d.where("test_fio["):
            rows.append(("fio", "not installed", "the dd and Python probes above stand in"))
        self.w(table(["probe", "measured", "how"], rows), "")
        self.w(self.how("disk"), "")
        pre = d.med("test_disk_seq_write[preallocated]")
        if pre:
            self.headlines.append(
                (
                    "disk: sequential write into a preallocated file",
                    fmt_gbs(d.info("test_disk_seq_write[preallocated]")["bytes"] / self.net(pre)),
                    "(limit)",
                    "-",
                )
            )

    def local_rows(self) -> dict[float, dict[str, Any]]:
        """Per file size: our figures, their anchors and the fractions."""
        c, out = self.core, {}
        memcpy_t = self.disk.med("test_memcpy")
        memcpy_bw = self.disk.info("test_memcpy")["bytes"] / memcpy_t if memcpy_t else None
        for scale in self.scales():
            s = self.sid(scale)
            r: dict[str, Any] = {"scale": scale}
            fill = c.info(f"test_put_batch_fill[{s}]")
            r["entries"], r["file_bytes"], r["slots"] = fill["entries"], fill.get("file_bytes"), fill["slots"]
            t = c.med(f"test_put_batch_fill[{s}]")
            r["put_batch_s"] = t
            r["put_batch_rate"] = ratio(r["entries"], t)
            crit_name = {
                0.01: "put_batch/fill_1_100_200k",
                0.1: "put_batch/fill_1_10_2M",
                1.0: "put_batch/fill_default_20M",
            }.get(scale)
            cr = self.crit.get(crit_name or "")
            r["rust_rate"] = cr["throughput"].get("Elements", 0) / (cr["median_ns"] / 1e9) if cr else None
            # The same job as the Python call: keys hashed inside the timed loop.
            ck = self.crit.get(f"{crit_name}_keys" if crit_name else "")
            r["rust_keys_rate"] = (
                ck["throughput"].get("Elements", 0) / (ck["median_ns"] / 1e9) if ck else None
            )
            for style in ("vectorized", "loop"):
                name = f"test_put_batch_numpy[{s}-{style}]"
                r[f"numpy_{style}_rate"] = ratio(c.info(name).get("entries"), c.med(name))
            r["put_batch_bw"] = ratio(r["file_bytes"], t)
            r["memcpy_bw"] = memcpy_bw
            n_single = c.info(f"test_put_single_loop[{s}-put]").get("entries")
            r["put_rate"] = ratio(n_single, c.med(f"test_put_single_loop[{s}-put]"))
            r["call_rate"] = ratio(n_single, c.med(f"test_put_single_loop[{s}-key_fingerprint_of]"))
            r["query_s"] = c.med(f"test_query_unsealed[{s}-IndexFile.query]")
            r["sealed_query_s"] = c.med(f"test_sealed_query[{s}-random keys]")
            r["call_s"] = c.med(f"test_query_unsealed[{s}-key_fingerprint_of]")
            r["seal_s"] = c.med(f"test_seal_full[{s}-fsync]")
            r["seal_nosync_s"] = c.med(f"test_seal_full[{s}-no fsync]")
            r["sealed_bytes"] = c.info(f"test_seal_full[{s}-fsync]").get("sealed_bytes")
            r["cp_s"] = self.net(c.med(f"test_seal_anchor_cp[{s}-cp]"))
            r["cp_sync_s"] = self.net(c.med(f"test_seal_anchor_cp[{s}-cp+sync]"), 2)
            r["flush_s"] = c.med(f"test_flush_full[{s}]")
            r["dd_new_s"] = self.net(c.med(f"test_flush_anchor_dd[{s}-new file]"))
            r["dd_pre_s"] = self.net(c.med(f"test_flush_anchor_dd[{s}-preallocated]"))
            r["recover_s"] = c.med(f"test_recover_crashed[{s}]")
            r["read_s"] = self.net(c.med(f"test_recover_anchor_read[{s}]"))
            out[scale] = r
        return out

    def section_local(self) -> None:
        self.w("## 2. Local profile: our operations by file size, as a fraction of the limit", "")
        if not self.core:
            self.w("Not measured (the `core` step failed).", "")
            return
        rows = self.local_rows()
        self.w(
            "File sizes are fractions of RocketMQ's default index file (5,000,000 slots, 20,000,000 "
            "entries; our unsealed form of it is 820 MB). Keys are `key-<16 hex>` strings, each put 10 "
            'times in shuffled order. "Fraction of limit" is anchor time / our time for the same bytes '
            "(1.00 = as fast as the anchor; above 1 = faster). Anchors run as external commands have the "
            f"measured process start-up ({fmt_s(self.spawn)}) subtracted.",
            "",
        )
        self.w("**put_batch** (whole file, batches of up to 1,000,000, numpy columns):", "")
        self.w(
            table(
                [
                    "size",
                    "entries",
                    "ours",
                    "bare Rust, same job (criterion)",
                    "ours / it",
                    "bare Rust kernel, fingerprints given",
                    "ours / kernel",
                    "numpy vectorized",
                    "ours / numpy vec.",
                    "numpy loop",
                    "ours / numpy loop",
                    "file bytes/s, fraction of memcpy",
                ],
                [
                    (
                        frac_name(r["scale"]),
                        f"{r['entries']:,}",
                        fmt_rate(r["put_batch_rate"]),
                        fmt_rate(r["rust_keys_rate"]),
                        fmt_x(ratio(r["put_batch_rate"], r["rust_keys_rate"])),
                        fmt_rate(r["rust_rate"]),
                        fmt_x(ratio(r["put_batch_rate"], r["rust_rate"])),
                        fmt_rate(r["numpy_vectorized_rate"]),
                        fmt_x(ratio(r["put_batch_rate"], r["numpy_vectorized_rate"])),
                        fmt_rate(r["numpy_loop_rate"]),
                        fmt_x(ratio(r["put_batch_rate"], r["numpy_loop_rate"])),
                        f"{fmt_gbs(r['put_batch_bw'])} = {fmt_x(ratio(r['put_batch_bw'], r['memcpy_bw']))}",
                    )
                    for r in rows.values()
                ],
            ),
            "",
        )
        self.w(
            "The numpy baseline is `NumpyIndex` in `benches/test_core_bench.py`: keys hashed with "
            "`hash(key.encode())`, `slot = hash % slots`, `next[item] = head[slot]; head[slot] = item` on "
            "preallocated arrays (vectorized per batch with a stable argsort by slot, or a plain loop over "
            "100,000 entries), columns copied into preallocated arrays. It does not checksum entries or "
            "write a file, so it does less than `put_batch`. The bare Rust figures are criterion's "
            "(`benches/rust/core.rs`): *same job* is `put_batch/<size>_keys`, which hashes the batch's "
            "keys (one `String` per put, in put order, as the Python bench passes one `str` per put) and "
            "inserts them, all in the timed loop, i.e. what the Python call does minus Python; *kernel* "
            "is `put_batch/<size>`, with the fingerprints computed before the clock starts.",
            "",
        )
        self.w(
            "**put** (one call per entry from a Python loop), **query** (random keys with 10 entries each):",
            "",
        )
        self.w(
            table(
                [
                    "size",
                    "put",
                    "native call floor (key_fingerprint_of loop)",
                    "put / floor",
                    "IndexFile.query",
                    "SealedIndex.query",
                    "call floor",
                    "floor / query (unsealed, sealed)",
                ],
                [
                    (
                        frac_name(r["scale"]),
                        fmt_rate(r["put_rate"]),
                        fmt_rate(r["call_rate"]),
                        fmt_x(ratio(r["put_rate"], r["call_rate"])),
                        fmt_s(r["query_s"]),
                        fmt_s(r["sealed_query_s"]),
                        fmt_s(r["call_s"]),
                        f"{fmt_x(ratio(r['call_s'], r['query_s']))}, {fmt_x(ratio(r['call_s'], r['sealed_query_s']))}",
                    )
                    for r in rows.values()
                ],
            ),
            "",
        )
        self.w("**seal** of the full file (input: the unsealed file):", "")
        self.w(
            table(
                ["size", "file", "seal, no fsync", "cp (net)", "fraction of cp", "seal, fsync", "cp + sync (net)",
                 "fraction of cp+sync", "sealed size"],
                [
                    (
                        frac_name(r["scale"]),
                        f"{(r['file_bytes'] or 0) / 1e6:.0f} MB",
                        fmt_s(r["seal_nosync_s"]),
                        fmt_s(r["cp_s"]),
                        fmt_x(ratio(r["cp_s"], r["seal_nosync_s"])),
                        fmt_s(r["seal_s"]),
                        fmt_s(r["cp_sync_s"]),
                        fmt_x(ratio(r["cp_sync_s"], r["seal_s"])),
                        f"{(r['sealed_bytes'] or 0) / 1e6:.0f} MB",
                    )
                    for r in rows.values()
                ],
            ),
            "",
        )  # fmt: skip
        self.w("**flush** right after the fill, and **recovery** (open of a crash image):", "")
        self.w(
            table(
                ["size", "flush", "dd fsync, preallocated (net)", "fraction of it", "dd fsync, new file (net)",
                 "fraction of it", "recover", "read, dd of=/dev/null (net)", "fraction of read"],
                [
                    (
                        frac_name(r["scale"]),
                        fmt_s(r["flush_s"]),
                        fmt_s(r["dd_pre_s"]),
                        fmt_x(ratio(r["dd_pre_s"], r["flush_s"])),
                        fmt_s(r["dd_new_s"]),
                        fmt_x(ratio(r["dd_new_s"], r["flush_s"])),
                        fmt_s(r["recover_s"]),
                        fmt_s(r["read_s"]),
                        fmt_x(ratio(r["read_s"], r["recover_s"])),
                    )
                    for r in rows.values()
                ],
            ),
            "",
        )  # fmt: skip
        self.w(
            "seal marks the file sealed (and syncs it), reads it, checks every entry, sorts entries by slot and "
            "writes the smaller sealed form, fsynced unless `durable=False` (what the store does before an "
            "upload); `cp` only copies, `cp+sync` adds the fsync. flush is an msync of "
            "every page dirtied by the fill; the anchor is `dd conv=notrunc,fsync` of as many MiB into a "
            "preallocated file (our files are preallocated), and, for context, into a new file. The crash "
            'image is the full file copied while open (header still "open", as `rust/index.rs`\'s '
            "`crash_image_is_rebuilt` does), so `IndexFile.open` rebuilds the slot table from the "
            "checksummed entries; its anchor reads the same bytes from the page cache.",
            "",
        )
        self.w(self.how("core", "criterion", "disk"), "")

        def draw_fractions(fig: Any) -> None:
            ax = fig.add_subplot(1, 1, 1)
            xs = [r["entries"] for r in rows.values()]
            series = [
                (
                    "put_batch / bare Rust (same job)",
                    [ratio(r["put_batch_rate"], r["rust_keys_rate"]) for r in rows.values()],
                ),
                ("put / native call floor", [ratio(r["put_rate"], r["call_rate"]) for r in rows.values()]),
                ("seal (no fsync) vs cp", [ratio(r["cp_s"], r["seal_nosync_s"]) for r in rows.values()]),
                ("seal (fsync) vs cp+sync", [ratio(r["cp_sync_s"], r["seal_s"]) for r in rows.values()]),
                (
                    "flush vs dd fsync (preallocated)",
                    [ratio(r["dd_pre_s"], r["flush_s"]) for r in rows.values()],
                ),
                ("recover vs read", [ratio(r["read_s"], r["recover_s"]) for r in rows.values()]),
                (
                    "sealed query: call floor / query",
                    [ratio(r["call_s"], r["sealed_query_s"]) for r in rows.values()],
                ),
            ]
            for label, ys in series:
                pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=label)
            ax.axhline(1.0, color="grey", lw=1, ls="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("entries in the file (file size scales with it)")
            ax.set_ylabel("fraction of the limit (anchor time / our time)")
            ax.set_title("Local profile: our operations against the machine's limits, same run")
            ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)

        self.plot("local_fraction_of_limit.png", draw_fractions, "fraction of the limit by file size")

        def draw_rates(fig: Any) -> None:
            ax = fig.add_subplot(1, 1, 1)
            xs = [r["entries"] for r in rows.values()]
            for key, label in (
                ("put_batch_rate", "put_batch (Python API)"),
                ("rust_keys_rate", "bare Rust, same job (criterion)"),
                ("rust_rate", "bare Rust kernel, fingerprints given"),
                ("numpy_vectorized_rate", "plain numpy, vectorized"),
                ("numpy_loop_rate", "plain numpy, loop"),
                ("put_rate", "put, one call per entry"),
            ):
                pts = [(x, r[key] / 1e6) for x, r in zip(xs, rows.values(), strict=True) if r.get(key)]
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("entries in the file")
            ax.set_ylabel("million entries / s")
            ax.set_title("Insert rate: put_batch beside bare Rust and a plain-numpy hash-slot insert")
            ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)

        self.plot("put_batch_rates.png", draw_rates, "insert rates by file size")
        big = rows[max(rows)]
        name = frac_name(big["scale"])
        self.headlines += [
            (
                f"put_batch, {name} default file",
                fmt_rate(big["put_batch_rate"]),
                f"plain numpy vectorized {fmt_rate(big['numpy_vectorized_rate'])}",
                fmt_x(ratio(big["put_batch_rate"], big["numpy_vectorized_rate"])) + " faster",
            ),
            (
                f"put_batch, {name} default file",
                fmt_rate(big["put_batch_rate"]),
                f"bare Rust, same job (keys hashed) {fmt_rate(big['rust_keys_rate'])}; "
                f"kernel alone (fingerprints given) {fmt_rate(big['rust_rate'])}",
                fmt_x(ratio(big["put_batch_rate"], big["rust_keys_rate"]))
                + " / "
                + fmt_x(ratio(big["put_batch_rate"], big["rust_rate"]))
                + " of it",
            ),
            (
                f"seal, {name} default file",
                f"{fmt_s(big['seal_nosync_s'])} / {fmt_s(big['seal_s'])} with fsync",
                f"cp {fmt_s(big['cp_s'])} / cp+sync {fmt_s(big['cp_sync_s'])}",
                f"{fmt_x(ratio(big['seal_nosync_s'], big['cp_s']))} / {fmt_x(ratio(big['seal_s'], big['cp_sync_s']))} their time",
            ),
            (
                f"flush, {name} default file",
                fmt_s(big["flush_s"]),
                f"dd conv=fsync prealloc. {fmt_s(big['dd_pre_s'])}, new file {fmt_s(big['dd_new_s'])}",
                f"{fmt_x(ratio(big['flush_s'], big['dd_pre_s']))} / {fmt_x(ratio(big['flush_s'], big['dd_new_s']))} their time",
            ),
            (
                f"recovery (rebuild), {name} default file",
                fmt_s(big["recover_s"]),
                f"dd read {fmt_s(big['read_s'])}",
                f"{fmt_x(ratio(big['recover_s'], big['read_s']))} its time",
            ),
            (
                f"sealed query, {name} default file",
                fmt_s(big["sealed_query_s"]),
                f"native call floor {fmt_s(big['call_s'])}",
                f"{fmt_x(ratio(big['sealed_query_s'], big['call_s']))} its time",
            ),
            (
                f"put (single), {name} default file",
                fmt_rate(big["put_rate"]),
                f"native call floor {fmt_rate(big['call_rate'])}",
                fmt_x(ratio(big["put_rate"], big["call_rate"])) + " of it",
            ),
        ]

    def section_scaling(self) -> None:
        import numpy as np

        self.w("## 3. Scaling: growth with file size and entry count", "")
        if not self.core:
            self.w("Not measured.", "")
            return
        rows = self.local_rows()
        # seal without the fsync of the sealed copy: the CPU and memory work, not the disk's mood.
        ops = [("put_batch", "put_batch_s"), ("seal", "seal_nosync_s"), ("recover", "recover_s")]
        anchors = {
            "put_batch": ("numpy vectorized", lambda r: ratio(r["entries"], r["numpy_vectorized_rate"])),
            "seal": ("cp", lambda r: r["cp_s"]),
            "recover": ("dd read", lambda r: r["read_s"]),
        }
        largest = rows[max(rows)] if rows else None
        partial: dict[str, list[tuple[int, float]]] = {op: [] for op, _ in ops}
        partial_geom = None
        for op, test in (
            ("put_batch", "partial_put_batch"),
            ("seal", "partial_seal"),
            ("recover", "partial_recover"),
        ):
            for b in self.core.where(f"test_{test}["):
                partial[op].append((b["extra_info"]["entries"], b["stats"]["median"]))
                partial_geom = b["extra_info"]
            full_key = dict(ops)[op]
            if partial[op] and largest and largest.get(full_key):
                partial[op].append((largest["entries"], largest[full_key]))  # the full file
            partial[op].sort()

        def slope(pts: list[tuple[float, float]]) -> float | None:
            if len(pts) < 2:
                return None
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            return float(np.polyfit(x, y, 1)[0])

        def linfit(pts: list[tuple[float, float]]) -> tuple[float, float, float] | None:
            if len(pts) < 2:
                return None
            x, y = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
            b, a = np.polyfit(x, y, 1)
            pred = a + b * x
            ss = float(((y - y.mean()) ** 2).sum())
            r2 = 1 - float(((y - pred) ** 2).sum()) / ss if ss else 1.0
            return float(a), float(b), r2

        def verdict(s: float | None) -> str:
            if s is None:
                return "n/a"
            if abs(s - 1) <= 0.15:
                return "linear"
            return "sub-linear" if s < 1 else "super-linear"

        fit_rows = []
        fits: dict[str, dict[str, Any]] = {}
        for op, key in ops:
            pts = [(r["entries"], r[key]) for r in rows.values() if r.get(key)]
            upper = [p for p in pts if p[0] >= 0.1 * DEFAULT_CAPACITY] or pts
            s_all, s_up = slope(pts), slope(upper)
            anchor_name, anchor_t = anchors[op]
            apts = [(r["entries"], anchor_t(r)) for r in rows.values() if anchor_t(r)]
            a_up = slope([p for p in apts if p[0] >= 0.1 * DEFAULT_CAPACITY] or apts)
            pp = partial[op]
            plf = linfit(pp)
            fits[op] = {"pts": pts, "slope": s_all, "partial": pp, "pslope": slope(pp)}
            per_entry = ", ".join(
                f"{frac_name(r['scale'])}: {r[key] / r['entries'] * 1e9:.0f}"
                for r in rows.values()
                if r.get(key)
            )
            fit_rows.append(
                (
                    op,
                    per_entry,
                    f"{s_all:.2f}" if s_all is not None else "n/a",
                    f"{s_up:.2f} → **{verdict(s_up)}**" if s_up is not None else "n/a",
                    f"{a_up:.2f} ({anchor_name})" if a_up is not None else "n/a",
                    (
                        f"slope {slope(pp):.2f}; {plf[1] * 1e9:.1f} ns/entry + {plf[0] * 1e3:.1f} ms (R² {plf[2]:.3f})"
                        if plf
                        else "n/a"
                    ),
                )
            )
        self.w(
            "Full files of each size (slots and entries scale together), and, at the largest size, the same "
            "file filled to 1/100, 1/10, 1/2 and all of its capacity (entries grow, slot table fixed). Slope "
            "is the least-squares slope of log(time) on log(entries): 1 is linear growth. The verdict uses "
            "the sizes from 1/10 up, where fixed costs (process, syscalls, a fresh map) no longer dominate; "
            "the anchor's slope (the same anchor as in section 2, same sizes) shows what the machine itself "
            "does over that range. seal is timed without the fsync of the sealed copy here (the fsync's "
            "time on this virtual disk varies more than the work does; it is in section 2).",
            "",
        )
        self.w(
            table(
                [
                    "operation",
                    "ns per entry by size",
                    "log-log slope (all sizes)",
                    "slope from 1/10 up",
                    "anchor's slope from 1/10 up",
                    "entry count at fixed size"
                    + (f" ({partial_geom['slots']:,} slots)" if partial_geom else "")
                    + ": slope; time = per entry x entries + fixed",
                ],
                fit_rows,
            ),
            "",
        )

        def draw(fig: Any) -> None:
            ax = fig.add_subplot(1, 1, 1)
            colors = {"put_batch": "C0", "seal": "C1", "recover": "C2"}
            for op, f in fits.items():
                if f["pts"]:
                    x, y = zip(*f["pts"], strict=True)
                    lab = f"{op}: full files (slope {f['slope']:.2f})" if f["slope"] is not None else op
                    ax.plot(x, y, marker="o", color=colors[op], label=lab)
                if f["partial"]:
                    x, y = zip(*f["partial"], strict=True)
                    lab = f"{op}: fixed size, partly filled" + (
                        f" (slope {f['pslope']:.2f})" if f["pslope"] is not None else ""
                    )
                    ax.plot(x, y, marker="s", ls="--", color=colors[op], alpha=0.7, label=lab)
            allx = [p[0] for f in fits.values() for p in f["pts"] + f["partial"]]
            if allx:
                lo, hi = min(allx), max(allx)
                ref = [p for p in fits["put_batch"]["pts"] if p[0] == hi]
                if ref:
                    k = ref[0][1] / hi
                    ax.plot(
                        [lo, hi],
                        [k * lo, k * hi],
                        color="grey",
                        ls=":",
                        lw=1,
                        label="slope 1 (linear), through put_batch",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("entries")
            ax.set_ylabel("seconds (median)")
            ax.set_title("Scaling of put_batch, seal and recovery")
            ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)

        self.plot("scaling.png", draw, "scaling of put_batch, seal and recovery")
        self.w(self.how("core"), "")

    def remote_links(self, b: Bench) -> list[dict[str, Any]]:
        """Per (link, upload config): ours and boto3 MB/s, SIGTERM and its floor."""
        seals = {x["extra_info"]["link"]: x for x in b.where("test_seal_anchor[")}
        boto, boto_full = (
            {
                (x["extra_info"]["link"], x["extra_info"]["bytes"]): x
                for x in b.where("test_upload[")
                if x["extra_info"]["impl"] == impl
            }
            for impl in ("boto3", "boto3-full")
        )
        sig = {
            (x["extra_info"]["link"], x["extra_info"]["part_size"], x["extra_info"]["concurrency"]): x
            for x in b.where("test_sigterm_to_verified_remote[")
        }
        out = []
        for x in b.where("test_upload["):
            i = x["extra_info"]
            if i["impl"] != "ours":
                continue
            a = boto.get((i["link"], i["bytes"]))
            af = boto_full.get((i["link"], i["bytes"]))
            r: dict[str, Any] = {
                "link": i["link"],
                "rtt_ms": i["rtt_ms"],
                "mbps": i["mbps"],
                "bytes": i["bytes"],
                "part": i["part_size"],
                "conc": i["concurrency"],
                "ours_mbps": i["bytes"] / x["stats"]["median"] / MB,
                "boto_mbps": a["extra_info"]["bytes"] / a["stats"]["median"] / MB if a else None,
                "boto_full_mbps": af["extra_info"]["bytes"] / af["stats"]["median"] / MB if af else None,
                # Multipart uploads only (older result files have none).
                "phases": i.get("phases_s"),
                "boto_phases": a["extra_info"].get("phases_s") if a else None,
                "boto_full_phases": af["extra_info"].get("phases_s") if af else None,
            }
            s, seal = sig.get((i["link"], i["part_size"], i["concurrency"])), seals.get(i["link"])
            if s and seal:
                sealed = seal["extra_info"]["sealed_bytes"]
                transfer = sealed / (i["mbps"] * MB) if i["mbps"] else 0.0
                r.update(
                    # Until shutdown() returned (copy verified and recorded);
                    # older result files only have the time to the exit.
                    sigterm_s=s["extra_info"].get("verified_s", s["stats"]["median"]),
                    exited_s=s["extra_info"].get("exited_s"),
                    seal_s=seal["stats"]["median"],
                    transfer_s=transfer,
                    sealed_bytes=sealed,
                    breakdown=s["extra_info"].get("breakdown_s", {}),
                    scheme=s["extra_info"].get("scheme", "http"),
                    server_own_s=s["extra_info"].get("server_own_s"),
                    floor_s=seal["stats"]["median"] + transfer + 2 * i["rtt_ms"] / 1000,
                )
                if r["boto_mbps"]:
                    # What boto3 needs to move as many bytes over this link to this server.
                    r["practical_floor_s"] = seal["stats"]["median"] + sealed / (r["boto_mbps"] * MB)
            out.append(r)
        return out

    def upload_headlines(self, figure: str, r: dict[str, Any]) -> None:
        """Headline rows for one upload: ours beside boto3 at its defaults and
        beside boto3 asked for a full-object checksum."""
        for key, anchor in (
            ("boto_mbps", "boto3 upload_file"),
            ("boto_full_mbps", "boto3 upload_file with a full-object checksum"),
        ):
            if r[key]:
                self.headlines.append(
                    (
                        figure,
                        f"{r['ours_mbps']:.0f} MB/s",
                        f"{anchor} {r[key]:.0f} MB/s",
                        fmt_x(ratio(r["ours_mbps"], r[key])),
                    )
                )

    def multipart_phases(self, r: dict[str, Any]) -> None:
        """Where a multipart upload's time goes, ours beside boto3's, each
        timed by the client's own event hooks (start and end of every S3 call)."""
        ours, boto, full = r.get("phases"), r.get("boto_phases"), r.get("boto_full_phases")
        if not (ours and boto):
            return
        self.w(
            "Where the time goes (medians; each client's S3 calls timed by its own botocore event hooks). "
            "*Create + parts*: from the first call's start to the last UploadPart's end, the bytes on the "
            "link. *Complete*: the CompleteMultipartUpload, in which moto joins the parts; asked for a "
            "FULL_OBJECT checksum, it also gathers every part into a second buffer, copies that once more "
            "and takes its CRC (moto 5.2, `MultipartChecksumBuilder`), where S3 combines the parts' CRCs. "
            "*Verify*: our HEAD after it (boto3 makes none):",
            "",
        )
        rows = []
        for phase, label in (
            ("parts", "create + parts"),
            ("complete", "complete"),
            ("verify", "verify (HEAD)"),
        ):
            rows.append(
                (
                    label,
                    fmt_s(ours.get(phase)),
                    fmt_s(boto.get(phase)),
                    fmt_x(ratio(ours.get(phase), boto.get(phase))),
                    fmt_s(full.get(phase)) if full else "n/a",
                    fmt_x(ratio(ours.get(phase), full.get(phase))) if full else "n/a",
                )
            )
        self.w(
            table(
                [
                    "phase",
                    "ours",
                    "boto3",
                    "ours / boto3 (time)",
                    "boto3 full-object CRC",
                    "ours / it (time)",
                ],
                rows,
            ),
            "",
        )
        for phase, label in (("parts", "create + parts"), ("complete", "CompleteMultipartUpload")):
            if ours.get(phase) and boto.get(phase):
                self.headlines.append(
                    (
                        f"upload {r['bytes'] / MiB:.0f} MiB (multipart), {r['link']} link: {label} alone",
                        fmt_s(ours[phase]),
                        f"boto3 upload_file {fmt_s(boto[phase])}"
                        + (
                            f", with a full-object checksum {fmt_s(full[phase])}"
                            if full and full.get(phase)
                            else ""
                        ),
                        f"{fmt_x(ratio(ours[phase], boto[phase]))} its time",
                    )
                )

    def example_over_schemes(self, https: dict[str, Any], http: dict[str, Any]) -> None:
        """Issue 3's example link over https (the grid) and plain http, with
        the SIGTERM figure ended at each step of the shutdown."""
        self.w(
            "**The example link (50 ms / 100 MB/s) over https and over plain http.** The `remote-http` step "
            "measures it once more with the proxy speaking plain HTTP, where botocore hashes every upload "
            "with SHA-256 for the signature (boto3's as ours) and nobody pays for TLS. The SIGTERM figure "
            "ends when `shutdown()` returns; the two columns before it end it earlier, when the verifying "
            "HEAD returned (the remote copy is verified) and when the manifest record was written (the copy "
            "is visible to readers), each over the same floor:",
            "",
        )
        rows = []
        for r in (https, http):
            b = r.get("breakdown", {})
            rows.append(
                (
                    r["scheme"],
                    f"{r['ours_mbps']:.0f}",
                    f"{r['boto_mbps']:.0f}" if r["boto_mbps"] else "n/a",
                    fmt_x(ratio(r["ours_mbps"], r["boto_mbps"])),
                    fmt_x(ratio(r["ours_mbps"], r["boto_full_mbps"])),
                    fmt_s(r.get("floor_s")),
                    fmt_x(ratio(b.get("head"), r.get("floor_s"))),
                    fmt_x(ratio(b.get("manifest"), r.get("floor_s"))),
                    f"{fmt_s(r.get('sigterm_s'))} = {fmt_x(ratio(r.get('sigterm_s'), r.get('floor_s')))}",
                    fmt_s(b.get("sealed")),
                )
            )
        self.w(
            table(
                [
                    "scheme",
                    "ours MB/s",
                    "boto3 MB/s",
                    "ours / boto3",
                    "ours / boto3 full-object",
                    "SIGTERM floor",
                    "to HEAD verified / floor",
                    "to manifest written / floor",
                    "to shutdown() returned / floor",
                    "seal done (child)",
                ],
                rows,
            ),
            "",
        )
        self.w(self.how("remote-grid", "remote-http"), "")
        if http.get("floor_s"):
            self.headlines.append(
                (
                    "SIGTERM → verified remote copy (~64 MiB), same link over plain http",
                    fmt_s(http["sigterm_s"]),
                    f"floor {fmt_s(http['floor_s'])}",
                    fmt_x(ratio(http["sigterm_s"], http["floor_s"])),
                )
            )

    def catalog_section(self) -> None:
        """A fresh store's first query, a shallow verify, and a query of a key
        over all the files, over a prefix of many files: per file, a record to
        read (for verify also a HEAD; for the query, the file's slot)."""
        runs = [
            (what, x)
            for name, what in (
                ("test_remote_catalog[", "fresh store: `start()` + first query"),
                ("test_remote_verify[", "`tieredindex verify` (shallow)"),
                ("test_remote_wide_query[", "query of a key over all the files (footers cached)"),
                ("test_remote_retention[", "retention: one round deleting every file (all expired)"),
            )
            for x in self.catalog.where(name)
        ]
        if not runs:
            return
        files = runs[0][1]["extra_info"]["files"]
        self.w(
            f"**A prefix of {files} files**: what a store on an empty directory pays before its first answer "
            "(it lists the manifest and reads every file's record: the remote layout describes itself), what "
            "a shallow verify pays (each file's record and a HEAD of its object), what a query of one key "
            "over all time pays once the footers are cached (each file's slot record), and what retention pays to "
            "delete them all (each file's record read, then deleted, then its object). The files are small, "
            "so round trips are the whole cost. The anchor is one GET of a record through the same link; the "
            "floor is the per-file requests as many at once as the store runs them (the store's small reads: "
            "`READS_PER_UPLOAD` x `upload_concurrency` = 32; verify: 8; retention: half the small reads, 16), "
            "plus the listings and, for the first "
            "query, its own file (footer, slot, entries):",
            "",
        )
        rows = []
        for what, x in runs:
            i = x["extra_info"]
            got, get_s, requests = x["stats"]["median"], i["get_s"], i["floor_requests"]
            one_by_one = i["serial_requests"] * get_s
            rows.append(
                (
                    what,
                    f"{i['rtt_ms']:g} ms / " + ("unlimited" if i["mbps"] is None else f"{i['mbps']:g} MB/s"),
                    fmt_s(got),
                    fmt_s(get_s),
                    f"{fmt_s(requests * get_s)} ({requests} round trips)",
                    fmt_x(ratio(got, requests * get_s)),
                    fmt_s(one_by_one),
                )
            )
            if i["rtt_ms"] == 50 and i["mbps"] == 100:
                self.headlines.append(
                    (
                        f"{what}, {i['files']} remote files, 50 ms / 100 MB/s link",
                        fmt_s(got),
                        f"floor {fmt_s(requests * get_s)} ({requests} round trips; one by one {fmt_s(one_by_one)})",
                        fmt_x(ratio(got, requests * get_s)),
                    )
                )
        self.w(
            table(["what", "link", "time", "one GET", "floor", "time / floor", "one by one"], rows),
            "",
            self.how(self.catalog_step),
            "",
        )

    def second_server_section(self) -> None:
        """The `remote-s3s` step: the upload and SIGTERM figures once more, on
        s3s-fs instead of moto."""
        if "remote-s3s" not in self.steps:
            return
        rows = sorted(self.remote_links(self.s3s), key=lambda r: r["bytes"])
        link = rows[0]["link"] if rows else "50 ms / 100 MB/s"
        self.w(
            f"**The same figures on a second S3 server: s3s-fs {S3S_FS_VERSION}** (the s3s project's S3 "
            f"service over a directory, in Rust; step `remote-s3s`, link {link}, the same proxy, https and "
            "clients). moto does its own work for a request in Python after the body's last byte: for a "
            "PutObject it MD5s the body and copies it into its store; for a FULL_OBJECT "
            "CompleteMultipartUpload it also gathers the parts and takes their CRC. The floors count none "
            "of that. s3s-fs hashes a body (MD5, and the CRC-32C it checks: a wrong one gets BadDigest, "
            "which moto does not give) as the bytes arrive and writes them to its file, as S3 does its work "
            "while receiving. For a multipart upload it checks no part checksum and copies the parts into "
            "one file on complete, for boto3's uploads as for ours. It lacks ListMultipartUploads, which "
            "these figures do not use (a store starting on it logs that it could not sweep earlier "
            "uploads, and goes on).",
            "",
        )
        if not rows:
            self.w("Not measured (the `remote-s3s` step failed: see the end of the report).", "")
            return
        out = []
        for r in rows:
            upload = f"{r['bytes'] / MiB:.0f} MiB" + (" (multipart)" if r["phases"] else "")
            out.append((upload, *upload_cells(r)))
            self.upload_headlines(f"upload {upload}, {r['link']} link, on s3s-fs", r)
        self.w(table(["upload", *UPLOAD_HEADER], out), "")
        own = rows[0].get("server_own_s")
        if own is not None and math.isfinite(own):
            self.w(
                f"The server's own time for the ~64 MiB PutObject, sent straight to it (no link; the "
                f"loopback transfer included): {fmt_s(own)} on s3s-fs; on moto, see the links table above.",
                "",
            )
        self.sigterm_rounds(self.s3s, "remote-s3s", "on s3s-fs")

    def sigterm_rounds(self, bench: Bench, step: str, on: str = "") -> None:
        """The step ``step`` (``remote-sigterm``, or ``remote-s3s`` on the
        server ``on``): every round of the SIGTERM figure on issue 3's example
        link, stopped at each step of the shutdown, and how many rounds fall
        within the target at each."""
        seal = next(iter(bench.where("test_seal_anchor[")), None)
        sig = next(iter(bench.where("test_sigterm_to_verified_remote[")), None)
        if not seal or not sig or not sig["extra_info"].get("rounds_s"):
            self.w(f"SIGTERM round by round: not measured (the `{step}` step failed).", "")
            return
        info = sig["extra_info"]
        transfer = seal["extra_info"]["sealed_bytes"] / (info["mbps"] * MB) if info["mbps"] else 0.0
        floor = seal["stats"]["median"] + transfer + 2 * info["rtt_ms"] / 1000
        ends = (
            ("head", "HEAD verified"),
            ("manifest", "manifest written"),
            ("shut down", "shutdown() returned"),
        )
        rounds = info["rounds_s"]
        rows = []
        for n, b in enumerate(rounds, start=1):
            row: list[str] = [str(n), fmt_s(b.get("sealed"))]
            for key, _ in ends:
                row.append(f"{fmt_s(b.get(key))} = {fmt_x(ratio(b.get(key), floor))}")
            row.append(fmt_s(b.get("exited")))
            rows.append(row)
        summary = ["within 1.30x", ""]
        for key, _ in ends:
            ratios = sorted(r for b in rounds if (r := ratio(b.get(key), floor)) is not None)
            within = sum(r <= 1.3 for r in ratios)
            summary.append(
                f"**{within} of {len(ratios)}** (median {fmt_x(ratios[len(ratios) // 2])}, "
                f"{fmt_x(ratios[0])} to {fmt_x(ratios[-1])})"
            )
        summary.append("")
        rows.append(summary)
        self.w(
            f"**SIGTERM round by round{on and ', ' + on}** (the `{step}` step, link {info['link']}): "
            f"{len(rounds)} broker "
            f"children, one after another, each sealing ~64 MiB and shutting down on SIGTERM. The floor, "
            f"{fmt_s(floor)} = the seal measured in the same step ({fmt_s(seal['stats']['median'])}) + "
            f"{fmt_s(transfer)} + 2 round trips, is issue 3's: its two round trips are the PutObject and the "
            "verifying HEAD. Each column stops the clock at a later step: the HEAD that verifies the copy "
            "(size and CRC-32C), the manifest record that makes it visible to readers (a third round "
            "trip, not in the floor), and `shutdown()` returning (journal written, local original "
            "deleted):",
            "",
            table(
                ["round", "seal done", *(f"{name} / floor" for _, name in ends), "child's exit"],
                rows,
            ),
            "",
            self.how(step),
            "",
        )
        for key, name in ends:
            ratios = sorted(r for b in rounds if (r := ratio(b.get(key), floor)) is not None)
            self.headlines.append(
                (
                    f"SIGTERM → {name} (~64 MiB), 50 ms / 100 MB/s, {len(ratios)} rounds{on and ', ' + on}",
                    f"{sum(r <= 1.3 for r in ratios)} of {len(ratios)} within 1.30x",
                    f"floor {fmt_s(floor)}",
                    f"median {fmt_x(ratios[len(ratios) // 2])} ({fmt_x(ratios[0])} to {fmt_x(ratios[-1])})",
                )
            )

    def section_remote(self) -> None:
        self.w("## 4. Remote profile: upload and shutdown through a shaped link", "")
        self.w(
            "A moto S3 server on 127.0.0.1 behind `tests/netproxy.py` (its own process): `RTT` is added as a "
            "delay line (half each way), bandwidth is a token bucket per direction shared by all connections. "
            "The proxy is an https endpoint: it ends TLS, as an S3 front end does, and speaks plain HTTP to "
            "moto, so every client pays for TLS and does what botocore does over https (no SHA-256 of the "
            "body for the signature when a checksum is sent). Connection set-up (TCP and TLS handshakes) is "
            "not delayed: moto's server closes every connection after one response, and the free set-up "
            "stands in for the kept-alive connections clients reuse on real S3. "
            "*Upload*: `S3Remote.put_if_absent` of a file of random bytes (`If-None-Match: *`, the whole "
            "object's CRC-32C; below the store's multipart threshold of 100 MB, AWS's own advice, one "
            "PutObject streamed from the file, above it a multipart upload with CRC-32C per part) plus the "
            "HEAD that verifies it, beside boto3's `upload_file` (s3transfer, default "
            "`TransferConfig`: 8 MiB parts, 10 threads) of the same file on the same link. *SIGTERM*: a "
            "broker child (`benches/sigterm_child.py`) whose last file seals to ~64 MiB gets SIGTERM; the "
            "time runs until its `shutdown()` returns having uploaded, verified (HEAD) and recorded (manifest "
            "record, journal) that file; the child must then exit 0 (its exit time is shown too), and the "
            "remote copy is checked (manifest record, size, CRC-32C, `SealedIndex.verify`). Its floor is the seal "
            "of the same file measured in the same run (`durable=False`, as the store seals) + sealed size / "
            "bandwidth + 2 round trips.",
            "",
        )
        grid = self.remote_links(self.grid)
        if not grid:
            self.w("Not measured (the `remote-grid` step failed).", "")
        else:
            size = grid[0]["bytes"] / MiB
            self.w(f"**Links** (default part size and concurrency; {size:.0f} MiB upload):", "")
            rows = []
            for r in sorted(grid, key=lambda r: (r["rtt_ms"], -(r["mbps"] or 1e9))):
                bw = "unlimited" if r["mbps"] is None else f"{r['mbps']:g} MB/s"
                rows.append(
                    (
                        f"{r['rtt_ms']:g} ms",
                        bw,
                        f"{r['part'] // MiB} MiB x {r['conc']}",
                        *upload_cells(r),
                        f"{r['ours_mbps'] / r['mbps']:.0%}" if r["mbps"] else "-",
                        fmt_s(r.get("sigterm_s")),
                        (
                            f"{fmt_s(r['floor_s'])} (seal {fmt_s(r['seal_s'])}"
                            + (f" + {fmt_s(r['transfer_s'])}" if r["mbps"] else "")
                            + (" + 2 RTT)" if r["rtt_ms"] else ")")
                            if "floor_s" in r
                            else "n/a"
                        ),
                        fmt_x(ratio(r.get("sigterm_s"), r.get("floor_s"))),
                        fmt_s(r.get("practical_floor_s")),
                        fmt_x(ratio(r.get("sigterm_s"), r.get("practical_floor_s"))),
                        fmt_s(r.get("server_own_s")),
                        fmt_s(r.get("exited_s")),
                    )
                )
            self.w(
                table(
                    [
                        "RTT",
                        "bandwidth",
                        "parts",
                        *UPLOAD_HEADER,
                        "of link",
                        "SIGTERM → verified",
                        "floor",
                        "SIGTERM / floor",
                        "practical floor",
                        "SIGTERM / practical floor",
                        "moto's own time for the storing request",
                        "child's exit after SIGTERM",
                    ],
                    rows,
                ),
                "",
            )
            self.w(
                "The floor counts the link only; on this loopback test bed the S3 server (moto, Python) and "
                "the proxy cap throughput well below an unlimited or 200 MB/s link, so the *practical floor* "
                "replaces size / bandwidth with the time boto3's `upload_file` needed for as many bytes on "
                "the same link in the same run (its round trips and the server's work included): seal + "
                'sealed size / boto3 MB/s. "moto\'s own time for the storing request" is that request for the '
                "same object sent straight to moto (no link): the streamed PutObject for a file below the "
                "multipart threshold (moto reads the body, then MD5s and checksums it in Python), else "
                "CompleteMultipartUpload. It is server work that the floor does not count. *boto3 "
                "full-object CRC* is `upload_file` with `ExtraArgs={'ChecksumCRC32': ...}` (the file's CRC-32, "
                "computed before the clock starts, as ours comes from the seal): a FULL_OBJECT checksum like ours, "
                "so the server does the same whole-object work on complete (CRC-32, since botocore computes "
                "CRC-32C only with awscrt). moto runs with "
                "`MOTO_S3_DEFAULT_KEY_BUFFER_SIZE` = 1 GiB, so parts and objects stay in its memory instead of "
                "being spooled to a temporary file on this disk (for boto3's uploads as for ours).",
                "",
            )
            example = next((r for r in grid if r["rtt_ms"] == 50 and r["mbps"] == 100), None)
            steps = [r for r in grid if r.get("breakdown")]
            if steps:
                r = (
                    example
                    if example in steps
                    else max(steps, key=lambda r: r["rtt_ms"] * 1000 - (r["mbps"] or 0))
                )
                b = ", ".join(f"{k} {v:.3f}" for k, v in r["breakdown"].items())
                self.w(
                    f"Where a shutdown's time goes (seconds after SIGTERM at which each step ended, median round, link {r['link']}): {b}.",
                    "",
                )
            self.w(self.how("remote-grid"), "")
            if example:
                # The link issue 3 names as its example: 50 ms round trip, 100 MB/s.
                self.upload_headlines(f"upload {size:.0f} MiB, 50 ms / 100 MB/s link", example)
            http = next(
                (r for r in self.remote_links(self.http) if r["rtt_ms"] == 50 and r["mbps"] == 100), None
            )
            if example and http:
                self.example_over_schemes(example, http)
            if example and example.get("floor_s"):
                with_server = example["floor_s"] + (example.get("server_own_s") or 0)
                self.headlines.append(
                    (
                        "SIGTERM → verified remote copy (~64 MiB), 50 ms / 100 MB/s link",
                        fmt_s(example["sigterm_s"]),
                        f"floor {fmt_s(example['floor_s'])}; floor + moto's own time {fmt_s(with_server)}",
                        f"{fmt_x(ratio(example['sigterm_s'], example['floor_s']))} / "
                        f"{fmt_x(ratio(example['sigterm_s'], with_server))}",
                    )
                )
            # Median and range over the links, one headline row each.
            for figure, median_text, anchor, values in (
                (
                    f"upload {size:.0f} MiB",
                    "median ours/boto3 {:.2f}x",
                    "boto3 upload_file, same link",
                    [ratio(r["ours_mbps"], r["boto_mbps"]) for r in grid],
                ),
                (
                    f"upload {size:.0f} MiB",
                    "median ours/boto3 full-object {:.2f}x",
                    "boto3 upload_file with a FULL_OBJECT checksum, same link",
                    [ratio(r["ours_mbps"], r["boto_full_mbps"]) for r in grid],
                ),
                (
                    "SIGTERM → verified remote copy (~64 MiB)",
                    "median {:.2f}x the floor",
                    "seal + size/bandwidth + 2 RTT",
                    [ratio(r.get("sigterm_s"), r.get("floor_s")) for r in grid],
                ),
                (
                    "SIGTERM → verified remote copy (~64 MiB)",
                    "median {:.2f}x the practical floor",
                    "seal + boto3's time for the same bytes, same link",
                    [ratio(r.get("sigterm_s"), r.get("practical_floor_s")) for r in grid],
                ),
            ):
                got = sorted(v for v in values if v)
                if got:
                    self.headlines.append(
                        (
                            f"{figure}, {len(got)} link(s)",
                            median_text.format(got[len(got) // 2]),
                            anchor,
                            f"{got[0]:.2f}x - {got[-1]:.2f}x",
                        )
                    )

            def draw(fig: Any) -> None:
                import numpy as np

                rs = sorted(grid, key=lambda r: (r["rtt_ms"], -(r["mbps"] or 1e9)))
                labels = [
                    f"{r['rtt_ms']:g} ms\n" + ("unlim." if r["mbps"] is None else f"{r['mbps']:g} MB/s")
                    for r in rs
                ]
                x = np.arange(len(rs))
                ax = fig.add_subplot(1, 2, 1)
                ax.bar(x - 0.27, [r["ours_mbps"] for r in rs], 0.27, label="ours (put_if_absent + HEAD)")
                ax.bar(x, [r["boto_mbps"] or 0 for r in rs], 0.27, label="boto3 upload_file")
                ax.bar(
                    x + 0.27,
                    [r["boto_full_mbps"] or 0 for r in rs],
                    0.27,
                    label="boto3 upload_file, full-object CRC",
                )
                ax.scatter(
                    x, [r["mbps"] or np.nan for r in rs], marker="_", s=300, color="k", label="link bandwidth"
                )
                ax.set_xticks(x, labels, fontsize=7)
                ax.set_ylabel("MB/s (median)")
                ax.set_title(f"Upload {size:.0f} MiB")
                ax.legend(fontsize=7)
                ax2 = fig.add_subplot(1, 2, 2)
                w = 0.27
                ax2.bar(x - w, [r.get("sigterm_s", np.nan) for r in rs], w, label="SIGTERM → verified copy")
                ax2.bar(x, [r.get("practical_floor_s", np.nan) for r in rs], w, label="practical floor")
                ax2.bar(x + w, [r.get("floor_s", np.nan) for r in rs], w, label="floor (link only)")
                ax2.set_xticks(x, labels, fontsize=7)
                ax2.set_ylabel("seconds (median)")
                ax2.set_title("Shutdown, last file ~64 MiB")
                ax2.legend(fontsize=7)

            self.plot("remote_links.png", draw, "upload throughput and shutdown time by link", (13, 5))
        self.sigterm_rounds(self.sigterm, "remote-sigterm")
        queries = sorted(
            (x for x in self.grid.where("test_remote_query[")),
            key=lambda x: (x["extra_info"]["rtt_ms"], -(x["extra_info"]["mbps"] or 1e9)),
        )
        if queries:
            files = queries[0]["extra_info"]["files"]
            self.w(
                f"**Queries from the remote**: `IndexStore.query` of a key that is in {files} uploaded files, "
                "from a fresh store on an empty directory (every file remote; the catalog and footers loaded by a "
                "first query), beside one 16 KiB ranged GET of one of those objects through the same link. Each "
                "file costs two verified ranged GETs (slot record, run of entries); the store reads a query's "
                "remote files at once, so the floor is two GETs, where file by file it would be two per file:",
                "",
            )
            rows = []
            for x in queries:
                i = x["extra_info"]
                got, get_s = x["stats"]["median"], i["ranged_get_s"]
                rows.append(
                    (
                        f"{i['rtt_ms']:g} ms",
                        "unlimited" if i["mbps"] is None else f"{i['mbps']:g} MB/s",
                        fmt_s(got),
                        fmt_s(get_s),
                        fmt_s(2 * get_s),
                        fmt_x(ratio(got, 2 * get_s)),
                        fmt_s(2 * get_s * files),
                    )
                )
                if i["rtt_ms"] == 50 and i["mbps"] == 100:
                    self.headlines.append(
                        (
                            f"query, key in {files} remote files, 50 ms / 100 MB/s link",
                            fmt_s(got),
                            f"2 ranged GETs {fmt_s(2 * get_s)} (file by file {fmt_s(2 * get_s * files)})",
                            fmt_x(ratio(got, 2 * get_s)),
                        )
                    )
            self.w(
                table(
                    [
                        "RTT",
                        "bandwidth",
                        "query",
                        "one ranged GET",
                        "floor: 2 GETs",
                        "query / floor",
                        "file by file (2 GETs x files)",
                    ],
                    rows,
                ),
                "",
            )
            self.w(self.how("remote-grid"), "")
        self.catalog_section()
        multipart = self.remote_links(self.multipart)
        if multipart:
            r = multipart[0]
            size = r["bytes"] / MiB
            self.w(
                f"**A file above the multipart threshold** ({size:.0f} MiB on link {r['link']}; "
                f"{r['part'] // MiB} MiB parts, {r['conc']} at a time; boto3 at its defaults on the same link):",
                "",
            )
            self.w(
                table(
                    list(UPLOAD_HEADER),
                    [upload_cells(r)],
                ),
                "",
            )
            self.multipart_phases(r)
            self.w(self.how("remote-multipart"), "")
            self.upload_headlines(f"upload {size:.0f} MiB (multipart), {r['link']} link", r)
        self.second_server_section()
        sweep = self.remote_links(self.sweep)
        if sweep:
            size = sweep[0]["bytes"] / MiB
            self.w(
                f"**Part size x concurrency** on link {sweep[0]['link']} ({size:.0f} MiB upload; boto3 at its defaults on the same link):",
                "",
            )
            rows = []
            for r in sorted(sweep, key=lambda r: (r["part"], r["conc"])):
                rows.append(
                    (
                        f"{r['part'] // MiB} MiB",
                        r["conc"],
                        *upload_cells(r),
                    )
                )
            self.w(
                table(
                    [
                        "part size",
                        "concurrency",
                        *UPLOAD_HEADER,
                    ],
                    rows,
                ),
                "",
            )
            self.w(self.how("remote-sweep"), "")

            def draw_sweep(fig: Any) -> None:
                ax = fig.add_subplot(1, 1, 1)
                parts = sorted({r["part"] for r in sweep})
                for part in parts:
                    rs = sorted((r for r in sweep if r["part"] == part), key=lambda r: r["conc"])
                    ax.plot(
                        [r["conc"] for r in rs],
                        [r["ours_mbps"] for r in rs],
                        marker="o",
                        label=f"ours, {part // MiB} MiB parts",
                    )
                boto = [r["boto_mbps"] for r in sweep if r["boto_mbps"]]
                if boto:
                    ax.axhline(sorted(boto)[len(boto) // 2], color="grey", ls="--", label="boto3 upload_file")
                ticks = sorted({r["conc"] for r in sweep})
                ax.set_xscale("log", base=2)
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.set_xlabel("concurrency")
                ax.set_ylabel("MB/s (median)")
                ax.set_title(f"Upload {size:.0f} MiB, {sweep[0]['link']}")
                ax.legend(fontsize=7)

            self.plot("remote_sweep.png", draw_sweep, "part size and concurrency sweep", (7, 5))
        rss = [x for x in (self.rss.where("test_upload_rss[") or self.grid.where("test_upload_rss["))]
        if rss:
            by = {x["extra_info"]["impl"]: x["extra_info"] for x in rss}
            ours, boto = by.get("ours"), by.get("boto3")
            if ours:
                mb = ours.get("bytes", 0) / MB
                self.w(
                    f"**Memory** of one {mb:.0f} MB upload (peak RSS above idle, child process, link {ours['link']}):",
                    "",
                )
                rows = [
                    (
                        "ours",
                        f"{ours['above_idle_mib']:.0f} MiB",
                        f"{ours['budget_mib']:.0f} MiB (part size x concurrency + 64 MiB)",
                        f"{ours['upload_s']:.2f} s",
                    )
                ]
                if boto:
                    rows.append(
                        (
                            "boto3 upload_file",
                            f"{boto['above_idle_mib']:.0f} MiB",
                            "-",
                            f"{boto['upload_s']:.2f} s",
                        )
                    )
                self.w(table(["", "peak RSS above idle", "budget", "upload time"], rows), "")
                if boto:
                    self.headlines.append(
                        (
                            f"RSS above idle, {mb:.0f} MB upload",
                            f"{ours['above_idle_mib']:.0f} MiB",
                            f"boto3 {boto['above_idle_mib']:.0f} MiB",
                            fmt_x(ratio(ours["above_idle_mib"], boto["above_idle_mib"])),
                        )
                    )
                self.w(self.how("remote-rss" if self.rss else "remote-grid"), "")

    def section_kernels(self) -> None:
        self.w("## 5. Checksums, bare kernels and RocketMQ verify", "")
        c = self.core
        rows = []
        for size_name, size in (("1MiB", 1 << 20), ("64MiB", 64 << 20)):
            t = {
                impl: c.med(f"test_crc32c[{impl}-{size_name}-{size}]")
                for impl in ("tieredindex", "crc32c", "google_crc32c")
            }
            cr = self.crit.get(f"crc32c/{size_name}")
            rust = size / (cr["median_ns"] / 1e9) if cr else None
            if t["tieredindex"]:
                rows.append(
                    (
                        size_name,
                        fmt_gbs(size / t["tieredindex"]),
                        fmt_gbs(rust),
                        fmt_gbs(size / t["crc32c"]) if t["crc32c"] else "n/a",
                        fmt_x(ratio(t["crc32c"], t["tieredindex"])),
                        fmt_gbs(size / t["google_crc32c"]) if t["google_crc32c"] else "n/a",
                        fmt_x(ratio(t["google_crc32c"], t["tieredindex"])),
                    )
                )
        if rows:
            self.w(
                "**crc32c** (`tieredindex.crc32c` from Python, the same kernel bare in Rust, and the two packages):",
                "",
            )
            self.w(
                table(
                    [
                        "buffer",
                        "ours (Python)",
                        "bare Rust",
                        "crc32c pkg",
                        "ours / crc32c",
                        "google-crc32c",
                        "ours / google-crc32c",
                    ],
                    rows,
                ),
                "",
            )
            self.w(self.how("core", "criterion"), "")
            last = rows[-1]
            self.headlines.insert(
                0,
                (
                    "crc32c 64 MiB",
                    last[1],
                    f"crc32c {last[3]}, google-crc32c {last[5]}",
                    f"{last[4]} / {last[6]}",
                ),
            )

            def draw(fig: Any) -> None:
                import numpy as np

                ax = fig.add_subplot(1, 1, 1)
                x = np.arange(len(rows))
                for k, (col, label) in enumerate(
                    ((1, "tieredindex (Python)"), (2, "bare Rust"), (3, "crc32c pkg"), (5, "google-crc32c"))
                ):
                    vals = [float(r[col].split()[0]) if r[col] != "n/a" else 0 for r in rows]
                    ax.bar(x + (k - 1.5) * 0.2, vals, 0.2, label=label)
                ax.set_xticks(x, [r[0] for r in rows])
                ax.set_ylabel("GB/s (median)")
                ax.set_title("CRC-32C throughput")
                ax.legend(fontsize=8)

            self.plot("crc32c.png", draw, "crc32c throughput")
        if self.crit:
            self.w("**Criterion** (bare Rust, no Python in the loop; median, and best sample):", "")
            crow = []
            for name, r in sorted(self.crit.items()):
                tp = r["throughput"]
                rate = ""
                if "Bytes" in tp:
                    rate = fmt_gbs(tp["Bytes"] / (r["median_ns"] / 1e9))
                elif "Elements" in tp:
                    rate = fmt_rate(tp["Elements"] / (r["median_ns"] / 1e9))
                crow.append(
                    (
                        f"`{name}`",
                        fmt_s(r["median_ns"] / 1e9),
                        fmt_s(r.get("best_ns", r["median_ns"]) / 1e9),
                        rate,
                    )
                )
            self.w(table(["bench", "median", "best", "throughput"], crow), "")
            seal, copy = (
                next((v for k, v in self.crit.items() if k.startswith(p)), None)
                for p in ("seal/full_", "seal/copy_")
            )
            if seal and copy:
                self.w(
                    f"Bare-Rust seal vs `std::fs::copy` of the same file: {fmt_x(seal['median_ns'] / copy['median_ns'])} its time.",
                    "",
                )
            self.w(self.how("criterion"), "")
        b = self.rmq.get("test_rocketmq_verify_vs_dd")
        if b:
            i = b["extra_info"]
            self.w(
                f"**RocketMQ** compacted index file of {i['bytes'] / 1e6:.0f} MB ({i['items']:,} items), structural verify vs `dd` read of it, page cache: "
                f"verify {i['bytes'] / i['verify_median_s'] / 1e9:.2f} GB/s, dd {i['bytes'] / i['dd_median_s'] / 1e9:.2f} GB/s: "
                f"**{i['ratio_median']:.0%}** of dd (best rounds {i['ratio_best']:.0%})"
                + (
                    f"; cold: {i['cold_dd_s'] / i['cold_verify_s']:.0%}"
                    if "cold_verify_s" in i
                    else "; cold caches not measured (drop_caches not writable)"
                )
                + ".",
                "",
            )
            self.w(self.how("rocketmq"), "")
            self.headlines.append(
                (
                    "RocketMQ compacted file verify",
                    f"{i['bytes'] / i['verify_median_s'] / 1e9:.2f} GB/s",
                    f"dd read {i['bytes'] / i['dd_median_s'] / 1e9:.2f} GB/s",
                    f"{i['ratio_median']:.2f}x",
                )
            )

    def section_reproduce(self) -> None:
        self.w("## How to reproduce", "")
        self.w(
            f'Everything: `{self.meta["command"]}` (needs `pip install -e ".[test,bench]"`, cargo, dd, cp; fio '
            "is used if installed). It runs these steps in order, each in its own process, keeps their JSON and "
            "logs under `benches/results/` and renders this file from them "
            "(`python benches/run_suite.py --render-only` re-renders without re-running). Any single step can be "
            "run alone with its command below; the scratch directory is `$TIEREDINDEX_BENCH_DIR` (the suite "
            "points it at a temporary directory under `target/`).",
            "",
        )
        rows = []
        for s in self.meta["steps"]:
            rows.append(
                (
                    f"`{s['name']}`",
                    s["title"],
                    f"`{s['shell']}`",
                    f"{s['seconds']:.0f} s",
                    "ok" if s["rc"] == 0 else f"exit {s['rc']}",
                )
            )
        self.w(table(["step", "what", "command", "time", "status"], rows), "")
        self.w(
            "Criterion's own results are read from `target/criterion/<group>/<bench>/new/` (only those written by "
            "this run). The environment variables are documented at the top of each bench module.",
            "",
        )

    def section_failures(self) -> None:
        failed = [s for s in self.meta["steps"] if s["rc"] != 0]
        if not failed:
            return
        self.w("## Failed steps", "")
        for s in failed:
            self.w(
                f"### `{s['name']}` (exit {s['rc']})",
                "",
                "```",
                s.get("log_tail", "").strip()[-2500:],
                "```",
                "",
            )


# ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the reduced CI run (< 3 minutes)")
    parser.add_argument("--render-only", action="store_true", help="re-render from the last run's results")
    parser.add_argument("--steps", help="comma-separated step names to run (default: all)")
    parser.add_argument(
        "--out", type=Path, help="report path (default benches/REPORT.md, or REPORT-quick.md)"
    )
    parser.add_argument("--plots", type=Path, help="plot directory (default benches/plots, or plots-quick)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    results = BENCHES / "results" / mode
    out = args.out or BENCHES / ("REPORT-quick.md" if args.quick else "REPORT.md")
    plots = args.plots or BENCHES / ("plots-quick" if args.quick else "plots")
    results.mkdir(parents=True, exist_ok=True)
    meta_path = results / "meta.json"

    if args.render_only:
        meta = json.loads(meta_path.read_text())
    else:
        started = time.perf_counter()
        parent = os.environ.get("TIEREDINDEX_BENCH_DIR")
        if parent is None:
            (ROOT / "target").mkdir(exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="bench-scratch-", dir=parent or ROOT / "target"))
        wanted = set(args.steps.split(",")) if args.steps else None
        previous = json.loads(meta_path.read_text()) if wanted and meta_path.exists() else {"steps": []}
        done = {s["name"]: s for s in previous["steps"]}
        try:
            machine = machine_info(scratch)
            for step in plan(args.quick):
                if wanted is None or step.name in wanted:
                    done[step.name] = run_step(step, results, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        order = [s.name for s in plan(args.quick)]
        meta = {
            "quick": args.quick,
            "command": "make bench-quick" if args.quick else "make bench",
            "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine,
            "steps": [done[n] for n in order if n in done],
            "total_s": time.perf_counter() - started
            if wanted is None
            else sum(s["seconds"] for s in done.values()),
        }
        meta_path.write_text(json.dumps(meta, indent=1))
    meta["report_dir"] = str(out.resolve().parent)
    if plots.exists():
        for old in plots.glob("*.png"):
            old.unlink()
    report = Report(results, plots, meta).render()
    out.write_text(report)
    print(
        f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} and {len(list(plots.glob('*.png')))} plots in {plots}; total {meta['total_s'] / 60:.1f} min"
    )
    return 0 if all(s["rc"] == 0 for s in meta["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
