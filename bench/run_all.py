"""`make bench`: run every benchmark once, one after another (each prints its own results).

Each benchmark is bounded in time and talks to loopback only; see docs/benchmarks.md for what
each measures and how to run it alone with other options.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

BENCHMARKS = [
    ["bench.events_latency"],
    ["bench.auth_login"],
    ["bench.auth_password_burst"],
    ["bench.gateway_proxy"],
    ["bench.slow_clients"],
    ["bench.payments_throughput"],
    ["bench.profile_cache"],
    ["bench.admin_audit"],
    ["bench.realtime"],
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_all",
        description="Run every benchmark once with its defaults (docs/benchmarks.md).",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="e.g. --only gateway_proxy")
    args = parser.parse_args(argv)
    names = {module[0].split(".")[-1] for module in BENCHMARKS}
    unknown = set(args.only or ()) - names
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {sorted(names)}")
    chosen = [m for m in BENCHMARKS if not args.only or m[0].split(".")[-1] in args.only]
    failed = []
    for module in chosen:
        print(f"\n=== python -m {' '.join(module)} ===", flush=True)
        if subprocess.call([sys.executable, "-m", *module]) != 0:
            failed.append(module[0])
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
