#!/usr/bin/python3
"""What API-key auth, rate limiting and OAuth cost: tools/list req/s with them off and on.

  bench/auth_overhead.py [--seconds N] [--connections C] [--rounds R] [--db sqlite|pgsql]

Starts two httpd instances with test/start-server (2 child processes each, same
tuning): one with GeminiMCPAuth none, one with GeminiMCPAuth apikey and a key whose
request limit (1,000,000/s) is checked on every request but never reached, so the
whole path runs: Bearer parsing, the key cache, HMAC-SHA256 of the secret, the GCRA
step and the in-flight count in shared memory, usage accounting and metrics. The two
are driven alternately with wrk (bench/mcp.lua) for R rounds; the median of each side
is reported. A third instance has GeminiMCPAuth oauth with an RS256 access token (the
JWKS served by test/test_oauth.py's Issuer, warm after the first request), so every
request runs the token check. Writes bench/results/auth.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from importlib.machinery import SourceFileLoader  # noqa: E402

run = SourceFileLoader("bench_run", os.path.join(HERE, "run")).load_module()
sys.path.insert(0, os.path.join(run.ROOT, "test"))
from harness import free_port  # noqa: E402
import test_oauth  # noqa: E402


class Issuer(test_oauth.Issuer):
    def resource(self, port):
        test_oauth.RESOURCE[0] = f"http://127.0.0.1:{port}/mcp"
        return test_oauth.RESOURCE[0]


def start(db, auth, issuer=None):
    args = [os.path.join(run.ROOT, "test", "start-server"), "--fixtures", "--db", db,
            "--log-level", "warn", "--threads", "64", "--conf", "MaxKeepAliveRequests 0"]
    if auth:
        args += ["--auth", "apikey"]
    if issuer:
        port = free_port()
        args += ["--port", str(port), "--location-conf", "GeminiMCPAuth oauth",
                 "--location-conf", f"GeminiMCPOAuthResource {issuer.resource(port)}",
                 "--location-conf", f"GeminiMCPOAuthIssuer {issuer.url}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())


def session(url, key):
    import urllib.request
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "bench", "version": "1"}}}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Accept": "application/json, text/event-stream"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Mcp-Session-Id"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 10)))
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default="sqlite")
    args = ap.parse_args()
    procs = []
    try:
        off_p, off = start(args.db, False)
        procs.append(off_p)
        on_p, on = start(args.db, True)
        procs.append(on_p)
        issuer = Issuer()
        issuer.add_key("k1")
        oa_p, oa = start(args.db, False, issuer)
        procs.append(oa_p)
        token = issuer.token(exp=int(__import__("time").time()) + 3600)
        # The start-server key has no limits: give it one that is checked but not hit.
        kid = on["api_key"].split("_")[1]
        subprocess.run(on["gmcpctl"] + ["keys", "update", kid, "--rate", "1000000/s",
                                        "--max-inflight", "100000"], check=True)
        sides = {"off": (off["mcp"], None), "on": (on["mcp"], on["api_key"]),
                 "oauth": (oa["mcp"], token)}
        heads = {}
        for name, (url, key) in sides.items():
            h = {"Mcp-Session-Id": session(url, key), "MCP-Protocol-Version": "2025-11-25"}
            if key:
                h["Authorization"] = f"Bearer {key}"
            heads[name] = h
        body = run.WORKLOADS["tools/list"]
        res = {"off": [], "on": [], "oauth": []}
        for _ in range(args.rounds):
            for name in ("off", "on", "oauth"):
                r = run.wrk(sides[name][0], heads[name], body, args.connections, args.seconds)
                if r["non200"] or r["socket_errors"]:
                    sys.exit(f"bench: {name}: {r}")
                res[name].append(r)
        off_rps = statistics.median(r["rps"] for r in res["off"])
        on_rps = statistics.median(r["rps"] for r in res["on"])
        oa_rps = statistics.median(r["rps"] for r in res["oauth"])
        out = {"db": args.db, "connections": args.connections, "seconds": args.seconds,
               "rounds": res, "off_rps": off_rps, "on_rps": on_rps,
               "on_vs_off": on_rps / off_rps, "oauth_rps": oa_rps,
               "oauth_vs_off": oa_rps / off_rps}
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        with open(os.path.join(HERE, "results", "auth.json"), "w") as f:
            json.dump(out, f, indent=1)
        print(f"| tools/list, {args.connections} connections | auth+limits off | auth+limits on "
              f"| on/off | OAuth token | OAuth/off |\n|---|---|---|---|---|---|")
        print(f"| median req/s ({args.rounds} x {args.seconds} s) | {off_rps:.0f} | "
              f"{on_rps:.0f} | {on_rps / off_rps:.3f} | {oa_rps:.0f} | {oa_rps / off_rps:.3f} |")
        for name in ("off", "on", "oauth"):
            print(f"{name}: " + ", ".join(f"{r['rps']:.0f} req/s p99 {r['p99_ms']:.1f} ms"
                                          for r in res[name]))
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        if "issuer" in locals():
            issuer.stop()


if __name__ == "__main__":
    main()
