"""After a restore on the other driver, a server on the restored database serves as the
source did: its API keys authenticate (same pepper), its chats continue, and usage and
audit totals equal the source's."""
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import requests

from conftest import response_of
from harness import ROOT, chown_tree

BUILD = os.environ.get("GMCP_BUILD", "build")
BUILD = BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD)
GMCPCTL = os.path.join(BUILD, "gmcpctl")
SQL = os.path.join(ROOT, "sql")
ACCEPT = "application/json, text/event-stream"


def db_args(s):
    conf = open(s.info["conf"]).read()
    params = re.search(r'DBDParams "([^"]*)"', conf).group(1)
    return ["-d", "sqlite3" if s.db == "sqlite" else "pgsql", "-p", params, "-s", SQL,
            "-k", "file:" + os.path.join(s.info["data_dir"], "key-pepper")]


def ctl(args, *more):
    r = subprocess.run([GMCPCTL] + args + list(more), capture_output=True, text=True)
    assert r.returncode == 0, (more, r.stderr)
    return r.stdout


def call(s, key, sid, name, arguments):
    h = {"Content-Type": "application/json", "Accept": ACCEPT,
         "Authorization": f"Bearer {key}"}
    if sid:
        h["Mcp-Session-Id"] = sid
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}
    r = requests.post(s.url, data=json.dumps(body), headers=h, timeout=30)
    assert r.status_code == 200, r.text
    return response_of(r)["result"]


def session(s, key):
    h = {"Content-Type": "application/json", "Accept": ACCEPT,
         "Authorization": f"Bearer {key}"}
    r = requests.post(s.url, headers=h, timeout=30, data=json.dumps({
        "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "restore", "version": "1"}}}))
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    h["Mcp-Session-Id"] = sid
    requests.post(s.url, headers=h, timeout=30,
                  data=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return sid


@pytest.mark.parametrize("src,dst", [("sqlite", "pgsql"), ("pgsql", "sqlite")])
def test_restored_database_serves_like_the_source(start, fake_gemini, src, dst):
    work = tempfile.mkdtemp(prefix="gmcp-rs-")
    os.chmod(work, 0o755)
    try:
        gem = ["--gemini-url", fake_gemini.url, "--gemini-key", fake_gemini.key]
        d1, d2 = os.path.join(work, "src"), os.path.join(work, "dst")
        a = start(src, "--auth", "apikey", "--data-dir", d1, *gem)
        src_db = db_args(a)
        key = json.loads(ctl(src_db, "--json", "keys", "create", "--name", "carol",
                             "--tenant", "acme"))["secret"]
        sid = session(a, key)
        chat = call(a, key, sid, "gemini_chat_start", {"title": "kept"})
        chat = chat["structuredContent"]["session_id"]
        first = call(a, key, sid, "gemini_chat_send", {"session_id": chat, "message": "one"})
        assert not first.get("isError"), first
        a.graceful_restart()        # the old children write their last usage counts
        usage = json.loads(ctl(src_db, "--json", "usage", "--since", "2020-01-01"))
        audit = json.loads(ctl(src_db, "--json", "audit", "--since", "2020-01-01"))
        assert usage and audit
        archive = os.path.join(work, "archive.gmcpbak")
        ctl(src_db, "backup", "--output", archive)
        a.stop()

        # The other driver, an empty database, the same pepper.
        os.makedirs(d2)
        shutil.copy(os.path.join(d1, "key-pepper"), os.path.join(d2, "key-pepper"))
        b = start(dst, "--auth", "apikey", "--no-migrate", "--data-dir", d2, *gem)
        dst_db = db_args(b)
        ctl(dst_db, "restore", archive)
        if dst == "sqlite":
            # gmcpctl ran as root here: the new database file (and its WAL) must belong to
            # the httpd user, as when an admin runs restore as that user (operations.md).
            chown_tree(d2, "www-data")

        assert json.loads(ctl(dst_db, "--json", "usage", "--since", "2020-01-01")) == usage
        restored_audit = json.loads(ctl(dst_db, "--json", "audit", "--since", "2020-01-01"))
        assert restored_audit[:len(audit)] == audit
        sid = session(b, key)       # the key authenticates on the restored database
        second = call(b, key, sid, "gemini_chat_send", {"session_id": chat, "message": "two"})
        assert not second.get("isError"), second
        assert second["structuredContent"]["message_count"] == 4
        history = call(b, key, sid, "gemini_chat_history", {"session_id": chat})
        texts = [m["text"] for m in history["structuredContent"]["messages"]
                 if m["role"] == "user"]
        assert texts == ["one", "two"]
        r = requests.post(b.url, headers={"Content-Type": "application/json",
                                          "Accept": ACCEPT,
                                          "Authorization": "Bearer gmcp_0000000000000000_x"},
                          data="{}", timeout=30)
        assert r.status_code == 401
    finally:
        shutil.rmtree(work, ignore_errors=True)
