#!/usr/bin/python3
"""The session hot path on each store and cluster shape, side by side in one run.

  bench/stores.py [--seconds 8] [--rounds 3] [--connections 64]

Starts, all at once on 127.0.0.1 and each with the conformance fixtures, 2 child
processes x 64 threads per httpd and `MaxKeepAliveRequests 0`:

- **SQLite**: one httpd (test/start-server --db sqlite);
- **PostgreSQL**: one httpd on its own PostgreSQL (test/start-server --db pgsql);
- **PostgreSQL, 1 node behind the balancer** and **3 nodes behind the balancer**:
  test/start-cluster --steady-load (mod_proxy_balancer round-robin without stickiness,
  keeping its connections to clients and nodes), so the 1-vs-3 comparison carries the
  same proxy cost.

Each opens one MCP session (2025-11-25) and is warmed up first (--warmup seconds of
both workloads at the highest connection count, not counted: connection pools fill,
statements get prepared, the session is cached); then wrk (bench/mcp.lua, 2 threads) drives
`tools/list` and the fixture `tools/call` at each connection count for --seconds,
visiting the servers in turn, for --rounds rounds. The table gives the median req/s and
the median p99 of the rounds; the servers idle while another is measured, but wrk, the
servers and PostgreSQL all share this machine's cores. Results go to
bench/results/stores.json.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _load_bench_run():
    """bench/run (a script without .py) as a module: its workloads and wrk driver."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader
    loader = SourceFileLoader("bench_run", os.path.join(HERE, "run"))
    mod = module_from_spec(spec_from_loader("bench_run", loader))
    loader.exec_module(mod)
    return mod


run = _load_bench_run()
HTTPD_CONF = ["--threads", "64", "--conf", "MaxKeepAliveRequests 0"]


def start(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line:
        p.wait()
        sys.exit(f"bench: {argv[0]} did not start")
    return p, json.loads(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", default="64")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    server = os.path.join(ROOT, "test", "start-server")
    cluster = os.path.join(ROOT, "test", "start-cluster")
    shapes = [
        ("SQLite", [server, "--fixtures", "--db", "sqlite", "--log-level", "warn"] + HTTPD_CONF),
        ("PostgreSQL", [server, "--fixtures", "--db", "pgsql", "--log-level", "warn"]
         + HTTPD_CONF),
        ("PostgreSQL, 1 node + balancer",
         [cluster, "--nodes", "1", "--fixtures", "--log-level", "warn", "--threads", "64",
          "--steady-load", "--conf", "MaxKeepAliveRequests 0"]),
        ("PostgreSQL, 3 nodes + balancer",
         [cluster, "--nodes", "3", "--fixtures", "--log-level", "warn", "--threads", "64",
          "--steady-load", "--conf", "MaxKeepAliveRequests 0"]),
    ]
    procs, urls, results = [], {}, []
    try:
        for name, argv in shapes:
            p, info = start(argv)
            procs.append(p)
            urls[name] = info["mcp"]
        sessions = {name: run.open_session(url) for name, url in urls.items()}
        for name, url in urls.items():
            headers = {"Mcp-Session-Id": sessions[name], "MCP-Protocol-Version": "2025-11-25"}
            for body in run.WORKLOADS.values():
                run.wrk(url, headers, body, max(conns), args.warmup)
        for rnd in range(args.rounds):
            for wl, body in run.WORKLOADS.items():
                for c in conns:
                    for name, url in urls.items():
                        headers = {"Mcp-Session-Id": sessions[name],
                                   "MCP-Protocol-Version": "2025-11-25"}
                        r = run.wrk(url, headers, body, c, args.seconds)
                        r.update(shape=name, workload=wl, connections=c, round=rnd)
                        results.append(r)
                        print(f"round {rnd + 1} {name:32s} {wl:10s} c={c:<3d} "
                              f"{r['rps']:>9.0f} req/s  p99 {r['p99_ms']:.2f} ms  "
                              f"non-200 {r['non200']}  socket errors {r['socket_errors']}",
                              flush=True)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "stores.json"), "w") as f:
        json.dump({"seconds": args.seconds, "rounds": args.rounds, "results": results}, f,
                  indent=1)

    def median(name, wl, c, key):
        return statistics.median(r[key] for r in results if r["shape"] == name
                                 and r["workload"] == wl and r["connections"] == c)

    print(f"\nmedian of {args.rounds} rounds of {args.seconds} s")
    print("| workload | conns | store | req/s | p99 ms | vs SQLite |")
    print("|---|---|---|---|---|---|")
    for wl in run.WORKLOADS:
        for c in conns:
            base = median("SQLite", wl, c, "rps")
            for name in urls:
                rps = median(name, wl, c, "rps")
                print(f"| {wl} | {c} | {name} | {rps:.0f} | "
                      f"{median(name, wl, c, 'p99_ms'):.2f} | {100 * rps / base:.0f} % |")


if __name__ == "__main__":
    main()
