#!/usr/bin/env python3
"""Validate scimtap audit event lines against docs/event.schema.json.

Usage: validate_events.py SCHEMA FILE_OR_DIR [FILE_OR_DIR ...]

Every line of every FILE is one event and must be valid. A line with a `record` member is
an integrity record (integrity.start / checkpoint / stop) and is checked against
integrity-record.schema.json, found beside SCHEMA (a blank line, a line that is not
JSON, or a JSON object with a duplicated key is a failure too). A directory stands for every
*.jsonl file directly in it. Prints `OK <n> events`, or each failure as
`FILE:LINE: <path in the event>: <message>` followed by a summary. Exit status: 0 when every
event is valid, 1 when any is not (or when no event was found at all), 2 for unusable arguments
or an invalid schema.

Needs `jsonschema` (pinned in requirements.txt beside this file).
"""

import json
import sys
from pathlib import Path

try:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
except ImportError:
    print(
        "error: the jsonschema package is missing: run tests/peer/setup.sh "
        "(it installs tests/peer/requirements.txt)",
        file=sys.stderr,
    )
    sys.exit(2)

# Errors shown per event; the rest are counted.
MAX_ERRORS_PER_EVENT = 10
# Characters of one error message shown (messages can quote the whole offending value).
MAX_MESSAGE = 300


class DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _json_path(error):
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _message(error):
    """The error's message, shortened, with the outcome rule spelled out."""
    schema_path = list(error.absolute_schema_path)
    if schema_path[:3] == ["allOf", 0, "else"]:
        return (
            'outcome is "failure" but the success conditions hold '
            "(a status below 400 was sent, failure is null, no failed Bulk operation)"
        )
    message = error.message
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    if schema_path[:3] == ["allOf", 0, "then"]:
        message += ' (outcome rule: "success" needs a status below 400, failure null, and a Bulk operation status below 400)'
    return message


def _files(arguments):
    out = []
    for argument in arguments:
        p = Path(argument)
        if p.is_dir():
            found = sorted(x for x in p.glob("*.jsonl") if x.is_file())
            if not found:
                print(f"{p}: no *.jsonl files in this directory", file=sys.stderr)
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def main(argv):
    if len(argv) < 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        schema = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        files = _files(argv[2:])
    except (OSError, ValueError, SchemaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    validator = Draft202012Validator(schema)
    record_schema_path = Path(argv[1]).with_name("integrity-record.schema.json")
    try:
        record_schema = json.loads(record_schema_path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(record_schema)
    except (OSError, ValueError, SchemaError) as e:
        print(f"error: {record_schema_path}: {e}", file=sys.stderr)
        return 2
    record_validator = Draft202012Validator(record_schema)

    events = 0
    bad = 0
    for path in files:
        with path.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                events += 1
                where = f"{path}:{number}"
                try:
                    text = raw.decode("utf-8").rstrip("\n")
                    if not text.strip():
                        raise ValueError("blank line (every line must be one event)")
                    event = json.loads(text, object_pairs_hook=_no_duplicates)
                except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
                    bad += 1
                    print(f"{where}: $: not a JSON event: {e}")
                    continue
                chosen = record_validator if isinstance(event, dict) and "record" in event else validator
                errors = sorted(
                    chosen.iter_errors(event),
                    key=lambda e: [str(p) for p in e.absolute_path],
                )
                if not errors:
                    continue
                bad += 1
                for error in errors[:MAX_ERRORS_PER_EVENT]:
                    print(f"{where}: {_json_path(error)}: {_message(error)}")
                if len(errors) > MAX_ERRORS_PER_EVENT:
                    print(f"{where}: ... and {len(errors) - MAX_ERRORS_PER_EVENT} more errors")

    if bad:
        print(f"FAILED {bad} of {events} events")
        return 1
    if events == 0:
        print("FAILED no events found")
        return 1
    print(f"OK {events} events")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
