#!/usr/bin/python3
"""Soak test: a long mixed load on one httpd, with the children's RSS sampled over time.

  bench/soak.py [--duration SECONDS] [--conns N] [--db sqlite|pgsql] [--build DIR]
                [--odd] [--conf 'Directive ...'] [--env NAME=VALUE] [--sample S]
                [--json FILE]

Starts its own httpd through test/start-server (GeminiMCPAuth apikey, the fixtures
module, test/fake-gemini, 2 children x 16 threads unless --workers/--threads), creates
API keys with gmcpctl ("soak": limited, but high enough not to throttle this load;
"tight": 5/s burst 5, used by a small share of requests so that some 429s do happen and
are counted apart), then drives --conns concurrent keep-alive connections (threads with
one requests.Session each) for --duration seconds.

Default mix: MCP 2025-11-25 session calls (initialize + notifications/initialized,
tools/list, tools/call), 2026-07-28 stateless calls (tools/list, tools/call,
server/discover), gemini_chat_start + gemini_chat_send to the fake, and chunked tus
uploads (creation, 4 PATCHes of 1 MiB, HEAD, DELETE).

--odd: instead, odd requests: valid bodies just under GeminiMCPMaxBodySize (default
1 MiB; one big string, or ~100k small objects), bodies just over it (413, with
Content-Length and chunked), JSON nested ~2000 deep (under jansson's 2048 limit) and
deeper, truncated JSON, invalid UTF-8, wrong Content-Type, batches.

Every --sample seconds (default 5) the VmRSS of each httpd child (the processes whose
parent is httpd's parent pid) is read from /proc. At the end it prints requests per
kind, status code counts, 5xx count, 429 count, crashes (children that disappeared or
appeared, "exit signal" lines in the error log, AddressSanitizer reports with the
build-asan build) and each child's RSS at start, peak and end. Exit status 1 on any
5xx, transport error or crash.
"""
import argparse
import collections
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
START = os.path.join(ROOT, "test", "start-server")
ACCEPT = "application/json, text/event-stream"
V_SESSION, V_STATELESS = "2025-11-25", "2026-07-28"
MiB = 1024 * 1024
META = {"io.modelcontextprotocol/protocolVersion": V_STATELESS,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "soak", "version": "1"}}


def children(ppid):
    try:
        with open(f"/proc/{ppid}/task/{ppid}/children") as f:
            return sorted(int(p) for p in f.read().split())
    except OSError:
        return []


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = collections.Counter()
        self.codes = collections.Counter()
        self.by_kind_code = collections.Counter()
        self.errors = collections.Counter()     # transport errors, unexpected answers
        self.retried = 0                        # keep-alive closes, sent again
        self.samples = []

    def add(self, kind, code):
        with self.lock:
            self.kinds[kind] += 1
            self.codes[code] += 1
            self.by_kind_code[(kind, code)] += 1

    def retry(self):
        with self.lock:
            self.retried += 1

    def err(self, what):
        with self.lock:
            self.errors[what] += 1


class Client:
    """One connection's worth of load: a thread with its own keep-alive session."""

    def __init__(self, info, keys, stats, stop, odd, seed):
        self.info, self.keys, self.stats, self.stop, self.odd = info, keys, stats, stop, odd
        self.http = requests.Session()
        self.rnd = random.Random(seed)
        self.sid = None
        self.sid_uses = 0
        self.chat = None
        self.chat_uses = 0
        self.rid = 0
        self.max_body = 1 * MiB
        self.complete_uploads = True
        self.odd_kinds = list(range(10))

    # ---- plumbing ------------------------------------------------------------------------
    def key(self):
        """The soak key, or for 1% of stateless calls the tight one (some 429s)."""
        return self.keys["tight"] if self.rnd.random() < 0.01 else self.keys["soak"]

    def send(self, kind, method, url, expect=None, **kw):
        try:
            try:
                r = self.http.request(method, url, timeout=60, **kw)
            except requests.ConnectionError as e:
                # httpd's event MPM closes idle keep-alive connections when all its
                # workers are busy (64 connections, 32 threads); a request that met
                # such a close got no response and was not read: sent again once on
                # a new connection, as browsers do (RFC 9112, 9.3.1). Counted apart.
                if "RemoteDisconnected" not in repr(e):
                    raise
                self.stats.retry()
                self.http.close()
                self.http = requests.Session()
                r = self.http.request(method, url, timeout=60, **kw)
        except requests.RequestException as e:
            self.stats.err(f"{kind}: {type(e).__name__}")
            if os.environ.get("SOAK_DEBUG"):
                sys.stderr.write(f"{kind}: {e!r}\n")
            self.http.close()
            self.http = requests.Session()
            return None
        self.stats.add(kind, r.status_code)
        if expect and r.status_code not in expect and r.status_code != 429:
            self.stats.err(f"{kind}: unexpected {r.status_code}")
        return r

    def mcp(self, kind, body, headers=None, raw=None, key=None, expect=(200,)):
        h = {"Content-Type": "application/json", "Accept": ACCEPT,
             "Authorization": f"Bearer {key or self.keys['soak']}"}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        data = raw if raw is not None else json.dumps(body)
        return self.send(kind, "POST", self.info["mcp"], expect=expect, data=data, headers=h)

    def next_id(self):
        self.rid += 1
        return self.rid

    @staticmethod
    def message(r):
        if r is None or r.status_code != 200:
            return None
        ct = r.headers.get("Content-Type", "")
        try:
            if ct.startswith("application/json"):
                return r.json()
            for line in r.text.splitlines():
                if line.startswith("data:") and line[5:].strip():
                    msg = json.loads(line[5:])
                    if "result" in msg or "error" in msg:
                        return msg
        except ValueError:
            pass
        return None

    # ---- the normal mix --------------------------------------------------------------------
    def session(self):
        if self.sid and self.sid_uses < 200:
            self.sid_uses += 1
            return self.sid
        r = self.mcp("session initialize", {
            "jsonrpc": "2.0", "id": self.next_id(), "method": "initialize",
            "params": {"protocolVersion": V_SESSION, "capabilities": {},
                       "clientInfo": {"name": "soak", "version": "1"}}},
            key=self.keys["soak"])
        if r is None or r.status_code != 200 or "Mcp-Session-Id" not in r.headers:
            return None
        sid = r.headers["Mcp-Session-Id"]
        self.mcp("session initialized", {"jsonrpc": "2.0", "method": "notifications/initialized"},
                 headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": V_SESSION},
                 key=self.keys["soak"], expect=(202,))
        self.sid, self.sid_uses = sid, 0
        return sid

    def session_call(self, kind, method, params, key=None):
        sid = self.session()
        if not sid:
            return None
        r = self.mcp(kind, {"jsonrpc": "2.0", "id": self.next_id(), "method": method,
                            "params": params},
                     headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": V_SESSION}, key=key)
        if r is not None and r.status_code == 404:     # session swept: start another
            self.sid = None
        return r

    def op_session(self):
        if self.rnd.random() < 0.5:
            self.session_call("session tools/list", "tools/list", {})
        else:
            r = self.session_call("session tools/call", "tools/call",
                                  {"name": "test_simple_text", "arguments": {}})
            msg = self.message(r)
            if r is not None and r.status_code == 200 and (not msg or "result" not in msg):
                self.stats.err("session tools/call: no result")

    def op_stateless(self):
        method, params, name = self.rnd.choice([
            ("tools/list", {}, None),
            ("tools/call", {"name": "test_simple_text", "arguments": {}}, "test_simple_text"),
            ("server/discover", {}, None)])
        params = dict(params, _meta=META)
        h = {"MCP-Protocol-Version": V_STATELESS, "Mcp-Method": method}
        if name:
            h["Mcp-Name"] = name
        r = self.mcp(f"stateless {method}", {"jsonrpc": "2.0", "id": self.next_id(),
                                             "method": method, "params": params}, headers=h,
                     key=self.key())
        msg = self.message(r)
        if r is not None and r.status_code == 200 and (not msg or "result" not in msg):
            self.stats.err(f"stateless {method}: no result")

    def op_chat(self):
        key = self.keys["soak"]     # the chat belongs to the key's principal
        if not self.chat or self.chat_uses >= 20:
            msg = self.message(self.session_call("chat gemini_chat_start", "tools/call",
                                                 {"name": "gemini_chat_start", "arguments": {}},
                                                 key=key))
            try:
                self.chat = msg["result"]["structuredContent"]["session_id"]
                self.chat_uses = 0
            except (TypeError, KeyError):
                self.stats.err("gemini_chat_start: no session_id")
                return
        self.chat_uses += 1
        msg = self.message(self.session_call(
            "chat gemini_chat_send", "tools/call",
            {"name": "gemini_chat_send",
             "arguments": {"session_id": self.chat, "message": f"hello {self.rid}"}}, key=key))
        if msg is not None and ("result" not in msg or msg["result"].get("isError")):
            self.stats.err("gemini_chat_send: error result")

    def op_upload(self):
        key = self.keys["soak"]
        tus = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {key}"}
        chunks = 4
        # Every upload completes (each completing PATCH once kept a database connection
        # for good: bench/README.md, "Soak"); --partial-uploads stops one byte short.
        length = chunks * MiB + (0 if self.complete_uploads else 1)
        r = self.send("tus create", "POST", self.info["upload"], expect=(201,),
                      headers=dict(tus, **{"Upload-Length": str(length)}))
        if r is None or r.status_code != 201:
            return
        url = r.headers["Location"]
        if url.startswith("/"):
            url = self.info["base"] + url
        block = os.urandom(MiB)
        for i in range(chunks):
            r = self.send("tus PATCH 1MiB", "PATCH", url, expect=(204,), data=block,
                          headers=dict(tus, **{"Upload-Offset": str(i * MiB),
                                               "Content-Type":
                                               "application/offset+octet-stream"}))
            if r is None or r.status_code != 204:
                break
        self.send("tus HEAD", "HEAD", url, expect=(200,), headers=tus)
        self.send("tus DELETE", "DELETE", url, expect=(204,), headers=tus)

    # ---- the odd mix -------------------------------------------------------------------------
    def op_odd(self):
        n = self.max_body
        choice = self.rnd.choice(self.odd_kinds)
        sh = {"MCP-Protocol-Version": V_STATELESS, "Mcp-Method": "tools/call",
              "Mcp-Name": "test_simple_text"}
        if choice == 0:     # valid, one string argument, just under the limit
            pre = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "test_simple_text", "_meta": META, "arguments": {"pad": ""}}})
            pad = "x" * (n - len(pre) - 16)
            body = pre.replace('"pad": ""', f'"pad": "{pad}"')
            self.mcp("odd near-limit string", None, raw=body, headers=sh,
                     expect=(200, 400))
        elif choice == 1:   # valid, ~100k small objects (many jansson mallocs), under the limit
            item = '{"k":1,"v":"ab"},'
            count = (n - 400) // len(item)
            body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":'
                    '"test_simple_text","_meta":' + json.dumps(META) + ',"arguments":{"a":['
                    + item * (count - 1) + item[:-1] + ']}}}')
            self.mcp("odd near-limit many objects", None, raw=body, headers=sh,
                     expect=(200, 400))
        elif choice == 2:   # nested arrays, under jansson's depth limit (2048)
            d = 2000
            body = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":'
                    '"test_simple_text","_meta":' + json.dumps(META) + ',"arguments":{"d":'
                    + "[" * d + "]" * d + '}}}')
            self.mcp("odd deep 2000", None, raw=body, headers=sh, expect=(200, 400))
        elif choice == 3:   # nested far deeper than the parser allows, near the size limit
            d = (n - 200) // 2
            body = '{"jsonrpc":"2.0","id":1,"method":"ping","params":' + "[" * d + "]" * d + "}"
            self.mcp("odd deep 500k", None, raw=body, headers=sh, expect=(400,))
        elif choice == 4:   # just over the limit, with Content-Length
            self.mcp("odd over-limit", None, raw="[" + " " * n + "]", headers=sh,
                     expect=(413,))
        elif choice == 5:   # just over the limit, chunked
            def gen():
                yield b"["
                for _ in range(n // 65536):
                    yield b" " * 65536
                yield b" " * 1024 + b"]"
            self.mcp("odd over-limit chunked", None, raw=gen(), headers=sh, expect=(413,))
        elif choice == 6:   # truncated JSON near the limit
            body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a":"' + "y" * (n - 300)
            self.mcp("odd truncated", None, raw=body, headers=sh, expect=(400,))
        elif choice == 7:   # invalid UTF-8 in a big string
            body = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a":"'
                    + b"\xc3\x28" * ((n - 300) // 2) + b'"}}')
            self.mcp("odd invalid utf-8", None, raw=body, headers=sh, expect=(400,))
        elif choice == 8:   # a batch of many small requests (batches are refused)
            one = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            body = json.dumps([one] * 5000)
            self.mcp("odd batch", None, raw=body, headers=sh, expect=(400,))
        else:               # wrong Content-Type with a big body, then an ordinary session call
            self.mcp("odd wrong content-type", None, raw="z" * (n // 2),
                     headers=dict(sh, **{"Content-Type": "text/plain"}), expect=(415,))
            self.op_session()

    def run(self, weights):
        ops = [op for op, w in weights for _ in range(w)]
        while not self.stop.is_set():
            try:
                if self.odd:
                    self.op_odd()
                    # A refused body (413, 415, ...) ends the connection on the server's
                    # side (it closes rather than read the rest): start each odd request on
                    # a fresh one so that the next request does not meet a reset.
                    self.http.close()
                    self.http = requests.Session()
                else:
                    self.rnd.choice(ops)()
            except Exception as e:     # a bug in this script must not pass as a clean run
                self.stats.err(f"client exception: {type(e).__name__}: {e}")
                time.sleep(0.1)


def asan_reports(logdir):
    found = []
    for p in glob.glob(os.path.join(logdir, "asan*")) + glob.glob(os.path.join(logdir, "ubsan*")):
        try:
            if os.path.getsize(p):
                found.append(p)
        except OSError:
            pass
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    ap.add_argument("--conns", type=int, default=64, help="concurrent connections (64)")
    ap.add_argument("--db", choices=["sqlite", "pgsql"], default="sqlite")
    ap.add_argument("--build", default=os.environ.get("GMCP_BUILD", "build"),
                    help="build directory (build, build-asan, ...)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--odd", action="store_true", help="odd requests instead of the normal mix")
    ap.add_argument("--conf", action="append", default=[],
                    help="extra httpd configuration line (e.g. 'MaxMemFree 2048')")
    ap.add_argument("--env", action="append", default=[],
                    help="NAME=VALUE for httpd's environment (e.g. MALLOC_ARENA_MAX=2)")
    ap.add_argument("--sample", type=float, default=5, help="RSS sampling period, seconds")
    ap.add_argument("--rate", default="20000/s", help="the soak key's --rate")
    ap.add_argument("--mix", default="session=4,stateless=4,chat=2,upload=1",
                    help="relative weights of the normal mix's operations")
    ap.add_argument("--odd-kinds", help="with --odd: only these of its kinds (0-9, comma-"
                    "separated; see Client.op_odd)")
    ap.add_argument("--idle", type=float, default=0,
                    help="after the load, wait this long and sample RSS once more")
    ap.add_argument("--partial-uploads", action="store_true",
                    help="stop every tus upload 1 byte short (default: send it to its end)")
    ap.add_argument("--json", help="write the summary and RSS samples here")
    args = ap.parse_args()

    env = dict(os.environ, GMCP_BUILD=args.build)
    for kv in args.env:
        name, _, value = kv.partition("=")
        env[name] = value
    work = tempfile.mkdtemp(prefix="gmcp-soak-")
    os.chmod(work, 0o755)
    cmd = [START, "--db", args.db, "--auth", "apikey", "--fixtures", "--fake-gemini",
           "--log-level", "warn", "--data-dir", work, "--workers", str(args.workers),
           "--threads", str(args.threads)]
    for line in args.conf:
        cmd += ["--conf", line]
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    stats = Stats()
    stop = threading.Event()
    rc = 0
    try:
        line = srv.stdout.readline()
        if not line:
            sys.exit("soak: start-server failed")
        info = json.loads(line)
        ctl = info["gmcpctl"]

        def key(name, *limits):
            out = subprocess.run(ctl + ["--json", "keys", "create", "--name", name] + list(limits),
                                 check=True, capture_output=True, text=True).stdout
            return json.loads(out)["secret"]
        keys = {"soak": key("soak", "--rate", args.rate, "--burst", "0",
                            "--max-inflight", str(max(args.conns * 2, 16))),
                "tight": key("tight", "--rate", "5/s", "--burst", "5")}
        ppid = info["pid"]
        logdir = os.path.dirname(info["error_log"])
        first = children(ppid)
        seen = set(first)
        t0 = time.time()

        def sample():
            now = children(ppid)
            seen.update(now)
            row = {"t": round(time.time() - t0, 1), "rss_kib": {p: rss_kib(p) for p in now}}
            stats.samples.append(row)
            return row
        start_row = sample()
        print(f"soak: httpd {ppid}, children {first}, {args.conns} connections, "
              f"{args.duration:.0f} s, {'odd' if args.odd else 'mixed'} load, build "
              f"{args.build}, db {args.db}, conf {args.conf}, env {args.env}", flush=True)

        weights = [("op_" + k, int(v)) for k, _, v in
                   (kv.partition("=") for kv in args.mix.split(",")) if int(v) > 0]
        clients = [Client(info, keys, stats, stop, args.odd, i) for i in range(args.conns)]
        threads = []
        for c in clients:
            c.complete_uploads = not args.partial_uploads
            if args.odd_kinds:
                c.odd_kinds = [int(k) for k in args.odd_kinds.split(",")]
            t = threading.Thread(target=c.run,
                                 args=([(getattr(c, op), w) for op, w in weights],),
                                 daemon=True)
            t.start()
            threads.append(t)
        fake_reset = time.time()
        last_n, last_move, stalled = 0, time.time(), False
        while time.time() - t0 < args.duration:
            time.sleep(min(args.sample, max(0.1, args.duration - (time.time() - t0))))
            row = sample()
            total = sum(v or 0 for v in row["rss_kib"].values())
            with stats.lock:
                n = sum(stats.kinds.values())
            print(f"  t={row['t']:6.1f}s requests={n:8d} rss_mib=" +
                  ",".join(f"{(v or 0) / 1024:.1f}" for v in row["rss_kib"].values()) +
                  f" total={total / 1024:.1f}", flush=True)
            if time.time() - fake_reset > 30:     # the fake keeps every request it saw
                try:
                    requests.post(info["gemini"] + "/_fake/reset", timeout=5)
                except requests.RequestException:
                    pass
                fake_reset = time.time()
            if n != last_n:
                last_n, last_move = n, time.time()
            elif time.time() - last_move > 30:
                stalled = True
                print("soak: no request finished for 30 s: the server is stuck", flush=True)
                break
        stop.set()
        for t in threads:
            t.join(5 if stalled else 90)
        elapsed = time.time() - t0
        end_row = sample()
        if args.idle:
            time.sleep(args.idle)       # no load: what do the children give back?
            idle_row = sample()
            print(f"  after {args.idle:.0f} s idle: rss_mib=" + ",".join(
                f"{(v or 0) / 1024:.1f}" for v in idle_row["rss_kib"].values()), flush=True)

        # ---- crashes -----------------------------------------------------------------------
        with open(info["error_log"], errors="replace") as f:
            log = f.read()
        signal_lines = [l for l in log.splitlines() if "exit signal" in l
                        or "seg fault" in l.lower() or "AH00052" in l]
        replaced = sorted(seen - set(first))
        gone = sorted(set(first) - set(end_row["rss_kib"]))
        asan = asan_reports(logdir)

        # ---- report --------------------------------------------------------------------------
        total = sum(stats.kinds.values())
        five = sum(n for c, n in stats.codes.items() if c >= 500)
        print(f"\nsoak: {total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s), "
              f"{args.conns} connections")
        print("\nrequests per kind:")
        for k, n in sorted(stats.kinds.items()):
            codes = ", ".join(f"{c}: {m}" for (kk, c), m in sorted(stats.by_kind_code.items())
                              if kk == k)
            print(f"  {k:32s} {n:8d}   ({codes})")
        print("\nstatus codes: " + ", ".join(f"{c}: {n}" for c, n in sorted(stats.codes.items())))
        print(f"5xx: {five}   429 (rate limits, not errors): {stats.codes.get(429, 0)}   "
              f"keep-alive closes sent again: {stats.retried}")
        if stats.errors:
            print("client-side problems:")
            for k, n in stats.errors.most_common():
                print(f"  {k}: {n}")
        print(f"crashes: {len(signal_lines)} 'exit signal' log lines, children gone "
              f"{gone}, new children {replaced}, sanitizer reports {asan}")
        for l in signal_lines[:5]:
            print("  " + l)
        print("\nRSS per child (MiB): start / peak / end")
        pids = sorted(set(start_row["rss_kib"]) | set(end_row["rss_kib"]))
        tot = [0, 0, 0]
        for p in pids:
            vals = [s["rss_kib"].get(p) for s in stats.samples if s["rss_kib"].get(p)]
            st = start_row["rss_kib"].get(p) or 0
            pk = max(vals) if vals else 0
            en = end_row["rss_kib"].get(p) or 0
            tot = [tot[0] + st, tot[1] + pk, tot[2] + en]
            print(f"  child {p}: {st / 1024:.1f} / {pk / 1024:.1f} / {en / 1024:.1f}")
        peak_total = max(sum(v or 0 for v in s["rss_kib"].values()) for s in stats.samples)
        print(f"  total: {tot[0] / 1024:.1f} / {peak_total / 1024:.1f} / {tot[2] / 1024:.1f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "requests": total, "elapsed": elapsed,
                           "kinds": stats.kinds, "codes": {str(k): v for k, v in
                                                           stats.codes.items()},
                           "errors": stats.errors, "retried": stats.retried, "5xx": five, "signal_lines": signal_lines,
                           "asan": asan, "stalled": stalled, "samples": stats.samples}, f, indent=1)
        transport = sum(n for k, n in stats.errors.items()
                        if "exception" in k or ("Error" in k and not args.odd))
        if stalled:
            print("stalled: yes (no progress for 30 s)")
        if five or signal_lines or replaced or gone or asan or transport or stalled:
            rc = 1
            print("\nsoak: FAILED")
            if asan:
                keep = tempfile.mkdtemp(prefix="gmcp-soak-asan-")
                for p in asan:
                    shutil.copy(p, keep)
                print(f"soak: sanitizer reports copied to {keep}")
        else:
            print("\nsoak: ok")
    finally:
        stop.set()
        if srv.poll() is None:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(30)
            except subprocess.TimeoutExpired:
                srv.kill()
                srv.wait()
        shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
