#!/usr/bin/python3
"""What mod_gemini_mcp adds to a Gemini call in gemini_chat_send, by history length.

  bench/chat_send.py [--samples N] [--histories 0,10,100] [--db sqlite|pgsql]

For each history length H: a chat session is given H stored messages, then N sends are
timed through httpd (MCP tools/call over HTTP, session lookup, lease, history loaded from
SQL, Gemini request built, answer stored in one transaction); after each send its two
new messages are removed again so every sample sees exactly H. The baseline is the same
generateContent request (H + 1 contents) sent straight to test/fake-gemini, which answers
at once. Overhead = p50(through MCP) - p50(direct). Prints a Markdown table.
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
                            "--db", args.db, "--log-level", "warn"],
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
            via, direct = [], []
            body = {"contents": contents + [{"role": "user", "parts": [{"text": "next"}]}]}
            url = (f"{info['gemini']}/v1beta/models/gemini-2.5-flash:generateContent")
            gh = {"x-goog-api-key": "fake-gemini-key", "Content-Type": "application/json"}
            for _ in range(args.samples):
                t0 = time.perf_counter()
                http.post(url, headers=gh, data=json.dumps(body)).json()
                direct.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                tool("gemini_chat_send", {"session_id": chat, "message": "next"})
                via.append(time.perf_counter() - t0)
                sql(info, args.db, f"DELETE FROM chat_messages WHERE session_id = '{chat}' "
                    f"AND seq > {hist}")
            rows.append((hist, statistics.median(direct) * 1000, statistics.median(via) * 1000,
                         sorted(via)[int(len(via) * 0.99) - 1] * 1000))
        print(f"\n{args.samples} sends per row, {args.db}\n")
        print("| history | direct to fake p50 ms | via MCP p50 ms | overhead p50 ms | via MCP p99 ms |")
        print("|---|---|---|---|---|")
        for hist, d, v, v99 in rows:
            print(f"| {hist} | {d:.2f} | {v:.2f} | {v - d:.2f} | {v99:.2f} |")
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait()


if __name__ == "__main__":
    sys.exit(main())
