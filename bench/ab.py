"""A/B a hot-path change: extra gateways next to the bench's, interleaved in one run.

    python -m bench.ab candidate="path/to/launcher.py --flag" \\
        [--baseline direct,null,gw-stream] [--levels 1,64] [--rounds 3]

A launcher is any script that starts a gateway variant (for instance one that
monkeypatches a prototype of a change before calling ``antigv.cli.main.main``).

Each ``NAME=COMMAND`` is a script run as ``python COMMAND --config F serve`` against
the same database, accounts and upstream double as the bench's own gateway (which
appears as ``gw-stream``). Every round runs every target at every level, in an order
rotated per round, so the machine's noise falls on all alike. Prints one table.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from . import run as R


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", help='NAME="script.py [args]"')
    parser.add_argument("--baseline", default="direct,null,gw-stream", help="bench targets to include")
    parser.add_argument("--levels", default="1,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--c1-seconds", type=float, default=8.0)
    a = parser.parse_args(argv)
    levels = [int(x) for x in a.levels.split(",")]
    args = argparse.Namespace(
        gateway_wrapper=None, keep=False, only=list(R.TARGETS), levels=levels, seconds=a.seconds, rounds=1
    )
    bench = R.Bench(args)
    try:
        bench.setup()
        config = (bench.work / "antigv.toml").read_text()
        base = bench.targets["gw-stream"]
        targets = {n: bench.targets[n] for n in a.baseline.split(",") if n}
        for spec in a.variants:
            name, _, command = spec.partition("=")
            port = R.free_port()
            path = bench.work / f"{name}.toml"
            path.write_text(re.sub(r"(?m)^port = \d+", f"port = {port}", config, count=1))
            service = bench._start(name, [R.PY, *shlex.split(command), "--config", str(path), "serve"])
            R.wait_http(f"http://127.0.0.1:{port}/healthz", service)
            request = base.request.replace(f"Host: 127.0.0.1:{base.port}", f"Host: 127.0.0.1:{port}")
            targets[name] = R.Target(name, port, request, "[DONE]", service, R.OVERHEAD_HEADER)
        order = list(targets)
        for name in order:
            bench.load(targets[name], 8, 1.5)
        phases = []
        for r in range(a.rounds):
            for li, level in enumerate(levels):
                k = (r + li) % len(order)
                for name in order[k:] + order[:k]:
                    seconds = a.c1_seconds if level == 1 else a.seconds
                    phases.append(bench.load(targets[name], level, seconds))
    finally:
        bench.close()
    print()
    print(
        f"{'target':12} {'conc':>4} {'n':>6} {'req/s':>7} {'vs null':>7} {'p50':>7} {'p99':>7} {'TTFB50':>7} "
        f"{'TTFB99':>7} {'+TTFB50':>7} {'+TTFB99':>7} {'+p99':>7} {'CPU/req':>7} {'PG/req':>7} {'ovh50':>6}"
    )
    rows: dict[tuple[str, int], dict] = {}
    for level in levels:
        for name in order:
            ps = [p for p in phases if p.target == name and p.concurrency == level]
            totals = sorted(s[1] for p in ps for s in p.samples)
            ttfbs = sorted(s[0] for p in ps for s in p.samples)
            overhead = sorted(v for p in ps for v in p.overhead)
            wall = sum(p.wall for p in ps)
            rows[name, level] = {
                "n": len(totals),
                "rps": len(totals) / wall if wall else 0.0,
                "p50": R.pct(totals, 50),
                "p99": R.pct(totals, 99),
                "t50": R.pct(ttfbs, 50),
                "t99": R.pct(ttfbs, 99),
                "cpu": 1000 * sum(p.server_cpu for p in ps) / max(1, len(totals)),
                "pg": 1000 * sum(p.pg_cpu for p in ps) / max(1, len(totals)),
                "ovh": R.pct(overhead, 50),
            }
        for name in order:
            r = rows[name, level]
            d, n = rows.get(("direct", level)), rows.get(("null", level))
            share = f"{r['rps'] / n['rps'] * 100:6.0f}%" if n and n["rps"] else "      –"
            added = [f"{r[k] - d[k]:+7.2f}" if d else "      –" for k in ("t50", "t99", "p99")]
            print(
                f"{name:12} {level:4} {r['n']:6} {r['rps']:7.1f} {share} {r['p50']:7.2f} {r['p99']:7.2f} "
                f"{r['t50']:7.2f} {r['t99']:7.2f} {' '.join(added)} {r['cpu']:7.3f} {r['pg']:7.3f} "
                f"{r['ovh']:6.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
