"""`make bench`: run every benchmark once, one after another (each prints its own results).

Each benchmark is bounded in time and talks to loopback only; see docs/benchmarks.md for what
each measures and how to run it alone with other options.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ["bench.events_latency"],
    ["bench.auth_login"],
    ["bench.gateway_proxy"],
    ["bench.payments_throughput"],
    ["bench.profile_cache"],
    ["bench.admin_audit"],
]


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"\n=== python -m {' '.join(module)} ===", flush=True)
        if subprocess.call([sys.executable, "-m", *module]) != 0:
            failed.append(module[0])
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
