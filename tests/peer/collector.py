#!/usr/bin/env python3
"""A real HTTP log collector for the HTTP sink's integration tests.

Standard library only (Python >= 3.8; written for 3.11).  It speaks three
ingest dialects well enough that a sink cannot tell it from the real thing for
the parts tests care about, records everything it receives, and lets a test
inject faults over HTTP.

Command line
============

    python3 tests/peer/collector.py --port-file PATH [--port N]
        [--hec-token TOKEN] [--state-file PATH] [--verbose]

  --port N          port on 127.0.0.1 (default 0: the OS picks a free one)
  --port-file PATH  once listening, the port number (decimal, no newline) is
                    written there atomically (tmp file + rename): poll until
                    the file exists, then read it
  --hec-token T     Splunk HEC requests must carry "Authorization: Splunk T"
  --state-file PATH every accepted event is also appended there as one JSON
                    line (flushed at once), so it survives a kill -9
  --verbose         log one line per request to stderr (quiet by default)

It also prints "collector listening on 127.0.0.1:PORT" to stdout (flushed) and
exits with status 0 on SIGTERM or SIGINT.

HTTP: HTTP/1.1 with keep-alive; every answer has a Content-Length.  Request
bodies are read by Content-Length or "Transfer-Encoding: chunked" (chunked wins
when both are present); "Content-Encoding: gzip" bodies are decompressed.
"Expect: 100-continue" is honoured.

Ingest (any path NOT under /_collector/; the method does not matter)
=====================================================================

Every ingest request is recorded (see GET /_collector/requests), then handled
in this order:

 1. delay   (POST /_collector/delay armed): the request is handled normally but
            the answer is held back for `ms` milliseconds.  Events are stored
            BEFORE the sleep: a client that times out has still delivered them
            (at-least-once: its retry shows up as a duplicate).
 2. fail    (POST /_collector/fail armed): answered with the injected status,
            body {"error":"injected"}, Retry-After when configured; nothing kept.
 3. dialect, chosen by path (query string ignored):

  /_bulk, /<index>/_bulk                                    Elasticsearch bulk
      NDJSON action/source line pairs; the body must end with "\\n" and
      Content-Type must contain "json" (application/x-ndjson, application/json)
      as in Elasticsearch, else 400 / 406.  Actions: {"index": {...}} and
      {"create": {...}} with optional "_index" (else the index in the path, else
      400 "index is missing") and "_id" (else one is generated).  The source
      must be a JSON object.  Answer 200:
        {"took": ms, "errors": bool, "items": [{"index": {"_index", "_id",
         "_version", "result": "created", "_shards", "_seq_no",
         "_primary_term", "status": 201}}, ...]}
      (item key = action name).  Deduplication by (_index, _id) as ES does:
        - "index" of an existing _id -> status 200, result "updated", _version
          + 1; the stored document is NOT replaced and no second copy is kept;
          the `duplicates` counter goes up;
        - "create" of an existing _id -> status 409
          version_conflict_engine_exception (an item error, errors: true);
          `duplicates` goes up too.
      A failed item has "status" and "error": {"type", "reason", ...} and no
      "result".  Stored event = the source object plus its "_id" key.

  /services/collector, /services/collector/event[/1.0]     Splunk HEC
      One or more concatenated JSON envelopes (whitespace/newlines between
      them allowed): {"time", "host", "source", "sourcetype", "index"?,
      "event": {...}}.  With --hec-token, auth is checked first, like Splunk:
        no Authorization header           401 {"text":"Token is required","code":2}
        header not "Splunk <token>"       401 {"text":"Invalid authorization","code":3}
        wrong token                       403 {"text":"Invalid token","code":4}
      Then: empty body 400 {"text":"No data","code":5}; not JSON / not an
      object 400 {"text":"Invalid data format","code":6}; no "event" key 400
      {"text":"Event field is required","code":12}; event null or "" 400
      {"text":"Event field cannot be blank","code":13}.  A single bad envelope
      rejects the whole request.  OK: 200 {"text":"Success","code":0}.
      Stored event = the "event" value of each envelope.

  anything else                                              generic JSON
      Content-Type containing "json" and a body starting with "[" -> a JSON
      array of events; otherwise NDJSON, one JSON value per non-empty line.
      200 {"accepted": n}.  Stored event = each array element / line.

  Any body that cannot be decoded (bad gzip, bad UTF-8, bad JSON) is answered
  400 and nothing from that request is kept.  Events are stored in arrival
  order.

Control API (JSON bodies; bad JSON -> 400; unknown path -> 404)
===============================================================

  POST /_collector/fail              {"status": 503, "count": 3, "retry_after": 2}
      The next `count` ingest requests (count omitted or null: all of them until
      reset) are answered `status` (default 503) with {"error":"injected"} and
      "Retry-After: <retry_after>" when retry_after is given.
  POST /_collector/bulk_item_errors  {"statuses": [null, 429, 400], "count": 1}
      For the next `count` bulk requests that parse (default 1; null: until
      reset; injected `fail` answers do not use it up), item i
      fails with statuses[i] when that is not null; other items proceed.  Error
      types: 429 es_rejected_execution_exception, 400 mapper_parsing_exception,
      409 version_conflict_engine_exception, 5xx unavailable_shards_exception,
      other illegal_argument_exception.  Failed items are not stored.
  POST /_collector/delay             {"ms": 2000, "count": 1}
      The next `count` ingest requests (null/omitted: until reset) are answered
      `ms` milliseconds late (see "delay" above).
  POST /_collector/reset             clears fail, bulk_item_errors and delay
                                     (the recorded requests and events stay)
  GET  /_collector/requests          [{"method", "path", "query", "headers"
      (lower-case names; repeated headers joined with ", "), "body" (decoded
      UTF-8 text, after gzip), "status" (null while the answer is pending),
      "time" (arrival, Unix seconds, float)}, ...] in arrival order
  GET  /_collector/events            {"events": [...], "duplicates": n}
  GET  /_collector/health            200 "ok" (text/plain)

Control answers are 200 {"ok": true} unless stated otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CONTROL_PREFIX = "/_collector/"
HEC_PATHS = {"/services/collector", "/services/collector/event", "/services/collector/event/1.0"}
BULK_PATH = re.compile(r"^/(?:(?P<index>[^/_][^/]*)/)?_bulk/?$")
MAX_BODY = 256 * 1024 * 1024  # refuse absurd bodies instead of exhausting memory


class BadRequest(Exception):
    """The request cannot be processed; carries the complete answer."""

    def __init__(self, status: int, body: object, headers: dict | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def es_error(status: int, err_type: str, reason: str) -> BadRequest:
    """A whole-request Elasticsearch error, in Elasticsearch's shape."""
    cause = {"type": err_type, "reason": reason}
    return BadRequest(status, {"error": {"root_cause": [cause], **cause}, "status": status})


def hec_error(status: int, text: str, code: int) -> BadRequest:
    return BadRequest(status, {"text": text, "code": code})


def item_error_type(status: int) -> str:
    """Elasticsearch's error type for an injected bulk item failure."""
    if status == 429:
        return "es_rejected_execution_exception"
    if status == 400:
        return "mapper_parsing_exception"
    if status == 409:
        return "version_conflict_engine_exception"
    if status >= 500:
        return "unavailable_shards_exception"
    return "illegal_argument_exception"


class Countdown:
    """A fault armed for `count` more uses (None: until reset)."""

    def __init__(self, config: dict, count: int | None):
        self.config = config
        self.count = count

    def take(self) -> bool:
        """Use the fault once; False when it is exhausted.  Caller holds the lock."""
        if self.count is None:
            return True
        if self.count <= 0:
            return False
        self.count -= 1
        return True


class State:
    """Everything the collector remembers; all fields are guarded by `lock`."""

    def __init__(self, hec_token: str | None, state_file: str | None):
        self.lock = threading.Lock()
        self.hec_token = hec_token
        self.requests: list[dict] = []
        self.events: list = []
        self.duplicates = 0
        # (index, _id) -> current _version, for bulk deduplication
        self.docs: dict[tuple[str, str], int] = {}
        self.seq_no = 0
        self.fail: Countdown | None = None
        self.item_errors: Countdown | None = None
        self.delay: Countdown | None = None
        self.state_file = open(state_file, "a", encoding="utf-8") if state_file else None

    def take(self, name: str) -> dict | None:
        """Consume one use of the named fault; its config, or None if not armed."""
        fault = getattr(self, name)
        if fault is not None and fault.take():
            return fault.config
        return None

    def store(self, events: list) -> None:
        """Append accepted events (in order) and mirror them to the state file."""
        self.events.extend(events)
        if self.state_file is not None:
            for event in events:
                self.state_file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self.state_file.flush()


def parse_count(body: dict, default: int | None) -> int | None:
    if "count" not in body:
        return default
    count = body["count"]
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise BadRequest(400, {"error": "count must be a non-negative integer or null"})
    return count


# --------------------------------------------------------------------------- dialects


def handle_bulk(state: State, path_index: str | None, headers: dict, text: str):
    """Elasticsearch _bulk.  Returns (status, body, events to store)."""
    started = time.monotonic()
    ctype = headers.get("content-type")
    if not ctype:
        raise BadRequest(406, {"error": "Content-Type header is missing", "status": 406})
    if "json" not in ctype.lower():
        raise BadRequest(406, {"error": f"Content-Type header [{ctype}] is not supported", "status": 406})
    if not text.endswith("\n"):
        raise es_error(400, "illegal_argument_exception", "The bulk request must be terminated by a newline [\\n]")

    # Parse everything first: a malformed body must leave no trace.
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise es_error(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
    ops = []
    i = 0
    while i < len(lines):
        try:
            action = json.loads(lines[i])
        except ValueError as e:
            raise es_error(400, "x_content_parse_exception", f"line [{i + 1}]: {e}")
        if not isinstance(action, dict) or len(action) != 1:
            raise es_error(400, "illegal_argument_exception", f"Malformed action/metadata line [{i + 1}]")
        (op, meta), = action.items()
        if op not in ("index", "create") or not isinstance(meta, dict):
            raise es_error(400, "illegal_argument_exception",
                           f"Malformed action/metadata line [{i + 1}], expected index or create but found [{op}]")
        index = meta.get("_index", path_index)
        if not index:
            raise es_error(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;")
        if i + 1 >= len(lines):
            raise es_error(400, "illegal_argument_exception", f"The bulk request must have a source for line [{i + 1}]")
        try:
            source = json.loads(lines[i + 1])
        except ValueError as e:
            raise es_error(400, "x_content_parse_exception", f"line [{i + 2}]: {e}")
        if not isinstance(source, dict):
            raise es_error(400, "mapper_parsing_exception", f"failed to parse, document is empty or not an object (line [{i + 2}])")
        doc_id = meta.get("_id")
        ops.append((op, str(index), None if doc_id is None else str(doc_id), source))
        i += 2

    with state.lock:
        injected = state.take("item_errors") or {}
        statuses = injected.get("statuses") or []
        items, stored, errors = [], [], False
        for n, (op, index, doc_id, source) in enumerate(ops):
            doc_id = doc_id if doc_id is not None else uuid.uuid4().hex[:20]
            fail = statuses[n] if n < len(statuses) else None
            key = (index, doc_id)
            if fail is None and op == "create" and key in state.docs:
                state.duplicates += 1
                fail = 409
            if fail is not None:
                errors = True
                reason = (f"[{doc_id}]: version conflict, document already exists" if fail == 409
                          else f"injected failure for item {n}")
                items.append({op: {"_index": index, "_id": doc_id, "status": fail,
                                   "error": {"type": item_error_type(fail), "reason": reason,
                                             "index": index}}})
                continue
            state.seq_no += 1
            if key in state.docs:
                state.duplicates += 1
                state.docs[key] += 1
                status, result = 200, "updated"
            else:
                state.docs[key] = 1
                status, result = 201, "created"
                stored.append({**source, "_id": doc_id})
            items.append({op: {"_index": index, "_id": doc_id, "_version": state.docs[key],
                               "result": result,
                               "_shards": {"total": 2, "successful": 1, "failed": 0},
                               "_seq_no": state.seq_no - 1, "_primary_term": 1, "status": status}})
        state.store(stored)
    took = int((time.monotonic() - started) * 1000)
    return 200, {"took": took, "errors": errors, "items": items}


def check_hec_token(state: State, headers: dict) -> None:
    if state.hec_token is None:
        return
    auth = headers.get("authorization")
    if auth is None:
        raise hec_error(401, "Token is required", 2)
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() != "splunk" or not token.strip():
        raise hec_error(401, "Invalid authorization", 3)
    if token.strip() != state.hec_token:
        raise hec_error(403, "Invalid token", 4)


def parse_hec(text: str) -> list:
    """The `event` of each concatenated HEC envelope."""
    decoder = json.JSONDecoder()
    events, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        try:
            envelope, pos = decoder.raw_decode(text, pos)
        except ValueError:
            raise hec_error(400, "Invalid data format", 6)
        if not isinstance(envelope, dict):
            raise hec_error(400, "Invalid data format", 6)
        if "event" not in envelope:
            raise hec_error(400, "Event field is required", 12)
        if envelope["event"] is None or envelope["event"] == "":
            raise hec_error(400, "Event field cannot be blank", 13)
        events.append(envelope["event"])
    if not events:
        raise hec_error(400, "No data", 5)
    return events


def parse_generic(headers: dict, text: str) -> list:
    """A JSON array (Content-Type *json*, body starting with "[") or NDJSON."""
    try:
        if "json" in headers.get("content-type", "").lower() and text.lstrip().startswith("["):
            events = json.loads(text)
            if not isinstance(events, list):
                raise ValueError("not an array")
            return events
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise BadRequest(400, {"error": f"invalid JSON: {e}"})


# --------------------------------------------------------------------------- HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer sets Content-Length
    server_version = "scimtap-test-collector/1"

    # Every method goes through the same dispatcher.
    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def do_HEAD(self):
        self.dispatch(head=True)

    @property
    def state(self) -> State:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)

    # ---- plumbing

    def read_raw_body(self) -> bytes:
        """The request body, by chunked encoding or Content-Length.

        Framing errors also close the connection: the next request cannot be found.
        """
        try:
            return self._read_framed_body()
        except BadRequest:
            self.close_connection = True
            raise

    def _read_framed_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise BadRequest(400, {"error": "truncated chunked body"})
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadRequest(400, {"error": "bad chunk size"})
                if size == 0:
                    break
                total += size
                if total > MAX_BODY:
                    raise BadRequest(413, {"error": "body too large"})
                data = self.rfile.read(size)
                if len(data) != size or self.rfile.read(2) != b"\r\n":
                    raise BadRequest(400, {"error": "truncated chunk"})
                chunks.append(data)
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields: ignored
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            raise BadRequest(400 if n < 0 else 413, {"error": "bad Content-Length"})
        data = self.rfile.read(n)
        if len(data) != n:
            raise BadRequest(400, {"error": "truncated body"})
        return data

    def decode_body(self, raw: bytes) -> str:
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                raise BadRequest(400, {"error": "invalid gzip body"})
        elif encoding not in ("", "identity"):
            raise BadRequest(415, {"error": f"unsupported Content-Encoding {encoding}"})
        return raw.decode("utf-8")  # UnicodeDecodeError is handled by the caller

    def send(self, status: int, body: object, headers: dict | None = None, head: bool = False) -> None:
        """Answer; a str body is text/plain, anything else JSON."""
        if isinstance(body, str):
            data, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(body).encode(), "application/json; charset=UTF-8"
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away (e.g. it timed out)

    # ---- dispatch

    def dispatch(self, head: bool = False) -> None:
        url = urlsplit(self.path)
        if url.path.startswith(CONTROL_PREFIX):
            self.control(url.path[len(CONTROL_PREFIX):].rstrip("/"), head)
        else:
            self.ingest(url.path, url.query, head)

    def ingest(self, path: str, query: str, head: bool) -> None:
        record = {"method": self.command, "path": path, "query": query,
                  "headers": self.header_dict(), "body": "", "status": None, "time": time.time()}
        with self.state.lock:
            self.state.requests.append(record)
            delay = self.state.take("delay")
        extra = {}
        try:
            raw = self.read_raw_body()
            try:
                text = self.decode_body(raw)
            except UnicodeDecodeError:
                record["body"] = raw.decode("utf-8", "replace")
                raise BadRequest(400, {"error": "body is not UTF-8"})
            record["body"] = text
            with self.state.lock:
                fail = self.state.take("fail")
            if fail is not None:
                if fail.get("retry_after") is not None:
                    extra["Retry-After"] = str(fail["retry_after"])
                status, body = fail.get("status", 503), {"error": "injected"}
            else:
                status, body = self.route(path, text)
        except BadRequest as e:
            status, body = e.status, e.body
            extra.update(e.headers)
        if BULK_PATH.match(path):
            extra["X-Elastic-Product"] = "Elasticsearch"  # checked by the official ES clients
        if delay is not None:
            time.sleep(max(0, delay.get("ms", 0)) / 1000)
        record["status"] = status
        self.send(status, body, extra, head)

    def route(self, path: str, text: str):
        """Parse and store one accepted ingest body; (status, answer body)."""
        headers = self.header_dict()
        bulk = BULK_PATH.match(path)
        if bulk:
            index = bulk.group("index")
            return handle_bulk(self.state, unquote(index) if index else None, headers, text)
        if path.rstrip("/") in HEC_PATHS:
            check_hec_token(self.state, headers)
            events = parse_hec(text)
            with self.state.lock:
                self.state.store(events)
            return 200, {"text": "Success", "code": 0}
        events = parse_generic(headers, text)
        with self.state.lock:
            self.state.store(events)
        return 200, {"accepted": len(events)}

    def control(self, name: str, head: bool) -> None:
        state = self.state
        try:
            text = self.decode_body(self.read_raw_body())
            body = json.loads(text) if text.strip() else {}
            if not isinstance(body, dict):
                raise BadRequest(400, {"error": "control body must be a JSON object"})
        except (ValueError, UnicodeDecodeError):
            self.send(400, {"error": "control body must be JSON"}, head=head)
            return
        except BadRequest as e:
            self.send(e.status, e.body, e.headers, head)
            return
        get, post = self.command in ("GET", "HEAD"), self.command == "POST"
        try:
            with state.lock:
                if get and name == "health":
                    answer = "ok"
                elif get and name == "requests":
                    answer = [dict(r) for r in state.requests]
                elif get and name == "events":
                    answer = {"events": list(state.events), "duplicates": state.duplicates}
                elif post and name == "fail":
                    state.fail = Countdown(
                        {"status": int(body.get("status", 503)), "retry_after": body.get("retry_after")},
                        parse_count(body, None))
                    answer = {"ok": True}
                elif post and name == "bulk_item_errors":
                    statuses = body.get("statuses", [])
                    if not isinstance(statuses, list) or not all(
                            s is None or (isinstance(s, int) and 100 <= s <= 599) for s in statuses):
                        raise BadRequest(400, {"error": "statuses must be a list of null or HTTP statuses"})
                    state.item_errors = Countdown({"statuses": statuses}, parse_count(body, 1))
                    answer = {"ok": True}
                elif post and name == "delay":
                    state.delay = Countdown({"ms": float(body.get("ms", 0))}, parse_count(body, None))
                    answer = {"ok": True}
                elif post and name == "reset":
                    state.fail = state.item_errors = state.delay = None
                    answer = {"ok": True}
                else:
                    raise BadRequest(404, {"error": f"no control endpoint {self.command} /_collector/{name}"})
        except BadRequest as e:
            self.send(e.status, e.body, head=head)
            return
        except (TypeError, ValueError) as e:
            self.send(400, {"error": f"bad control body: {e}"}, head=head)
            return
        self.send(200, answer, head=head)

    def header_dict(self) -> dict:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        return headers


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping in a delay must not block exit
    allow_reuse_address = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--port-file", help="write the chosen port here (atomically) once listening")
    parser.add_argument("--hec-token", help='require "Authorization: Splunk TOKEN" on Splunk HEC paths')
    parser.add_argument("--state-file", help="append every accepted event here as a JSON line")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    server = Server(("127.0.0.1", args.port), Handler)  # binds and listens
    server.state = State(args.hec_token, args.state_file)  # type: ignore[attr-defined]
    server.verbose = args.verbose  # type: ignore[attr-defined]
    port = server.server_address[1]

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if args.port_file:
        tmp = f"{args.port_file}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"collector listening on 127.0.0.1:{port}", flush=True)

    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        if server.state.state_file is not None:  # type: ignore[attr-defined]
            server.state.state_file.close()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
