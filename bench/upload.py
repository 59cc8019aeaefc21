#!/usr/bin/python3
"""A tus upload: mod_gemini_mcp in both durability modes against @tus/server +
@tus/file-store, and against what the same httpd writes for a plain PUT (with and
without a sync at its end).

  bench/upload.py [--size-mib 1024] [--rounds 3] [--db sqlite|pgsql] [--chunk-mib N]
                  [--concurrent N] [--interval "SIZE SECONDS"]

Starts on 127.0.0.1, side by side:
- httpd through test/start-server (2 child processes, GeminiMCPAuth apikey) serving
  /uploads (tus, synced: the offset each 204 reports is on disk) and /uploads-interval
  (tus, GeminiMCPUploadDurability interval with --interval, default its defaults), both
  keeping the whole-file SHA-256 as bytes arrive, and /put (mod_dav_fs: a plain PUT
  written to a directory on the same disk);
- bench/tus-peer.mjs: @tus/server 2.4.5 with @tus/file-store 2.1.1 on Node 22 (which
  neither hashes nor syncs).
Each round, in rotating order, every side takes --concurrent uploads of one random file
of --size-mib at once: tus-js-client 4.3.1 (one PATCH, its default, or PATCHes of
--chunk-mib) to httpd's two modes and to the peer, bench/put.mjs (streamed, 1 MiB reads)
for the PUT, and the same PUT followed by fdatasync() of the file it wrote ("PUT+sync":
the time ends when the sync returns). MiB/s is all bytes over the wall time from the
first start to the last end. Every result's SHA-256 is checked. During httpd's tus
uploads the RSS of each child is sampled every 20 ms: growth = peak minus what the child
held just before. Prints a table, writes bench/results/upload-<db>[-chunkN][-xN].json.
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test"))
from harness import free_port  # noqa: E402

NODE = os.path.join(ROOT, "test", "node_modules", ".bin", "node")
TUS_CLIENT = os.path.join(ROOT, "test", "clients", "tus-upload.mjs")
MiB = 1024 * 1024


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


def node(args, cwd):
    r = subprocess.run([NODE] + args, capture_output=True, text=True, cwd=cwd, timeout=900)
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    if r.returncode or out.get("ok") is False or out.get("error"):
        sys.exit(f"bench: {args[0]} failed: {r.stdout} {r.stderr}")
    return out


def tus(endpoint, path, key, chunk=None):
    opts = {"chunkSize": chunk} if chunk else {}
    return node([TUS_CLIENT, endpoint, path, key or "", json.dumps(opts)],
                os.path.join(ROOT, "test"))


def children(ppid):
    try:
        with open(f"/proc/{ppid}/task/{ppid}/children") as f:
            return [int(p) for p in f.read().split()]
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
    return 0


class RssWatch:
    """Peak RSS growth of httpd's children while something runs."""

    def __init__(self, ppid):
        self.pids = children(ppid)
        self.base = {p: rss_kib(p) for p in self.pids}
        self.peak = dict(self.base)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop.is_set():
            for p in self.pids:
                self.peak[p] = max(self.peak[p], rss_kib(p))
            time.sleep(0.02)

    def done(self):
        self.stop.set()
        self.t.join()
        return max(self.peak[p] - self.base[p] for p in self.pids) / 1024   # MiB


SIDES = ["interval", "synced", "@tus/server", "PUT", "PUT+sync"]


class Bench:
    def __init__(self, args, work, info, peer, put_dir, peer_dir, data_dir):
        self.args, self.work, self.info, self.peer = args, work, info, peer
        self.put_dir, self.peer_dir, self.data_dir = put_dir, peer_dir, data_dir
        self.chunk = args.chunk_mib * MiB or None
        self.ctl = info["gmcpctl"]

    def one(self, side, src, i, want, check):
        """One upload of src by `side` (the i-th at once): its start and end (ms)."""
        info = self.info
        if side in ("interval", "synced"):
            ep = info["upload"] + ("-interval" if side == "interval" else "")
            out = tus(ep, src, info["api_key"], self.chunk)
            uid = out["url"].rsplit("/", 1)[1]
            row = json.loads(subprocess.run(self.ctl + ["--json", "uploads", "show", uid],
                                            capture_output=True, text=True,
                                            check=True).stdout)
            assert row["sha256"] == want, "httpd's recorded SHA-256 differs"
            if check:
                assert sha256_file(os.path.join(self.data_dir, "uploads", uid)) == want
            subprocess.run(self.ctl + ["uploads", "cancel", uid], check=True)
            return out["t0"], out["t1"]
        if side == "@tus/server":
            out = tus(self.peer, src, None, self.chunk)
            stored = os.path.join(self.peer_dir, out["url"].rsplit("/", 1)[1])
            if check:
                assert sha256_file(stored) == want
            os.remove(stored)
            if os.path.exists(stored + ".json"):
                os.remove(stored + ".json")
            return out["t0"], out["t1"]
        name = f"source-{i}.bin"
        out = node([os.path.join(HERE, "put.mjs"), info["base"] + "/put/" + name, src], HERE)
        assert out["status"] in (201, 204), out
        stored = os.path.join(self.put_dir, name)
        t1 = out["t1"]
        if side == "PUT+sync":
            fd = os.open(stored, os.O_RDONLY)
            os.fdatasync(fd)
            os.close(fd)
            t1 = time.time() * 1000
        if check:
            assert sha256_file(stored) == want
        os.remove(stored)
        return out["t0"], t1

    def run(self, side, src, want, check):
        """--concurrent uploads at once: MiB/s over the wall time, and RSS growth."""
        n = self.args.concurrent
        spans, errors = [None] * n, []
        watch = RssWatch(self.info["pid"]) if side in ("interval", "synced") else None

        def go(i):
            try:
                spans[i] = self.one(side, src, i, want, check)
            except BaseException as e:   # noqa: B902 - reported below
                errors.append(e)
        ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        growth = watch.done() if watch else None
        if errors:
            raise errors[0]
        secs = (max(s[1] for s in spans) - min(s[0] for s in spans)) / 1000
        return n * os.path.getsize(src) / MiB / secs, growth


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--chunk-mib", type=int, default=0, help="tus-js-client chunkSize")
    ap.add_argument("--concurrent", type=int, default=1, help="uploads at once per side")
    ap.add_argument("--interval", default="", help="GeminiMCPUploadDurability interval's "
                    "SIZE SECONDS (default: its defaults)")
    args = ap.parse_args()
    size = args.size_mib * MiB
    work = tempfile.mkdtemp(prefix="gmcp-bench-up-")
    os.chmod(work, 0o755)
    data_dir = os.path.join(work, "httpd")
    put_dir = os.path.join(data_dir, "put")
    peer_dir = os.path.join(work, "peer")
    for d in (data_dir, put_dir, peer_dir):
        os.makedirs(d)
    procs = []
    try:
        src = os.path.join(work, "source.bin")
        with open(src, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        want = sha256_file(src)

        dav = [f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so"
               for m in ("alias", "dav", "dav_fs")]
        dav += [f'DavLockDB "{data_dir}/davlock"', f'Alias /put "{put_dir}"',
                f'<Directory "{put_dir}">', "    Dav On", "    Require all granted",
                "</Directory>", "LimitRequestBody 0",
                "<Location /uploads-interval>", "    SetHandler gemini-mcp-upload",
                "    GeminiMCPAuth apikey", "    LimitRequestBody 0",
                f"    GeminiMCPUploadDurability interval {args.interval}", "</Location>"]
        conf = []
        for line in dav:
            conf += ["--conf", line]
        hp = subprocess.Popen([os.path.join(ROOT, "test", "start-server"), "--db", args.db,
                               "--auth", "apikey", "--log-level", "warn",
                               "--data-dir", data_dir] + conf,
                              stdout=subprocess.PIPE, text=True)
        procs.append(hp)
        info = json.loads(hp.stdout.readline())
        port = free_port()
        pp = subprocess.Popen([NODE, os.path.join(HERE, "tus-peer.mjs"), str(port), peer_dir],
                              stdout=subprocess.PIPE, text=True, cwd=HERE)
        procs.append(pp)
        if pp.stdout.readline().strip() != "ready":
            sys.exit("bench: the @tus/server peer did not start")
        peer = f"http://127.0.0.1:{port}/files"
        b = Bench(args, work, info, peer, put_dir, peer_dir, data_dir)

        # Warm up every side (and the module's first-upload paths) with a small file.
        small = os.path.join(work, "small.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(MiB))
        small_sha = sha256_file(small)
        for side in SIDES:
            b.one(side, small, 0, small_sha, True)

        res = {s: [] for s in SIDES}
        rss = []
        for rnd in range(args.rounds):
            k = rnd % len(SIDES)
            for side in SIDES[k:] + SIDES[:k]:
                subprocess.run(["sync"], check=True)     # each starts with clean dirty pages
                rate, growth = b.run(side, src, want, rnd == 0)
                res[side].append(rate)
                if growth is not None:
                    rss.append(growth)
                print(f"round {rnd + 1}: {side:12s} {rate:8.1f} MiB/s", flush=True)

        med = {s: statistics.median(v) for s, v in res.items()}
        summary = {
            "size_mib": args.size_mib, "rounds": args.rounds, "db": args.db,
            "chunk_mib": args.chunk_mib or None, "concurrent": args.concurrent,
            "interval": args.interval or "defaults",
            "mib_per_s": res, "median_mib_per_s": med,
            "interval_vs_peer": med["interval"] / med["@tus/server"],
            "interval_vs_put": med["interval"] / med["PUT"],
            "synced_vs_put_sync": med["synced"] / med["PUT+sync"],
            "httpd_child_rss_growth_mib": rss, "max_rss_growth_mib": max(rss),
        }
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        name = "upload-" + args.db + (f"-chunk{args.chunk_mib}" if args.chunk_mib else "") + \
            (f"-x{args.concurrent}" if args.concurrent > 1 else "") + ".json"
        with open(os.path.join(HERE, "results", name), "w") as f:
            json.dump(summary, f, indent=2)
        print()
        print("| side | MiB/s (median of %d) | runs |" % args.rounds)
        print("|---|---|---|")
        for s in SIDES:
            print(f"| {s} | {med[s]:.1f} | {', '.join(f'{v:.0f}' for v in res[s])} |")
        print()
        print(f"interval / @tus/server: {summary['interval_vs_peer']:.2f}x")
        print(f"interval / PUT:         {summary['interval_vs_put']:.0%}")
        print(f"synced / PUT+sync:      {summary['synced_vs_put_sync']:.0%}")
        print(f"httpd child peak RSS growth: {max(rss):.1f} MiB (target < 16 MiB)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
