#!/usr/bin/python3
"""A 1 GiB tus upload: mod_gemini_mcp against @tus/server + @tus/file-store, and against
what the same httpd writes to disk for a plain PUT.

  bench/upload.py [--size-mib 1024] [--rounds 3] [--db sqlite|pgsql] [--chunk-mib N]

Starts on 127.0.0.1, side by side:
- httpd through test/start-server (2 child processes, GeminiMCPAuth apikey) serving
  /uploads (tus, with the whole-file SHA-256 kept as bytes arrive, fdatasync every
  8 MiB) and /put (mod_dav_fs: a plain PUT written to a directory on the same disk);
- bench/tus-peer.mjs: @tus/server 2.4.5 with @tus/file-store 2.1.1 on Node 22.
One random file of --size-mib is uploaded each round, in turn, by tus-js-client 4.3.1
(one PATCH, its default, or PATCHes of --chunk-mib) to httpd and to the peer, and PUT by bench/put.mjs (streamed,
1 MiB reads) to httpd; the order rotates each round. Every result's SHA-256 is checked.
During the tus uploads to httpd the RSS of each child is sampled every 20 ms: growth =
peak minus what the child held just before. Prints a table, writes
bench/results/upload.json (upload-chunkN.json with --chunk-mib).
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default="sqlite")
    ap.add_argument("--chunk-mib", type=int, default=0, help="tus-js-client chunkSize")
    args = ap.parse_args()
    size = args.size_mib * MiB
    chunk = args.chunk_mib * MiB or None
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
                "</Directory>", "LimitRequestBody 0"]
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
        put_url = info["base"] + "/put/source.bin"
        ctl = info["gmcpctl"]

        # Warm up both (and the module's first-upload paths) with a small file.
        small = os.path.join(work, "small.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(MiB))
        tus(info["upload"], small, info["api_key"])
        tus(peer, small, None)

        sides = ["mod_gemini_mcp", "@tus/server", "httpd PUT"]
        res = {s: [] for s in sides}
        rss = []
        for rnd in range(args.rounds):
            order = sides[rnd % 3:] + sides[:rnd % 3]
            for side in order:
                if side == "mod_gemini_mcp":
                    watch = RssWatch(info["pid"])
                    out = tus(info["upload"], src, info["api_key"], chunk)
                    rss.append(watch.done())
                    uid = out["url"].rsplit("/", 1)[1]
                    row = json.loads(subprocess.run(ctl + ["--json", "uploads", "show", uid],
                                                    capture_output=True, text=True,
                                                    check=True).stdout)
                    assert row["sha256"] == want, "httpd's recorded SHA-256 differs"
                    spool = os.path.join(data_dir, "uploads", uid)
                    if rnd == 0:
                        assert sha256_file(spool) == want
                    subprocess.run(ctl + ["uploads", "cancel", uid], check=True)
                elif side == "@tus/server":
                    out = tus(peer, src, None, chunk)
                    fid = out["url"].rsplit("/", 1)[1]
                    stored = os.path.join(peer_dir, fid)
                    if rnd == 0:
                        assert sha256_file(stored) == want
                    os.remove(stored)
                    if os.path.exists(stored + ".json"):
                        os.remove(stored + ".json")
                else:
                    out = node([os.path.join(HERE, "put.mjs"), put_url, src], HERE)
                    assert out["status"] in (201, 204), out
                    stored = os.path.join(put_dir, "source.bin")
                    if rnd == 0:
                        assert sha256_file(stored) == want
                    subprocess.run(["rm", "-f", stored], check=True)
                secs = (out["t1"] - out["t0"]) / 1000
                res[side].append(size / MiB / secs)
                print(f"round {rnd + 1}: {side:15s} {size / MiB / secs:8.1f} MiB/s", flush=True)
                subprocess.run(["sync"], check=True)     # each starts with clean dirty pages

        med = {s: statistics.median(v) for s, v in res.items()}
        summary = {
            "size_mib": args.size_mib, "rounds": args.rounds, "db": args.db,
            "chunk_mib": args.chunk_mib or None,
            "mib_per_s": res, "median_mib_per_s": med,
            "vs_peer": med["mod_gemini_mcp"] / med["@tus/server"],
            "vs_plain_put": med["mod_gemini_mcp"] / med["httpd PUT"],
            "httpd_child_rss_growth_mib": rss, "max_rss_growth_mib": max(rss),
        }
        os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
        name = "upload.json" if not chunk else f"upload-chunk{args.chunk_mib}.json"
        with open(os.path.join(HERE, "results", name), "w") as f:
            json.dump(summary, f, indent=2)
        print()
        print("| side | MiB/s (median of %d) | runs |" % args.rounds)
        print("|---|---|---|")
        for s in sides:
            print(f"| {s} | {med[s]:.1f} | {', '.join(f'{v:.0f}' for v in res[s])} |")
        print()
        print(f"mod_gemini_mcp / @tus/server: {summary['vs_peer']:.2f}x (target >= 1.3x)")
        print(f"mod_gemini_mcp / httpd PUT:   {summary['vs_plain_put']:.0%} (target >= 80%)")
        print(f"httpd child peak RSS growth:  {max(rss):.1f} MiB (target < 16 MiB)")
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
