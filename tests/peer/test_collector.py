#!/usr/bin/env python3
"""Self-test of tests/peer/collector.py (standard library only).

    python3 tests/peer/test_collector.py

Starts the collector as a child process (on a port file, as the Rust tests
do), checks each behaviour its docstring promises, and stops it.  Every wait is
bounded; exits non-zero on the first failure.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

COLLECTOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "collector.py")
TIMEOUT = 10  # seconds, for every network call and process wait
TOKEN = "11111111-2222-3333-4444-555555555555"


class Collector:
    """A running collector child process."""

    def __init__(self, *args: str):
        self.dir = tempfile.TemporaryDirectory(prefix="collector-test-")
        self.port_file = os.path.join(self.dir.name, "port")
        self.state_file = os.path.join(self.dir.name, "events.jsonl")
        self.proc = subprocess.Popen(
            [sys.executable, COLLECTOR, "--port-file", self.port_file, "--state-file", self.state_file, *args],
            stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("collector did not write its port file")
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read())

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)
            raise
        finally:
            self.proc.stdout.close()
        return rc

    def request(self, method: str, path: str, body=None, headers=None, conn=None):
        """(status, headers, parsed JSON or text) of one request."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read().decode()
            ctype = resp.getheader("Content-Type", "")
            return resp.status, resp, (json.loads(data) if "json" in ctype else data)
        finally:
            if own:
                conn.close()

    def control(self, name: str, body=None):
        status, _, answer = self.request("POST", f"/_collector/{name}", body if body is not None else {})
        assert status == 200, (name, status, answer)

    def events(self):
        # urllib here on purpose: the API must work with the plainest client too.
        url = f"http://127.0.0.1:{self.port}/_collector/events"
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return json.load(resp)

    def requests(self):
        return self.request("GET", "/_collector/requests")[2]


def ndjson(*lines) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


BULK = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}


class CollectorTest(unittest.TestCase):
    def setUp(self):
        self.c = Collector()

    def tearDown(self):
        try:
            self.assertEqual(self.c.stop(), 0, "collector exits 0 on SIGTERM")
        finally:
            self.c.dir.cleanup()

    def restart(self, *args: str) -> None:
        """Replace the collector with a fresh one started with `args`."""
        self.c.stop()
        self.c.dir.cleanup()
        self.c = Collector(*args)

    def test_startup_and_health(self):
        line = self.c.proc.stdout.readline()
        self.assertEqual(line.strip(), f"collector listening on 127.0.0.1:{self.c.port}")
        status, _, body = self.c.request("GET", "/_collector/health")
        self.assertEqual((status, body), (200, "ok"))
        self.assertEqual(self.c.request("GET", "/_collector/nope")[0], 404)

    def test_ndjson_and_request_log(self):
        status, _, body = self.c.request("POST", "/ingest?x=1", ndjson({"a": 1}, {"a": 2}) + "\n",
                                         {"Content-Type": "application/x-ndjson", "X-Test": "yes"})
        self.assertEqual((status, body), (200, {"accepted": 2}))
        self.assertEqual(self.c.events(), {"events": [{"a": 1}, {"a": 2}], "duplicates": 0})
        (req,) = self.c.requests()
        self.assertEqual((req["method"], req["path"], req["query"], req["status"]), ("POST", "/ingest", "x=1", 200))
        self.assertEqual(req["headers"]["x-test"], "yes")
        self.assertIn('{"a": 1}', req["body"])
        self.assertIsInstance(req["time"], float)

    def test_json_array_keepalive_chunked_gzip(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.c.port, timeout=TIMEOUT)
        try:
            # JSON array, then on the same connection a chunked and a gzip body.
            self.assertEqual(self.c.request("POST", "/logs", [{"n": 1}, {"n": 2}], JSON, conn)[2], {"accepted": 2})
            sock = conn.sock
            conn.request("POST", "/logs", body=iter([b'{"n": 3}\n', b'{"n"', b': 4}\n']),
                         headers={"Content-Type": "application/x-ndjson"}, encode_chunked=True)
            resp = conn.getresponse()
            self.assertEqual((resp.status, json.loads(resp.read())), (200, {"accepted": 2}))
            gz = gzip.compress(json.dumps([{"n": 5}]).encode())
            status, _, body = self.c.request("POST", "/logs", gz, {**JSON, "Content-Encoding": "gzip"}, conn)
            self.assertEqual((status, body), (200, {"accepted": 1}))
            self.assertIs(conn.sock, sock, "one keep-alive connection for all three")
        finally:
            conn.close()
        self.assertEqual([e["n"] for e in self.c.events()["events"]], [1, 2, 3, 4, 5])
        self.assertEqual(self.c.requests()[2]["body"], '[{"n": 5}]', "the request log holds the gunzipped body")

    def test_bad_body_keeps_nothing(self):
        self.assertEqual(self.c.request("POST", "/logs", '{"ok": 1}\n{bad\n', BULK)[0], 400)
        self.assertEqual(self.c.request("POST", "/logs", b"not gzip", {"Content-Encoding": "gzip"})[0], 400)
        self.assertEqual(self.c.events()["events"], [])
        self.assertEqual([r["status"] for r in self.c.requests()], [400, 400])

    def test_hec_without_token(self):
        body = ('{"time": 1, "host": "h", "source": "scimtap", "sourcetype": "_json", "event": {"a": 1}}\n'
                '{"time": 2, "event": {"a": 2}}{"event": {"a": 3}, "index": "main"}')
        status, _, answer = self.c.request("POST", "/services/collector/event", body)
        self.assertEqual((status, answer), (200, {"text": "Success", "code": 0}))
        status, _, answer = self.c.request("POST", "/services/collector", '{"time": 3, "host": "h"}')
        self.assertEqual((status, answer), (400, {"text": "Event field is required", "code": 12}))
        self.assertEqual(self.c.request("POST", "/services/collector", '{"event": 1')[2]["code"], 6)
        self.assertEqual(self.c.events()["events"], [{"a": 1}, {"a": 2}, {"a": 3}])

    def test_hec_with_token(self):
        self.restart("--hec-token", TOKEN)
        path, body = "/services/collector/event", '{"event": {"a": 1}}'
        cases = [
            ({}, 401, {"text": "Token is required", "code": 2}),
            ({"Authorization": f"Bearer {TOKEN}"}, 401, {"text": "Invalid authorization", "code": 3}),
            ({"Authorization": "Splunk wrong"}, 403, {"text": "Invalid token", "code": 4}),
            ({"Authorization": f"Splunk {TOKEN}"}, 200, {"text": "Success", "code": 0}),
        ]
        for headers, want_status, want_body in cases:
            status, _, answer = self.c.request("POST", path, body, headers)
            self.assertEqual((status, answer), (want_status, want_body), headers)
        self.assertEqual(self.c.events()["events"], [{"a": 1}])

    def test_bulk_items_dedup_and_item_errors(self):
        body = ndjson({"index": {"_index": "audit", "_id": "e1"}}, {"a": 1},
                      {"create": {"_id": "e2"}}, {"a": 2})
        status, resp, answer = self.c.request("POST", "/audit/_bulk", body, BULK)
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("X-Elastic-Product"), "Elasticsearch")
        self.assertFalse(answer["errors"])
        self.assertIsInstance(answer["took"], int)
        first, second = answer["items"]
        self.assertEqual({k: first["index"][k] for k in ("_index", "_id", "status", "result", "_version")},
                         {"_index": "audit", "_id": "e1", "status": 201, "result": "created", "_version": 1})
        self.assertEqual((second["create"]["_index"], second["create"]["status"]), ("audit", 201))

        # Retry of the same batch: index -> 200 updated; create -> 409 conflict; nothing new stored.
        answer = self.c.request("POST", "/_bulk", body.replace('{"create": {', '{"create": {"_index": "audit", '), BULK)[2]
        self.assertTrue(answer["errors"])
        self.assertEqual((answer["items"][0]["index"]["status"], answer["items"][0]["index"]["result"],
                          answer["items"][0]["index"]["_version"]), (200, "updated", 2))
        self.assertEqual(answer["items"][1]["create"]["error"]["type"], "version_conflict_engine_exception")
        self.assertEqual(self.c.events(), {"events": [{"a": 1, "_id": "e1"}, {"a": 2, "_id": "e2"}], "duplicates": 2})

        # Injected item errors, for one request only.
        self.c.control("bulk_item_errors", {"statuses": [None, 429, 400, 503], "count": 1})
        batch = ndjson(*[x for i in range(3, 8) for x in ({"index": {"_id": f"e{i}"}}, {"a": i})])
        answer = self.c.request("POST", "/audit/_bulk", batch, BULK)[2]
        self.assertTrue(answer["errors"])
        items = [item["index"] for item in answer["items"]]
        self.assertEqual([i["status"] for i in items], [201, 429, 400, 503, 201])
        self.assertEqual([i.get("error", {}).get("type") for i in items],
                         [None, "es_rejected_execution_exception", "mapper_parsing_exception",
                          "unavailable_shards_exception", None])
        self.assertNotIn("result", items[1])
        self.assertEqual([e["_id"] for e in self.c.events()["events"]], ["e1", "e2", "e3", "e7"])
        # Used up: the failed items go through on retry.
        answer = self.c.request("POST", "/audit/_bulk", batch, BULK)[2]
        self.assertEqual([item["index"]["status"] for item in answer["items"]], [200, 201, 201, 201, 200])
        self.assertEqual([e["_id"] for e in self.c.events()["events"]], ["e1", "e2", "e3", "e7", "e4", "e5", "e6"])

    def test_bulk_malformed(self):
        ok = ndjson({"index": {"_index": "a", "_id": "x"}}, {"a": 1})
        cases = [
            (ok.rstrip("\n"), BULK, 400),                                       # no final newline
            (ok + '{"index": {}}\n{bad json\n', BULK, 400),                     # bad source
            (ndjson({"index": {"_id": "y"}}, {"a": 1}), BULK, 400),             # no index anywhere
            (ndjson({"delete": {"_index": "a", "_id": "x"}}), BULK, 400),        # unsupported action
            (ok, {"Content-Type": "text/plain"}, 406),
        ]
        for body, headers, want in cases:
            self.assertEqual(self.c.request("POST", "/_bulk", body, headers)[0], want, body)
        self.assertEqual(self.c.events(), {"events": [], "duplicates": 0})

    def test_fail_with_retry_after_and_count(self):
        self.c.control("fail", {"status": 503, "count": 2, "retry_after": 2})
        for _ in range(2):
            status, resp, body = self.c.request("POST", "/logs", ndjson({"x": 1}), JSON)
            self.assertEqual((status, body, resp.getheader("Retry-After")), (503, {"error": "injected"}, "2"))
        status, resp, _ = self.c.request("POST", "/logs", ndjson({"x": 2}), JSON)
        self.assertEqual((status, resp.getheader("Retry-After")), (200, None))
        self.assertEqual(self.c.events()["events"], [{"x": 2}])
        self.assertEqual([r["status"] for r in self.c.requests()], [503, 503, 200])
        # Control requests are never failed or recorded.
        self.assertEqual(len(self.c.requests()), 3)

    def test_fail_until_reset(self):
        self.c.control("fail", {"status": 429})
        for _ in range(3):
            self.assertEqual(self.c.request("POST", "/_bulk", ndjson({"index": {"_index": "a"}}, {"a": 1}), BULK)[0], 429)
        self.c.control("reset")
        self.assertEqual(self.c.request("POST", "/_bulk", ndjson({"index": {"_index": "a"}}, {"a": 1}), BULK)[0], 200)
        self.assertEqual(len(self.c.events()["events"]), 1)
        self.assertEqual(len(self.c.requests()), 4, "reset keeps the recorded data")

    def test_delay(self):
        self.c.control("delay", {"ms": 700, "count": 1})
        started = time.monotonic()
        self.assertEqual(self.c.request("POST", "/logs", ndjson({"slow": 1}))[0], 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.65)
        started = time.monotonic()
        self.assertEqual(self.c.request("POST", "/logs", ndjson({"fast": 1}))[0], 200)
        self.assertLess(time.monotonic() - started, 0.5)

        # A client that gives up still delivered its events (stored before the sleep).
        self.c.control("delay", {"ms": 3000})
        conn = http.client.HTTPConnection("127.0.0.1", self.c.port, timeout=0.5)
        with self.assertRaises(TimeoutError):
            self.c.request("POST", "/logs", ndjson({"timed_out": 1}), conn=conn)
        conn.close()
        self.assertEqual(self.c.events()["events"][-1], {"timed_out": 1})
        self.c.control("reset")
        started = time.monotonic()
        self.assertEqual(self.c.request("POST", "/logs", ndjson({"x": 1}))[0], 200)
        self.assertLess(time.monotonic() - started, 0.5)

    def test_state_file_survives_kill(self):
        self.c.request("POST", "/logs", ndjson({"a": 1}))
        self.c.request("POST", "/services/collector", '{"event": {"b": 2}}')
        self.c.request("POST", "/x/_bulk", ndjson({"index": {"_id": "d"}}, {"c": 3}, {"index": {"_id": "d"}}, {"c": 3}), BULK)
        self.c.stop(signal.SIGKILL)
        with open(self.c.state_file) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(lines, [{"a": 1}, {"b": 2}, {"c": 3, "_id": "d"}])
        self.restart()  # tearDown stops this one

    def test_sigint(self):
        self.assertEqual(self.c.stop(signal.SIGINT), 0)
        self.restart()


if __name__ == "__main__":
    unittest.main(verbosity=2)
