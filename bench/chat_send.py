#!/usr/bin/python3
"""What mod_gemini_mcp adds to a Gemini call in gemini_chat_send, by history length.

  bench/chat_send.py [--samples N] [--histories 0,10,100] [--db sqlite|pgsql]

For each history length H: a chat session is given H stored messages (and the count of
them). Each sample first puts the chat back to exactly H messages (SQL), then times two
sends through httpd (one child: MCP tools/call over HTTP, session lookup, lease, history,
Gemini request built, answer stored in one statement):
- "read": the first, whose history this process has no copy of (the chat changed
  behind its back), so it is read from the database; baseline: the same generateContent
  request with H + 1 contents sent straight to test/fake-gemini, which answers at once;
- "copy": the next one, which takes the history from the process's copy (as a chat
  continued on the same child does); baseline: the direct request with H + 3 contents.
Overhead = p50(through MCP) - p50(direct). Prints a Markdown table.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sql(info, db, query):
    conf = open(info["conf"]).read()
    import re
    params = re.search(r'DBDParams "([^"]*)"', conf).group(1)
    cmd = ["sqlite3", params] if db == "sqlite" else ["psql", "-X", "-q", params, "-f", "-"]
    subprocess.run(cmd, input=query + ";\n", text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--histories", default="0,10,100")
    ap.add_argument("--db", default="sqlite")
    args = ap.parse_args()
    srv = subprocess.Popen([os.path.join(ROOT, "test", "start-server"), "--fake-gemini",
                            "--db", args.db, "--log-level", "warn", "--workers", "1"],
                           stdout=subprocess.PIPE, text=True)
    info = json.loads(srv.stdout.readline())
    http = requests.Session()
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    try:
        r = http.post(info["mcp"], headers=h, json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "bench", "version": "1"}}})
        h["Mcp-Session-Id"] = r.headers["Mcp-Session-Id"]
        h["MCP-Protocol-Version"] = "2025-11-25"

        def tool(name, arguments):
            r = http.post(info["mcp"], headers=h, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": name, "arguments": arguments}})
            res = r.json()["result"]
            assert not res.get("isError"), res
            return res
        rows = []
        for hist in [int(x) for x in args.histories.split(",")]:
            chat = tool("gemini_chat_start", {})["structuredContent"]["session_id"]
            values = []
            contents = []
            for i in range(hist):
                role = "user" if i % 2 == 0 else "model"
                text = f"stored message {i} " + "lorem ipsum " * 8
                values.append(f"('{chat}', {i + 1}, '{role}', "
                              f"'{json.dumps([{'text': text}])}', '{text}', 0)")
                contents.append({"role": role, "parts": [{"text": text}]})
            if values:
                sql(info, args.db, "INSERT INTO chat_messages (session_id, seq, role, parts, "
                    "text, created) VALUES " + ", ".join(values))
            reset = (f"DELETE FROM chat_messages WHERE session_id = '{chat}' AND seq > {hist}; "
                     f"UPDATE chat_sessions SET message_count = {hist} WHERE id = '{chat}'")
            url = (f"{info['gemini']}/v1beta/models/gemini-2.5-flash:generateContent")
            gh = {"x-goog-api-key": "fake-gemini-key", "Content-Type": "application/json"}
            nxt = {"role": "user", "parts": [{"text": "next"}]}
            t = {k: [] for k in ("read", "copy", "direct_read", "direct_copy")}

            def timed(key, fn):
                t0 = time.perf_counter()
                out = fn()
                t[key].append(time.perf_counter() - t0)
                return out
            for _ in range(args.samples):
                sql(info, args.db, reset)
                body = json.dumps({"contents": contents + [nxt]})
                timed("direct_read", lambda: http.post(url, headers=gh, data=body).json())
                res = timed("read", lambda: tool("gemini_chat_send",
                                                 {"session_id": chat, "message": "next"}))
                reply = {"role": "model", "parts": [{"text": res["content"][0]["text"]}]}
                body = json.dumps({"contents": contents + [nxt, reply, nxt]})
                timed("direct_copy", lambda: http.post(url, headers=gh, data=body).json())
                timed("copy", lambda: tool("gemini_chat_send",
                                           {"session_id": chat, "message": "next"}))
            med = {k: statistics.median(v) * 1000 for k, v in t.items()}
            p99 = {k: sorted(v)[int(len(v) * 0.99) - 1] * 1000 for k, v in t.items()}
            rows.append((hist, med, p99))
        print(f"\n{args.samples} samples per row, {args.db}\n")
        print("| history | read: direct p50 ms | read: via MCP p50 ms | read: overhead p50 ms "
              "| copy: direct p50 ms | copy: via MCP p50 ms | copy: overhead p50 ms "
              "| via MCP p99 ms (read, copy) |")
        print("|---|---|---|---|---|---|---|---|")
        for hist, m, q in rows:
            print(f"| {hist} | {m['direct_read']:.2f} | {m['read']:.2f} | "
                  f"{m['read'] - m['direct_read']:.2f} | {m['direct_copy']:.2f} | "
                  f"{m['copy']:.2f} | {m['copy'] - m['direct_copy']:.2f} | "
                  f"{q['read']:.1f}, {q['copy']:.1f} |")
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait()


if __name__ == "__main__":
    sys.exit(main())
