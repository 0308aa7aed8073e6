"""Run every benchmark module `bench/bench_*.py` (or those named on the command line).

Usage: python -m bench [NAME ...]    e.g. python -m bench traces replay
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import time

import bench


def main(argv: list[str]) -> int:
    names = sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    wanted = [f"bench_{a.removeprefix('bench_')}" for a in argv]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(names)}", file=sys.stderr
        )
        return 2
    if len(wanted) == 1:
        importlib.import_module(f"bench.{wanted[0]}").main()
        return 0
    failed = []
    for name in wanted or names:
        short = name.removeprefix("bench_")
        print(f"\n=== {name} (python -m bench {short}) ===", flush=True)
        t0 = time.perf_counter()
        # each in a fresh process: one benchmark's memory and threads must not weigh on the next
        if subprocess.run([sys.executable, "-m", "bench", short], check=False).returncode:
            failed.append(name)
        print(f"--- {name} took {time.perf_counter() - t0:.1f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
