#!/usr/bin/env python3
"""Writes the committed seed corpora in fuzz/corpus/ from the repository's fixtures.

    python3 fuzz/make_seeds.py      (from anywhere; rewrites fuzz/corpus/*/seed-*)

- classify_exchange, encoders: every case of tests/fixtures/classification.json and every
  step of the Okta and Entra ID lifecycles in tests/peer/fixtures, in the exchange text format
  (fuzz/src/lib.rs), spread over the four event contexts, plus a few multi-exchange and
  failure cases.
- scim_patch_filter: the PATCH, filter, search and Bulk cases among those.
- config_load: proxy.toml, deploy/examples/*.toml, the configs embedded in
  deploy/kubernetes/*.yaml, the TOML snippets in README.md and docs/ (on a minimal base), and
  one config per sink type.
- redaction_invariant: structured input (arbitrary); a few fixed byte strings to start from.
"""

import hashlib
import json
import pathlib
import random
import re
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
TOKEN = "fuzz-client-token"  # the token the configured fuzz contexts know (lib.rs CLIENT_TOKEN)
FLAGS = ["0000", "1000", "2000", "3000", "5000", ":000"]


def clean(corpus):
    d = CORPUS / corpus
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("seed-*"):
        f.unlink()
    return d


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def target(path, query=None):
    # What hyper accepts: quote what a client would have to percent-encode.
    safe = "/:@!$&'()*+,;=-._~%?[]"
    t = urllib.parse.quote(path, safe=safe)
    if query:
        t += "?" + urllib.parse.quote(query, safe=safe)
    return t


def body_bytes(value, raw):
    if raw is not None:
        return raw.encode()
    if value is None:
        return b""
    return json.dumps(value, ensure_ascii=False).encode()


def exchange(flags, method, tgt, req_headers, status, resp_headers, req_body, resp_body):
    head = f"{flags} {method} {tgt}\n"
    head += "".join(f"{k}: {v}\n" for k, v in req_headers.items())
    head += "\n" + ("-" if status is None else str(status)) + "\n"
    head += "".join(f"{k}: {v}\n" for k, v in resp_headers.items())
    head += "\n"
    out = head.encode() + req_body
    if resp_body:
        out += b"\n@@response@@\n" + resp_body
    return out


def classification_cases():
    cases = json.loads((ROOT / "tests/fixtures/classification.json").read_text())
    out = []
    for i, c in enumerate(cases):
        source = c.get("source", "")
        ua = "Okta SCIM Client 1.0.0" if "okta" in (c["name"] + source).lower() or " O" in source else "Azure AD SCIM Client"
        req_headers = {
            "User-Agent": ua,
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/scim+json; charset=utf-8",
            "X-Request-Id": f"fixture-{i}",
        }
        req_body = body_bytes(c.get("request"), c.get("request_raw"))
        resp_body = body_bytes(c.get("response"), c.get("response_raw"))
        resp_headers = {"Content-Type": "application/scim+json"}
        if c.get("location"):
            resp_headers["Location"] = c["location"]
        if c.get("response_raw", "").startswith("<"):
            resp_headers["Content-Type"] = "text/html"
        data = exchange(FLAGS[i % len(FLAGS)], c["method"], target(c["path"], c.get("query")),
                        req_headers, c["status"], resp_headers, req_body, resp_body)
        out.append((f"fixture-{i:02d}-{slug(c['name'])}", c, data))
    return out


def lifecycle_cases():
    out = []
    for name in ["okta_lifecycle", "entra_lifecycle"]:
        steps = [json.loads(l) for l in (ROOT / f"tests/peer/fixtures/{name}.jsonl").read_text().splitlines()
                 if l.strip() and not l.startswith("#")]
        baseline = json.loads((ROOT / f"tests/peer/fixtures/baseline/{name}.scim2-server.json").read_text())
        statuses = [s["status"] for s in baseline["steps"]]
        for i, step in enumerate(steps):
            def fill(s):
                s = s.replace("{{token}}", TOKEN).replace("{{run.id}}", "r1")
                return re.sub(r"\{\{([a-z0-9_]+)\.id\}\}", lambda m: f"{m.group(1)}-0001", s)
            path = fill(step["path"])
            p, _, q = path.partition("?")
            headers = {k: fill(v) for k, v in step.get("headers", {}).items()}
            body = step.get("body")
            req_body = fill(json.dumps(body)).encode() if body is not None else b""
            status = statuses[i] if i < len(statuses) else step["expect"][0]
            resp_body = b""
            if body is not None and status in (200, 201) and step["method"] in ("POST", "PUT"):
                created = json.loads(req_body)
                created["id"] = "user1-0001"
                created["meta"] = {"resourceType": "User", "location": f"https://upstream.example/scim/v2/Users/user1-0001"}
                resp_body = json.dumps(created).encode()
            elif status is not None and status >= 400:
                resp_body = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                                        "status": str(status), "detail": step["name"]}).encode()
            data = exchange(FLAGS[(i + 1) % len(FLAGS)], step["method"], target("/scim/v2" + p, q or None),
                            headers, status, {"Content-Type": "application/scim+json"}, req_body, resp_body)
            out.append((f"{name.split('_')[0]}-{i:02d}-{slug(step['name'])}", step, data))
    return out


def extra_cases():
    """Multi-exchange inputs (a learned custom type), failures and cut bodies."""
    rt = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1,
                     "Resources": [{"id": "Printer", "name": "Printer", "endpoint": "/Printers",
                                    "schema": "urn:example:Printer"}]}).encode()
    learn = exchange("0000", "GET", "/scim/v2/ResourceTypes", {}, 200, {}, b"", rt)
    use = exchange("0000", "POST", "/scim/v2/Printers", {"Authorization": f"Bearer {TOKEN}"}, 201,
                   {"Location": "/scim/v2/Printers/p1"}, b'{"displayName":"p","id":"p1"}',
                   b'{"id":"p1","displayName":"p"}')
    bulk = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "q1", "data": {"userName": "a", "password": "pw"}},
        {"method": "PATCH", "path": "/Groups/g1", "data": {"Operations": [
            {"op": "add", "path": "members", "value": [{"value": "bulkId:q1"}]}]}},
        {"method": "DELETE", "path": "/Users/u9"}]}).encode()
    bulk_resp = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"], "Operations": [
        {"method": "POST", "bulkId": "q1", "location": "/Users/u1", "status": "201"},
        {"method": "PATCH", "location": "/Groups/g1", "status": "204"},
        {"method": "DELETE", "location": "/Users/u9", "status": {"code": 404}}]}).encode()
    return [
        ("multi-resourcetypes-then-custom", learn + b"\n@@next@@\n" + use),
        ("bulk-three-ops", exchange("2000", "POST", "/scim/v2/Bulk", {}, 200, {}, bulk, bulk_resp)),
        ("request-body-reset", exchange("0200", "PATCH", "/scim/v2/Users/u1", {"Content-Length": "99"}, None, {},
                                        b'{"Operations":[{"op":"replace"', b"")),
        ("response-cut-generated-502", exchange("00201", "POST", "/scim/v2/Users", {}, 502, {}, b'{"userName":"x"}',
                                               b'{"status":"502","detail":"connect refused"}')),
        ("truncated-both", exchange("1110", "PUT", "/scim/v2/Users/u1", {}, 200, {}, b'{"userName":"x","pass', b'{"id":')),
        ("no-response-client-gone", exchange("0040", "DELETE", "/scim/v2/Groups/g1", {}, None, {}, b"", b"")),
        ("http2-cert-client", exchange("9000", "GET", "/scim/v2/Users?filter=emails%5Btype%20eq%20%22work%22%5D.value%20co%20%22%40example%22%20and%20active%20pr",
                                       {"User-Agent": "Microsoft.Identity.Provisioning"}, 200, {}, b"",
                                       b'{"totalResults":0,"Resources":[]}')),
    ]


def is_patch_filter(method, tgt):
    return method in ("PATCH",) or "filter=" in tgt or "search" in tgt or "Bulk" in tgt


def write_exchanges():
    cases = [(n, d) for n, _, d in classification_cases()] + [(n, d) for n, _, d in lifecycle_cases()] + extra_cases()
    for corpus in ["classify_exchange", "encoders"]:
        d = clean(corpus)
        for name, data in cases:
            (d / f"seed-{name}").write_bytes(data)
    d = clean("scim_patch_filter")
    n = 0
    for name, data in cases:
        first = data.split(b"\n", 1)[0].decode(errors="replace").split(" ")
        if len(first) >= 3 and is_patch_filter(first[1], first[2]):
            (d / f"seed-{name}").write_bytes(data)
            n += 1
    return len(cases), n


MINIMAL = """[listen]
address = "127.0.0.1:8080"
[upstream]
url = "http://127.0.0.1:9000"
"""
SINK = '[[sinks]]\ntype = "stdout"\n'

EXTRA_CONFIGS = {
    "http-sinks": MINIMAL + """
[[sinks]]
type = "http"
name = "splunk"
url = "https://splunk.example:8088/services/collector/event"
encoding = "splunk_hec"
token_file = "README.md"
batch = { max_events = 500, max_bytes = 1048576, timeout_secs = 1.5 }
retry = { max_attempts = 8, initial_backoff_secs = 0.5, max_backoff_secs = 30 }
[[sinks]]
type = "http"
name = "elastic"
url = "http://127.0.0.1:9200/_bulk"
encoding = "elasticsearch_bulk"
format = "ecs"
headers = { "X-Tenant" = "acme" }
header_files = { "Authorization" = "README.md" }
[[sinks]]
type = "http"
url = "http://collector:8080/ingest"
encoding = "json_array"
format = "ocsf"
when_full = "drop_newest"
buffer = { type = "disk", path = "target/fuzz-buffer", max_bytes = 1048576 }
""",
    "syslog-sinks": MINIMAL + """
[[sinks]]
type = "syslog"
name = "udp"
protocol = "udp"
address = "127.0.0.1:514"
format = "cef"
[[sinks]]
type = "syslog"
name = "tls"
protocol = "tls"
address = "siem.example:6514"
facility = "auth"
app_name = "scimtap"
""",
    "kafka-sasl": MINIMAL + """
[[sinks]]
type = "kafka"
brokers = ["k1:9092", "k2:9092"]
topic = "scim-audit"
compression = "lz4"
sasl_mechanism = "PLAIN"
sasl_username = "${SCIMTAP_FUZZ_TOKEN}"
sasl_password_file = "README.md"
""",
    "everything-on": """shutdown_timeout_secs = 5
[listen]
address = "[::1]:${SCIMTAP_FUZZ_PORT}"
max_connections = 10
http2_max_concurrent_streams = 8
max_request_body_bytes = 1048576
tls_min_version = "1.3"
[upstream]
url = "https://scim.example.com:8443/base/"
preserve_host = true
[admin]
address = "127.0.0.1:0"
[capture]
max_body_bytes = 65536
include_bodies = "redacted"
[audit]
mode = "write_ahead"
on_audit_failure = "reject"
queue_max_events = 16
[integrity]
key_file = "README.md"
checkpoint_interval_secs = 60
state_file = "target/fuzz-chain.state"
[scim]
base_path = "/scim/v2"
resource_types = [{ name = "Device", endpoint = "/Devices" }]
[[clients]]
name = "okta"
token_sha256 = "74bc6e987ef43b5083a8c5208a0d27a36e9359550ca19b3430a538b138c31004"
required = true
[[clients]]
name = "entra"
cert_subject = "CN=entra, O=Example"
idp = "entra"
[redact]
attributes = ["ssn"]
query_params = ["sig"]
[privacy]
hash_key_file = "README.md"
[[sinks]]
type = "file"
path = "audit.jsonl"
max_file_bytes = 0
""",
    "problems-everywhere": """[listen]
address = "not an address"
tls_cert_file = "missing.pem"
[upstream]
url = "ftp://x"
[capture]
max_body_bytes = -1
[[sinks]]
type = "carrier-pigeon"
[[sinks]]
type = "file"
path = "$${literal}"
unknown_key = 1
""",
    "env-unset": MINIMAL + 'x = "${SCIMTAP_FUZZ_UNSET}"\n' + SINK,
}


def write_configs():
    d = clean("config_load")
    seeds = {"proxy-toml": (ROOT / "proxy.toml").read_text()}
    for f in sorted((ROOT / "deploy/examples").glob("*.toml")):
        seeds[f"example-{f.stem}"] = f.read_text()
    for f in sorted((ROOT / "deploy/kubernetes").glob("*.yaml")):
        m = re.search(r"^(\s*)proxy\.toml: \|\n((?:\1 .*\n|\s*\n)+)", f.read_text(), re.M)
        if m:
            indent = len(m.group(1)) + 2
            seeds[f"kubernetes-{f.stem}"] = "".join(l[indent:] + "\n" for l in m.group(2).splitlines())
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"```toml\n(.*?)```", md.read_text(), re.S)):
            text = block if "[listen]" in block else MINIMAL + block
            if "[[sinks]]" not in text:
                text += SINK
            seeds[f"doc-{md.stem.lower()}-{i}"] = text
    seeds.update(EXTRA_CONFIGS)
    for name, text in seeds.items():
        # config_load skips inputs naming /run, /dev, /proc or /sys: keep the seeds usable.
        text = text.replace("/run/", "/etc/")
        (d / f"seed-{name}").write_text(text)
    return len(seeds)


def write_redaction():
    d = clean("redaction_invariant")
    rng = random.Random(7)
    for i in range(24):
        n = 32 + 24 * i
        (d / f"seed-random-{i:02d}").write_bytes(bytes(rng.randrange(256) for _ in range(n)))
    return 24


if __name__ == "__main__":
    total, patch = write_exchanges()
    configs = write_configs()
    red = write_redaction()
    print(f"classify_exchange/encoders: {total} seeds; scim_patch_filter: {patch}; config_load: {configs}; redaction_invariant: {red}")
