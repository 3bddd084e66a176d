"""Prints the issue-2 speed table from a pytest-benchmark JSON file.

    pytest benches/test_core_bench.py --benchmark-only --benchmark-json=/tmp/core-bench.json
    python benches/report_core.py /tmp/core-bench.json [--criterion target/criterion] [--scale s1]

Every figure is the median of its rounds; "best ratio" compares the best
rounds of both sides instead (steadier on a shared, noisy machine). The
bare-Rust put rates come from criterion's ``put_batch/fill_default_20M_keys``
(the same job: keys hashed in the loop) and ``put_batch/fill_default_20M``
(the kernel alone, fingerprints given) (run
``cargo bench --bench core`` first); without it that row says so. With
several file sizes in the JSON (``TIX_BENCH_SCALES``), the table is of the
largest unless ``--scale`` names another (``s0.1``, ...); the full suite's
report is ``benches/run_suite.py``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load(path: Path) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in json.loads(path.read_text())["benchmarks"]}


def criterion_rate(criterion_dir: Path, name: str = "fill_default_20M") -> tuple[float, float] | None:
    """Entries/s of a bare Rust fill (criterion median, best sample), or None."""
    new = criterion_dir / "put_batch" / name / "new"
    if not (new / "estimates.json").exists():
        return None
    ns = json.loads((new / "estimates.json").read_text())["median"]["point_estimate"]
    elements = 20_000_000
    if (new / "benchmark.json").exists():
        throughput = json.loads((new / "benchmark.json").read_text()).get("throughput") or {}
        elements = throughput.get("Elements", elements)
    best_ns = ns
    if (new / "sample.json").exists():
        sample = json.loads((new / "sample.json").read_text())
        best_ns = min(t / i for t, i in zip(sample["times"], sample["iters"], strict=True))
    return float(elements) / (ns / 1e9), float(elements) / (best_ns / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path)
    parser.add_argument("--criterion", type=Path, default=ROOT / "target" / "criterion")
    parser.add_argument("--scale", help="test id of the file size, e.g. s1 (default: the largest)")
    args = parser.parse_args()
    b = load(args.json)
    scales = {
        v["name"].split("[", 1)[1].rstrip("]"): v["extra_info"]["scale"]
        for v in b.values()
        if v["name"].startswith("test_put_batch_fill[")
    }
    sid = args.scale or (max(scales, key=lambda k: scales[k]) if scales else "s1")
    rows: list[tuple[str, ...]] = []

    def stat(name: str, which: str = "median") -> float | None:
        return b[name]["stats"][which] if name in b else None

    def add(
        figure: str,
        ours: float | None,
        anchor: float | None,
        fmt: Callable[[float], str],
        ratio: float | None,
        best_ratio: float | None,
        target: str,
        met: Callable[[float], bool] | None,
    ) -> None:
        """`met` judges the ratio when there is an anchor, else the figure itself."""
        judged = ratio if anchor is not None else ours
        rows.append(
            (
                figure,
                fmt(ours) if ours is not None else "n/a",
                fmt(anchor) if anchor is not None else "-",
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{best_ratio:.2f}x" if best_ratio is not None else "-",
                target,
                "-" if met is None or judged is None else ("yes" if met(judged) else "NO"),
            )
        )

    def gbs(v: float) -> str:
        return f"{v / 1e9:.1f} GB/s"

    def mps(v: float) -> str:
        return f"{v / 1e6:.2f} M/s"

    def secs(v: float) -> str:
        return f"{v:.3f} s"

    def us(v: float) -> str:
        return f"{v * 1e6:.2f} us"

    def kib(v: float) -> str:
        return f"{v:+.0f} KiB"

    def speed_ratio(ours: str, anchor: str, which: str) -> float | None:
        """How many times faster ours is (anchor time / our time)."""
        o, a = stat(ours, which), stat(anchor, which)
        return a / o if o and a else None

    def time_ratio(ours: str, anchor: str, which: str) -> float | None:
        """Our time in units of the anchor's time."""
        o, a = stat(ours, which), stat(anchor, which)
        return o / a if o and a else None

    for size_name, size in (("1MiB", 1 << 20), ("64MiB", 64 << 20)):
        ours_name = f"test_crc32c[tieredindex-{size_name}-{size}]"
        ours_t = stat(ours_name)
        for anchor_lib, target in (("crc32c", ">= 1.5x"), ("google_crc32c", "(info)")):
            anchor_name = f"test_crc32c[{anchor_lib}-{size_name}-{size}]"
            anchor_t = stat(anchor_name)
            add(
                f"crc32c {size_name} vs {anchor_lib}",
                size / ours_t if ours_t else None,
                size / anchor_t if anchor_t else None,
                gbs,
                speed_ratio(ours_name, anchor_name, "median"),
                speed_ratio(ours_name, anchor_name, "min"),
                target,
                (lambda r: r >= 1.5) if anchor_lib == "crc32c" else None,
            )

    fill_name = f"test_put_batch_fill[{sid}]"
    entries = b[fill_name]["extra_info"]["entries"] if fill_name in b else 20_000_000
    fill_t, fill_best_t = stat(fill_name), stat(fill_name, "min")
    fill = entries / fill_t if fill_t else None
    fill_best = entries / fill_best_t if fill_best_t else None
    add(f"put_batch fill {sid}", fill, None, mps, None, None, ">= 10 M/s", lambda v: v >= 10e6)
    # Same job: keys hashed in the timed loop; kernel: fingerprints given.
    for label, crit_name in (("same job", "fill_default_20M_keys"), ("kernel", "fill_default_20M")):
        rust = criterion_rate(args.criterion, crit_name) if entries == 20_000_000 else None
        if rust is None:
            rows.append(
                (f"put_batch vs bare Rust, {label}", "-", "no criterion result", "-", "-", ">= 0.80x", "-")
            )
        else:
            add(
                f"put_batch vs bare Rust, {label} (criterion)",
                fill,
                rust[0],
                mps,
                fill / rust[0] if fill else None,
                fill_best / rust[1] if fill_best else None,
                ">= 0.80x",
                lambda r: r >= 0.8,
            )

    single_name = f"test_put_single_loop[{sid}-put]"
    single_n = b[single_name]["extra_info"]["entries"] if single_name in b else 500_000
    single_t = stat(single_name)
    empty_t = stat(f"test_put_single_loop[{sid}-empty loop]")
    add(
        "put single (anchor: empty loop)",
        single_n / single_t if single_t else None,
        single_n / empty_t if empty_t else None,
        mps,
        None,
        None,
        ">= 1.5 M/s",
        None,
    )
    if single_t:
        rows[-1] = (*rows[-1][:-1], "yes" if single_n / single_t >= 1.5e6 else "NO")

    for keys in ("same key", "random keys"):
        t = stat(f"test_sealed_query[{sid}-{keys}]")
        add(f"sealed query, 10 entries, {keys}", t, None, us, None, None, "<= 5 us", lambda v: v <= 5e-6)

    for how, target in (("cp", "<= 2x"), ("cp+sync", "(info)")):
        durable = "no fsync" if how == "cp" else "fsync"
        ours, anchor = f"test_seal_full[{sid}-{durable}]", f"test_seal_anchor_cp[{sid}-{how}]"
        add(
            f"seal ({durable}) full {sid} vs {how}",
            stat(ours),
            stat(anchor),
            secs,
            time_ratio(ours, anchor, "median"),
            time_ratio(ours, anchor, "min"),
            target,
            (lambda r: r <= 2) if how == "cp" else None,
        )

    ours, anchor = f"test_flush_full[{sid}]", f"test_flush_anchor_dd[{sid}-new file]"
    add(
        f"flush full {sid} vs dd fsync",
        stat(ours),
        stat(anchor),
        secs,
        time_ratio(ours, anchor, "median"),
        time_ratio(ours, anchor, "min"),
        "<= 1.2x",
        lambda r: r <= 1.2,
    )

    if f"test_create_rss[{sid}]" in b:
        info = b[f"test_create_rss[{sid}]"]["extra_info"]
        before, after, put = (
            info[k] for k in ("rss_before_kib", "rss_after_create_kib", "rss_after_first_batch_kib")
        )
        grow = after["VmRSS"] - before["VmRSS"]
        add(f"RSS growth: create {sid} file", grow, None, kib, None, None, "~0 (< 1 MiB)", lambda v: v < 1024)
        add(
            f"RSS growth: then {info['first_batch']:,} entries",
            put["VmRSS"] - after["VmRSS"],
            None,
            kib,
            None,
            None,
            "(info)",
            None,
        )

    header = ("figure", "ours", "anchor", "ratio", "best ratio", "target", "met?")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for r in rows:
        print(line.format(*r).rstrip())


if __name__ == "__main__":
    main()
