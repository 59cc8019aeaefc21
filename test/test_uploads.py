"""tus 1.0 uploads (SetHandler gemini-mcp-upload) with tus-js-client and raw requests,
through httpd with 2 child processes, on SQLite and PostgreSQL."""
import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import NODE22, ROOT, Server

DBS = ["sqlite", "pgsql"]
MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
CLIENT = os.path.join(ROOT, "test", "clients", "tus-upload.mjs")


def make_file(tmp_path, size, name="f.bin"):
    p = tmp_path / name
    with open(p, "wb") as f:
        f.write(os.urandom(size))
    return str(p)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tus_js(s, path, key, **opts):
    r = subprocess.run([NODE22, CLIENT, s.info["upload"], path, key or "", json.dumps(opts)],
                       capture_output=True, text=True, timeout=180,
                       cwd=os.path.join(ROOT, "test"))
    out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
    assert r.returncode == 0 and out.get("ok"), (r.stdout, r.stderr)
    return out


def spool(s, url):
    return os.path.join(s.info["data_dir"], "uploads", url.rstrip("/").rsplit("/", 1)[1])


def auth(key, **extra):
    h = dict(TUS, Authorization=f"Bearer {key}")
    h.update(extra)
    return h


def create(s, key, length, **extra):
    h = auth(key, **{"Upload-Length": str(length)})
    h.update(extra)
    r = requests.post(s.info["upload"], headers=h)
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def patch(url, key, offset, data, **extra):
    h = auth(key, **{"Upload-Offset": str(offset),
                     "Content-Type": "application/offset+octet-stream"})
    h.update(extra)
    return requests.patch(url, headers=h, data=data)


@pytest.fixture(scope="module", params=DBS)
def us(request):
    if request.param == "pgsql":
        request.getfixturevalue("pg_dsn")
    s = Server(request.param, ["--auth", "apikey"])
    s.key = s.info["api_key"]
    yield s
    s.stop()


def new_key(s, name):
    return json.loads(s.gmcpctl_run("--json", "keys", "create", "--name", name).stdout)["secret"]


# ---- tus-js-client ------------------------------------------------------------------------

def test_single_request_upload(us, tmp_path):
    path = make_file(tmp_path, 3 * 1024 * 1024 + 17)
    out = tus_js(us, path, us.key)
    assert sha256_file(spool(us, out["url"])) == sha256_file(path)
    r = requests.head(out["url"], headers=auth(us.key))
    assert r.status_code == 200 and r.headers["Upload-Offset"] == str(os.path.getsize(path))
    assert r.headers["Cache-Control"] == "no-store" and "Upload-Expires" not in r.headers
    row = us.sql("SELECT state, sha256, filename FROM uploads WHERE id = '%s'"
                 % out["url"].rsplit("/", 1)[1])[0]
    assert row.split("|") == ["complete", sha256_file(path), "upload.bin"]


def test_5mib_chunks_and_creation_with_upload(us, tmp_path):
    path = make_file(tmp_path, 12 * 1024 * 1024 + 5)
    out = tus_js(us, path, us.key, chunkSize=5 * 1024 * 1024, uploadDataDuringCreation=True)
    assert sha256_file(spool(us, out["url"])) == sha256_file(path)


def test_parallel_uploads_concatenate(us, tmp_path):
    path = make_file(tmp_path, 9 * 1024 * 1024 + 3)
    out = tus_js(us, path, us.key, parallelUploads=4, chunkSize=1024 * 1024)
    assert sha256_file(spool(us, out["url"])) == sha256_file(path)
    r = requests.head(out["url"], headers=auth(us.key))
    assert r.headers["Upload-Concat"].startswith("final;")
    assert r.headers["Upload-Length"] == str(os.path.getsize(path))


def test_method_override(us, tmp_path):
    path = make_file(tmp_path, 2 * 1024 * 1024 + 1)
    out = tus_js(us, path, us.key, chunkSize=512 * 1024, overridePatchMethod=True)
    assert sha256_file(spool(us, out["url"])) == sha256_file(path)


def test_deferred_length(us):
    # Raw requests: tus-js-client 4.3.1 in Node announces a whole chunk's Content-Length
    # on the last PATCH of a deferred-length file stream and sends less.
    data = os.urandom(70000)
    r = requests.post(us.info["upload"], headers=auth(us.key, **{"Upload-Defer-Length": "1"}))
    assert r.status_code == 201
    url = r.headers["Location"]
    assert requests.head(url, headers=auth(us.key)).headers["Upload-Defer-Length"] == "1"
    assert patch(url, us.key, 0, data[:50000]).status_code == 204
    r = patch(url, us.key, 50000, data[50000:], **{"Upload-Length": "70000"})
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "70000"
    h = requests.head(url, headers=auth(us.key)).headers
    assert h["Upload-Length"] == "70000" and "Upload-Defer-Length" not in h
    assert patch(url, us.key, 70000, b"", **{"Upload-Length": "80000"}).status_code == 400
    assert sha256_file(spool(us, url)) == hashlib.sha256(data).hexdigest()


def test_client_killed_then_resumed(us, tmp_path):
    """The client dies after part of the file; tus-js-client resumes from HEAD."""
    path = make_file(tmp_path, 4 * 1024 * 1024)
    data = open(path, "rb").read()
    url = create(us, us.key, len(data))
    assert patch(url, us.key, 0, data[:1500000]).status_code == 204
    out = tus_js(us, path, us.key, uploadUrl=url, chunkSize=1024 * 1024)
    assert out["url"] == url and sha256_file(spool(us, url)) == sha256_file(path)


# ---- the protocol, raw -----------------------------------------------------------------------

def test_checksum_mismatch_discards_the_chunk(us):
    data = os.urandom(100000)
    url = create(us, us.key, len(data))
    assert patch(url, us.key, 0, data[:40000]).status_code == 204
    good = base64.b64encode(hashlib.sha256(data[40000:]).digest()).decode()
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    r = patch(url, us.key, 40000, data[40000:], **{"Upload-Checksum": f"sha256 {bad}"})
    assert r.status_code == 460 and "discarded" in r.text
    assert requests.head(url, headers=auth(us.key)).headers["Upload-Offset"] == "40000"
    r = patch(url, us.key, 40000, data[40000:], **{"Upload-Checksum": "crc32 AAAA"})
    assert r.status_code == 400
    for algo, fn in (("sha1", hashlib.sha1), ("md5", hashlib.md5)):
        d = base64.b64encode(fn(b"").digest()).decode()
        assert patch(url, us.key, 40000, b"", **{"Upload-Checksum": f"{algo} {d}"}).status_code == 204
    r = patch(url, us.key, 40000, data[40000:], **{"Upload-Checksum": f"sha256 {good}"})
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "100000"
    assert sha256_file(spool(us, url)) == hashlib.sha256(data).hexdigest()


def test_errors(us):
    up = us.info["upload"]
    url = create(us, us.key, 10)
    r = requests.head(url, headers=dict(Authorization=f"Bearer {us.key}"))
    assert r.status_code == 412 and r.headers["Tus-Version"] == "1.0.0"
    assert patch(url, us.key, 3, b"abc").status_code == 409
    r = patch(url, us.key, 0, b"abc", **{"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert patch(url, us.key, 0, b"x" * 11).status_code == 413
    assert requests.head(url, headers=auth(us.key)).headers["Upload-Offset"] == "0"
    for h in ({"Upload-Length": "-1"}, {"Upload-Length": "01"},
              {"Upload-Length": "5", "Upload-Defer-Length": "1"}, {"Upload-Defer-Length": "2"},
              {}, {"Upload-Length": "5", "Upload-Metadata": "filename !!!"},
              {"Upload-Length": "5", "Upload-Metadata": "filename " + base64.b64encode(b"../etc/passwd").decode()},
              {"Upload-Length": "5", "Upload-Metadata": "filename " + base64.b64encode(b"a\nb").decode()},
              {"Upload-Length": "5", "Upload-Metadata": "a YQ==,a YQ=="},
              {"Upload-Length": "5", "Upload-Concat": "final;" + up + "/nope"}):
        r = requests.post(up, headers=auth(us.key, **h))
        assert r.status_code == 400, (h, r.status_code, r.text)
    r = requests.post(up, headers=auth(us.key, **{"Upload-Length": str(3 << 30)}))
    assert r.status_code == 413
    assert requests.head(up + "/AAAAAAAAAAAAAAAAAAAAAA", headers=auth(us.key)).status_code == 404
    assert requests.head(up + "/../../etc", headers=auth(us.key)).status_code == 404
    r = requests.post(up, headers=TUS)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    r = requests.options(up)
    assert r.status_code == 204 and "checksum" in r.headers["Tus-Extension"]
    assert r.headers["Tus-Checksum-Algorithm"] == "sha256,sha1,md5"


def test_termination_and_foreign_keys(us):
    other = new_key(us, "stranger")
    url = create(us, us.key, 5)
    for method in ("head", "delete"):
        assert getattr(requests, method)(url, headers=auth(other)).status_code == 404
    assert patch(url, other, 0, b"abcde").status_code == 404
    assert requests.head(url, headers=auth(us.key)).status_code == 200
    assert requests.delete(url, headers=auth(us.key)).status_code == 204
    assert not os.path.exists(spool(us, url))
    assert requests.head(url, headers=auth(us.key)).status_code == 410
    assert patch(url, us.key, 0, b"abcde").status_code == 410


def test_concurrent_patches_lock(us):
    url = create(us, us.key, 200000)

    def slow():
        yield b"a" * 1000
        time.sleep(1.5)
        yield b"b" * 1000
    first = {}
    t = threading.Thread(target=lambda: first.setdefault("r", patch(url, us.key, 0, slow())))
    t.start()
    time.sleep(0.5)
    second = patch(url, us.key, 0, b"c" * 1000)
    t.join()
    assert second.status_code == 423 and second.headers["Retry-After"] == "1"
    assert first["r"].status_code == 204 and first["r"].headers["Upload-Offset"] == "2000"


@pytest.mark.parametrize("db", DBS)
def test_expired_upload_is_gone(start, db):
    s = start(db, "--auth", "apikey", "--conf", "GeminiMCPUploadExpiry 1")
    key = s.info["api_key"]
    url = create(s, key, 10)
    assert patch(url, key, 0, b"12345").status_code == 204
    time.sleep(2.2)
    assert requests.head(url, headers=auth(key)).status_code == 410
    r = patch(url, key, 5, b"67890")
    assert r.status_code == 410 and "expired" in r.text


class Restartable:
    """A server whose spool and database outlive it: kill() SIGKILLs every httpd process
    of it (nothing runs its cleanups), restart() starts it again on the same port."""

    def __init__(self, start, db, request, *args):
        # Kept across both instances; reachable by the httpd user (tmp_path is not).
        self.data_dir = tempfile.mkdtemp(prefix="gmcp-kill-")
        os.chmod(self.data_dir, 0o755)
        request.addfinalizer(lambda: shutil.rmtree(self.data_dir, ignore_errors=True))
        dbargs = []
        if db == "pgsql":   # one database that outlives the first instance
            from harness import dsn_with_db, psql
            base = request.getfixturevalue("pg_dsn")
            name = "gmcp_kill_" + os.urandom(4).hex()
            psql(dsn_with_db(base, "postgres"), f'CREATE DATABASE "{name}"')
            request.addfinalizer(lambda: psql(dsn_with_db(base, "postgres"),
                                              f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            dbargs = ["--pg-dsn", dsn_with_db(base, name)]
        self.start, self.db = start, db
        self.args = ["--auth", "apikey", "--data-dir", self.data_dir, *dbargs, *args]
        self.s = start(db, *self.args)
        self.key = self.s.info["api_key"]

    def kill(self):
        pids = [int(p) for p in subprocess.run(["pgrep", "-f", self.s.info["conf"]],
                                               capture_output=True, text=True).stdout.split()]
        for p in pids:
            os.kill(p, signal.SIGKILL)
        self.s.proc.wait(30)

    def restart(self):
        port = self.s.base.rsplit(":", 1)[1]
        self.s = self.start(self.db, *self.args, "--port", port)
        return self.s


INTERVAL = ["--conf", "<Location /uploads>\nGeminiMCPUploadDurability interval 4M 1\n</Location>"]


@pytest.mark.parametrize("mode", ["synced", "interval"])
@pytest.mark.parametrize("db", DBS)
def test_sigkill_mid_chunk_then_resume(start, db, mode, tmp_path, request):
    """httpd is killed (SIGKILL) in the middle of a PATCH; after a restart HEAD tells a
    durable offset and tus-js-client finishes a byte-identical file. In both modes."""
    rs = Restartable(start, db, request, *(INTERVAL if mode == "interval" else []))
    s, key = rs.s, rs.key
    path = make_file(tmp_path, 24 * 1024 * 1024)
    data = open(path, "rb").read()
    url = create(s, key, len(data))

    def body():
        yield data[:10 * 1024 * 1024]          # past one 8 MiB commit point
        time.sleep(30)                          # never finishes: httpd dies first
        yield data[10 * 1024 * 1024:]
    t = threading.Thread(target=lambda: _swallow(lambda: patch(url, key, 0, body())))
    t.daemon = True
    t.start()
    time.sleep(2.5)
    rs.kill()
    s2 = rs.restart()
    r = requests.head(url, headers=auth(key))
    assert r.status_code == 200
    off = int(r.headers["Upload-Offset"])
    assert (8 if mode == "synced" else 4) * MiB <= off <= 10 * MiB
    with open(spool(s2, url), "rb") as f:
        assert f.read(off) == data[:off]       # what HEAD counts is really on disk
    # The running SHA-256 was saved with the offset, at the offset; nothing lags it.
    assert row(s2, url, "sha_state")[0].split(":")[2] == str(off)
    assert row(s2, url, "durable_offset") == ["-1"]
    out = tus_js(s2, path, key, uploadUrl=url, chunkSize=5 * 1024 * 1024)
    assert out["url"] == url and sha256_file(spool(s2, url)) == sha256_file(path)
    assert row(s2, url, "sha256") == [sha256_file(path)]


@pytest.mark.parametrize("db", DBS)
def test_interval_mode_with_every_client_shape(start, db, tmp_path):
    """Interval mode through tus-js-client: one request, chunks with
    creation-with-upload, parallel parts concatenated; each byte-identical, hashed, and
    durable within the interval's seconds."""
    s = start(db, "--auth", "apikey", "--conf",
              "<Location /uploads>\nGeminiMCPUploadDurability interval 8M 1\n</Location>")
    key = s.info["api_key"]
    path = make_file(tmp_path, 9 * MiB + 3)
    for opts in ({}, {"chunkSize": 2 * MiB, "uploadDataDuringCreation": True},
                 {"parallelUploads": 3, "chunkSize": MiB}):
        out = tus_js(s, path, key, **opts)
        assert sha256_file(spool(s, out["url"])) == sha256_file(path), opts
        assert row(s, out["url"], "state, sha256") == ["complete", sha256_file(path)], opts
        assert _wait_durable(s, out["url"], 5), opts


def _wait_durable(s, url, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if row(s, url, "durable_offset") == ["-1"]:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("db", DBS)
def test_interval_answers_before_the_sync_and_syncs_within_its_seconds(start, db, tmp_path):
    """Interval mode: the 204 comes once the bytes are written; the row keeps the
    durable point below the offset, held by this machine, and the child's tail syncer
    moves it up within the configured seconds."""
    s = start(db, "--auth", "apikey", "--conf",
              "<Location /uploads>\nGeminiMCPUploadDurability interval 256M 3\n</Location>")
    key = s.info["api_key"]
    data = os.urandom(6 * MiB + 7)
    url = create(s, key, 2 * len(data))
    r = patch(url, key, 0, data)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    upload_offset, durable, on = row(s, url, "upload_offset, durable_offset, unsynced_on")
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    assert (upload_offset, durable) == (str(len(data)), "0") and on.endswith(" " + boot)
    assert requests.head(url, headers=auth(key)).headers["Upload-Offset"] == str(len(data))
    assert _wait_durable(s, url, 6)
    # The next PATCH continues at the offset told, then completes.
    r = patch(url, key, len(data), data)
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(2 * len(data))
    assert row(s, url, "state, sha256") == ["complete", hashlib.sha256(data + data).hexdigest()]
    assert _wait_durable(s, url, 6)
    # A tail whose upload is gone before its sync (terminated here) is simply dropped.
    s.new_log_lines()
    url2 = create(s, key, 2 * len(data))
    assert patch(url2, key, 0, data).status_code == 204
    assert requests.delete(url2, headers=auth(key)).status_code == 204
    time.sleep(3.5)
    assert not [l for l in s.new_log_lines() if "GMCP017" in l]


@pytest.mark.parametrize("db", DBS)
def test_interval_tails_are_synced_when_httpd_stops(start, db, request):
    """A tail still waiting for its sync (60 s) when httpd stops is synced by the child on
    its way out: after the stop the row has nothing lagging."""
    rs = Restartable(start, db, request, "--conf",
                     "<Location /uploads>\nGeminiMCPUploadDurability interval 256M 60\n</Location>")
    s, key = rs.s, rs.key
    data = os.urandom(3 * MiB + 1)
    url = create(s, key, 4 * MiB)
    assert patch(url, key, 0, data).status_code == 204
    assert row(s, url, "durable_offset") == ["0"]
    s.stop()
    s = rs.restart()
    assert row(s, url, "upload_offset, durable_offset") == [str(len(data)), "-1"]


@pytest.mark.parametrize("db", DBS)
def test_interval_after_a_machine_crash_resumes_from_the_durable_point(start, db, tmp_path,
                                                                        request):
    """Interval mode, SIGKILL right after a 204 whose tail is not yet synced: the page
    cache survives a process, so after a restart HEAD still tells the whole offset. A
    machine restart (simulated: the row's holder becomes an earlier boot of this host,
    and the spool loses the unsynced bytes) makes HEAD tell the durable point with its
    hash state, and tus-js-client finishes a byte-identical file."""
    rs = Restartable(start, db, request, "--conf",
                     "<Location /uploads>\nGeminiMCPUploadDurability interval 256M 3\n</Location>")
    s, key = rs.s, rs.key
    path = make_file(tmp_path, 20 * MiB + 11)
    data = open(path, "rb").read()
    url = create(s, key, len(data))
    assert patch(url, key, 0, data[:8 * MiB]).status_code == 204
    assert _wait_durable(s, url, 8)             # the first 8 MiB are on disk
    r = patch(url, key, 8 * MiB, data[8 * MiB:])  # the rest: complete, told so at once
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    rs.kill()                                   # before its tail syncer ran (3 s)
    s = rs.restart()
    assert row(s, url, "state, upload_offset, durable_offset") == [
        "complete", str(len(data)), str(8 * MiB)]
    assert requests.head(url, headers=auth(key)).headers["Upload-Offset"] == str(len(data))
    # The machine "restarts": another boot id holds the tail, and it never reached the
    # disk. (Nothing of this process has it queued: the one that had was killed.)
    host = row(s, url, "unsynced_on")[0].rsplit(" ", 1)[0]
    s.sql(f"UPDATE uploads SET unsynced_on = '{host} 00000000-0000-0000-0000-000000000000'")
    with open(spool(s, url), "r+b") as f:
        f.seek(8 * MiB)
        f.write(b"\0" * (4 * MiB))
        f.truncate(12 * MiB)
    r = requests.head(url, headers=auth(key))
    assert r.status_code == 200 and r.headers["Upload-Offset"] == str(8 * MiB)
    # An upload told complete is not complete after such a crash: it receives again.
    shown = json.loads(s.gmcpctl_run("--json", "uploads", "show", url.rsplit("/", 1)[1]).stdout)
    assert shown["state"] == "receiving" and shown["offset"] == 8 * MiB and "sha256" not in shown
    out = tus_js(s, path, key, uploadUrl=url, chunkSize=5 * MiB)
    assert out["url"] == url and sha256_file(spool(s, url)) == sha256_file(path)
    assert row(s, url, "state, sha256") == ["complete", sha256_file(path)]


def row(s, url, cols):
    return s.sql(f"SELECT {cols} FROM uploads WHERE id = '{url.rsplit('/', 1)[1]}'")[0].split("|")


def b64(text):
    return base64.b64encode(text.encode()).decode()


# ---- integrity: the running hash, content sniffing -----------------------------------------

def test_sha256_is_kept_as_bytes_arrive(us):
    """The whole-file SHA-256 is the hash of the bytes as they arrived, carried from PATCH
    to PATCH in SQL: changing the spool file behind the server's back does not change it
    (the relay then notices Gemini's hash differs, see test_files.py)."""
    data = os.urandom(3 * MiB + 5)
    url = create(us, us.key, len(data))
    assert patch(url, us.key, 0, data[:1000003]).status_code == 204
    state = row(us, url, "sha_state")[0]
    assert state.startswith("s1:") and state.split(":")[2] == "1000003"
    assert len(state.split(":")[3]) == 2 * (1000003 % 64)      # the pending partial block
    assert patch(url, us.key, 1000003, data[1000003:2 * MiB]).status_code == 204
    with open(spool(us, url), "r+b") as f:                     # bit rot below the offset
        f.seek(10)
        f.write(b"\0" * 4)
    assert patch(url, us.key, 2 * MiB, data[2 * MiB:]).status_code == 204
    assert row(us, url, "sha256, sha_state, phase") == [hashlib.sha256(data).hexdigest(), "",
                                                        "received"]
    # Complete: an empty PATCH at the end changes nothing, bytes past it are refused.
    us.sql(f"UPDATE uploads SET phase = 'active' WHERE id = '{url.rsplit('/', 1)[1]}'")
    r = patch(url, us.key, len(data), b"")
    assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(data))
    assert patch(url, us.key, len(data), b"more").status_code == 413
    assert row(us, url, "phase") == ["active"]


PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000010000000100806000000"
                    "1ff3ff61") + os.urandom(20000)


def test_content_type_is_checked_against_the_declared_one(us):
    meta = "filename " + b64("report.pdf") + ",filetype " + b64("application/pdf")
    url = create(us, us.key, len(PNG), **{"Upload-Metadata": meta})
    r = patch(url, us.key, 0, PNG)
    assert r.status_code == 415 and "image/png" in r.text and "application/pdf" in r.text
    assert requests.head(url, headers=auth(us.key)).headers["Upload-Offset"] == "0"
    assert os.path.getsize(spool(us, url)) == 0                  # the chunk was discarded
    # The truth declared (or nothing, or generic binary) passes; what was found is recorded.
    for ft in ("image/png", None, "application/octet-stream"):
        meta = "filename " + b64("a.png") + (",filetype " + b64(ft) if ft else "")
        url = create(us, us.key, len(PNG), **{"Upload-Metadata": meta})
        assert patch(url, us.key, 0, PNG).status_code == 204
        assert row(us, url, "sniffed") == ["image/png"]
    shown = json.loads(us.gmcpctl_run("--json", "uploads", "show",
                                      url.rsplit("/", 1)[1]).stdout)
    assert shown["sniffed_type"] == "image/png"
    # Generic binary declared for anything, and text as text, never conflict.
    url = create(us, us.key, 11, **{"Upload-Metadata": "filetype " + b64("text/csv")})
    assert patch(url, us.key, 0, b"a,b\n1,2\n3,4").status_code == 204


# ---- bandwidth --------------------------------------------------------------------------------

def burst(rate):
    return max(65536, rate // 10)       # GMCP_THROTTLE_BURST


@pytest.mark.parametrize("db", DBS)
def test_bandwidth_limits(start, db, tmp_path, request):
    """GeminiMCPUploadRate (one upload) and GeminiMCPUploadKeyRate (all of a caller's
    uploads, across processes), timed by tus-js-client: within 10 %."""
    if db == "pgsql":
        request.getfixturevalue("pg_dsn")
    rate, key_rate = MiB, 3 * MiB // 2
    s = start(db, "--auth", "apikey", "--location-conf", "GeminiMCPUploadRate 1M",
              "--location-conf", "GeminiMCPUploadKeyRate 1536K")
    key = s.info["api_key"]
    one = make_file(tmp_path, 4 * MiB, "one.bin")
    out = tus_js(s, one, key)
    took = (out["t1"] - out["t0"]) / 1000
    want = (4 * MiB - burst(rate)) / rate
    assert abs(took - want) <= 0.1 * want, (took, want)
    assert sha256_file(spool(s, out["url"])) == sha256_file(one)
    # Two at once under one key: the key's rate binds (each alone could do 1 MiB/s).
    paths = [make_file(tmp_path, 3 * MiB, f"two{i}.bin") for i in range(2)]
    outs = [None, None]

    def one(i):
        try:
            outs[i] = tus_js(s, paths[i], key)
        except BaseException as e:      # reported by the main thread below
            outs[i] = e
    ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for o in outs:
        if isinstance(o, BaseException):
            raise o
    took = (max(o["t1"] for o in outs) - min(o["t0"] for o in outs)) / 1000
    want = (6 * MiB - burst(key_rate)) / key_rate
    assert abs(took - want) <= 0.1 * want, (took, want)
    for o, pth in zip(outs, paths):
        assert sha256_file(spool(s, o["url"])) == sha256_file(pth)


# ---- progress --------------------------------------------------------------------------------

def watch(url, key, until, out, ready):
    """Collect progress events of an upload until one has a phase in `until`."""
    h = auth(key, Accept="text/event-stream")
    with requests.get(url, headers=h, stream=True, timeout=60) as r:
        out.append(r.headers["Content-Type"])
        ready.set()
        cur = {}
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                cur = json.loads(line[6:])
            elif line == "" and cur:
                out.append(cur)
                if cur["phase"] in until:
                    return
                cur = {}


def test_progress_stream(start):
    s = start("sqlite", "--auth", "apikey", "--location-conf", "GeminiMCPUploadRate 1M")
    key = s.info["api_key"]
    data = os.urandom(3 * MiB)
    url = create(s, key, len(data))
    events, ready = [], threading.Event()
    t = threading.Thread(target=watch, args=(url, key, ("received", "failed"), events, ready))
    t.start()
    ready.wait(10)
    assert patch(url, key, 0, data).status_code == 204
    t.join(30)
    assert events[0].startswith("text/event-stream")
    evs = events[1:]
    assert evs[0]["phase"] == "receiving" and evs[0]["length"] == len(data)
    assert evs[-1]["phase"] == "received" and evs[-1]["bytes"] == len(data)
    assert evs[-1]["eta"] is None
    moving = [e for e in evs if e["phase"] == "receiving" and 0 < e["bytes"] < len(data)]
    assert len(moving) >= 3, evs
    assert all(a["bytes"] <= b["bytes"] for a, b in zip(evs, evs[1:]))
    # Rate and ETA once a few samples are in: about 1 MiB/s, and the ETA to match.
    late = [e for e in moving if e["bytes"] > MiB]
    assert late and all(0.6 * MiB < e["rate"] < 1.4 * MiB for e in late), late
    assert all(e["eta"] is not None and abs(e["eta"] - (len(data) - e["bytes"]) / e["rate"]) < 0.2
               for e in late)
    # Once, as JSON; another key sees nothing.
    snap = requests.get(url, headers=auth(key, Accept="application/json")).json()
    assert snap["phase"] == "received" and snap["bytes"] == len(data) and snap["offset"] == len(data)
    other = new_key(s, "other")
    assert requests.get(url, headers=auth(other, Accept="text/event-stream")).status_code == 404


def _swallow(fn):
    try:
        fn()
    except Exception:
        pass


# ---- gmcpctl uploads and cleanup --------------------------------------------------------------

@pytest.mark.parametrize("db", DBS)
def test_gmcpctl_uploads_and_cleanup_removes_exactly_what_expired(start, db):
    s = start(db, "--auth", "apikey")
    key = s.info["api_key"]
    keep = create(s, key, 10)                    # live, unfinished
    done = create(s, key, 3)
    assert patch(done, key, 0, b"abc").status_code == 204
    old = create(s, key, 10)                     # unfinished and past its expiry
    assert patch(old, key, 0, b"12345").status_code == 204
    cancelled = create(s, key, 4)
    ids = {n: u.rsplit("/", 1)[1] for n, u in
           (("keep", keep), ("done", done), ("old", old), ("cancelled", cancelled))}
    listed = json.loads(s.gmcpctl_run("--json", "uploads", "list").stdout)
    assert {u["upload_id"] for u in listed} == set(ids.values())
    shown = json.loads(s.gmcpctl_run("--json", "uploads", "show", ids["done"]).stdout)
    assert shown["state"] == "complete" and shown["offset"] == 3
    s.gmcpctl_run("uploads", "cancel", ids["cancelled"])
    assert requests.head(cancelled, headers=auth(key)).status_code == 410
    # Backdate: one upload, one MCP session, one chat session, one file record expire.
    s.sql(f"UPDATE uploads SET expires = 1000 WHERE id IN ('{ids['old']}', '{ids['cancelled']}')")
    now = int(time.time())
    s.sql("INSERT INTO mcp_sessions (id, owner, protocol_version, client_info, client_caps, "
          f"log_level, created, last_seen) VALUES ('s-old', 'x', '2025-11-25', '{{}}', '{{}}', '', "
          f"1000, 1000), ('s-new', 'x', '2025-11-25', '{{}}', '{{}}', '', {now}, {now})")
    s.sql("INSERT INTO chat_sessions (id, owner, model, created, last_used) VALUES "
          f"('c-old', 'x', 'm', 1000, 1000), ('c-new', 'x', 'm', {now}, {now})")
    s.sql("INSERT INTO gemini_files (name, owner, uri, mime_type, size, sha256, state, created, "
          f"expires) VALUES ('files/old', 'x', 'u', 't', 1, 'h', 'ACTIVE', 1000, 2000), "
          f"('files/new', 'x', 'u', 't', 1, 'h', 'ACTIVE', {now}, {now + 3600})")
    dry = json.loads(s.gmcpctl_run("--json", "cleanup", "--dry-run").stdout)
    dry.pop("retention")                         # usage/audit/events: test_retention.py
    assert dry == {"dry_run": True, "uploads": 2, "spool_bytes": 5, "mcp_sessions": 1,
                   "chat_sessions": 1, "files": 1, "tasks": 0, "orphaned_tasks": 0,
                   "upload_dir_known": True}
    assert len(s.sql("SELECT id FROM uploads")) == 4          # nothing removed yet
    p = s.gmcpctl_run("cleanup")
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""   # quiet for cron
    assert sorted(s.sql("SELECT id FROM uploads")) == sorted([ids["keep"], ids["done"]])
    assert not os.path.exists(spool(s, old))
    assert os.path.exists(spool(s, done))
    assert s.sql("SELECT id FROM mcp_sessions WHERE id LIKE 's-%'") == ["s-new"]
    assert s.sql("SELECT id FROM chat_sessions WHERE id LIKE 'c-%'") == ["c-new"]
    assert s.sql("SELECT name FROM gemini_files") == ["files/new"]
    assert requests.head(keep, headers=auth(key)).status_code == 200
    again = json.loads(s.gmcpctl_run("--json", "cleanup").stdout)
    assert again["uploads"] == 0 and again["files"] == 0
    audit = json.loads(s.gmcpctl_run("--json", "audit").stdout)
    assert [a["action"] for a in audit].count("cleanup") == 1
    assert "upload.cancel" in [a["action"] for a in audit]


def test_cleanup_runs_one_at_a_time(start):
    s = start("sqlite")
    params = s.gmcpctl[s.gmcpctl.index("--config") + 1]
    conf = open(params).read()
    import re
    db = re.search(r'DBDParams "([^"]*)"', conf).group(1)
    # Hold the lock the way a running cleanup does, then try a second one.
    import fcntl
    with open(db + ".cleanup-lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)   # what apr_file_lock uses
        p = s.gmcpctl_run("cleanup", check=False)
    assert p.returncode == 1 and "another gmcpctl job" in p.stderr
    assert s.gmcpctl_run("cleanup").returncode == 0


def test_per_owner_spool_quota(start):
    s = start("sqlite", "--auth", "apikey", "--location-conf", "GeminiMCPUploadQuota 100K")
    key = s.info["api_key"]
    a = create(s, key, 60 * 1024)
    r = requests.post(s.info["upload"], headers=auth(key, **{"Upload-Length": str(50 * 1024)}))
    assert r.status_code == 413 and "spool quota" in r.text
    other = new_key(s, "other")                      # quotas are per owner
    assert requests.post(s.info["upload"], headers=auth(other, **{
        "Upload-Length": str(50 * 1024)})).status_code == 201
    # Deferred length: the quota bounds what may still arrive.
    r = requests.post(s.info["upload"], headers=auth(key, **{"Upload-Defer-Length": "1"}))
    d = r.headers["Location"]
    assert patch(d, key, 0, b"x" * (50 * 1024)).status_code == 413
    assert requests.head(d, headers=auth(key)).headers["Upload-Offset"] == "0"
    assert patch(d, key, 0, b"x" * (30 * 1024)).status_code == 204
    # Terminating frees the space.
    assert requests.delete(a, headers=auth(key)).status_code == 204
    assert requests.post(s.info["upload"], headers=auth(key, **{
        "Upload-Length": str(50 * 1024)})).status_code == 201
