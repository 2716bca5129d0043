#!/usr/bin/env python3
"""Validate scimtap's OCSF lines against the OCSF 1.8.0 schema.

Usage: validate_ocsf.py FILE [FILE ...]
       validate_ocsf.py --regenerate

The definitions are tests/fixtures/ocsf/ocsf-1.8.0-subset.json: the classes scimtap emits
(Account Change, Group Management, API Activity) and every object and type they reach, copied
verbatim from the OCSF 1.8.0 schema export that PyPI `ocsf-json-schema` ships. The copy is
first compared with the installed package's export, so a hand edit or a package upgrade is
caught. `--regenerate` rewrites the copy from the installed package.

Each line is checked with:
- the JSON Schema (Draft 2020-12) that `ocsf-json-schema` generates for the event's class
  with no profile: required attributes, no attribute outside the class or object, types,
  enums (`activity_id`, `severity_id`, `status_id`, `category_uid`, `class_uid`, `type_uid`,
  ...), `at_least_one` / `just_one` constraints, IP and port formats;
- rules OCSF states outside that schema: `type_uid = class_uid * 100 + activity_id`,
  `metadata.version` is 1.8.0, no deprecated attribute, and an enum's sibling caption
  (`activity_name`, `severity`, `status`, `type_name`, ...) is the enum's caption unless the
  id is 99 (Other), where it carries the source's own term;
- no profile is declared (`metadata.profiles`), since the schemas are profile-free.

Prints `OK <n> events (<class>: <count>, ...)`, or each failure as
`FILE:LINE: <path>: <message>` and a summary. Exit status: 0 all valid, 1 any invalid (or no
event at all), 2 unusable arguments or definitions that do not match the package.
"""

import json
import sys
from collections import Counter
from pathlib import Path

try:
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import ValidationError
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
except ImportError as e:
    print(
        f"error: {e}: run tests/peer/setup.sh (it installs tests/peer/requirements.txt)",
        file=sys.stderr,
    )
    sys.exit(2)

VERSION = "1.8.0"
CLASSES = ("account_change", "group_management", "api_activity")
FIXTURE = (
    Path(__file__).resolve().parent.parent / "fixtures" / "ocsf" / f"ocsf-{VERSION}-subset.json"
)
OTHER = 99
MAX_ERRORS_PER_EVENT = 10
MAX_MESSAGE = 300


def subset(export):
    """The classes in CLASSES, every object reachable from them without a profile, and the
    dictionary's types: all that the profile-free class schemas need."""

    def references(attributes):
        for definition in attributes.values():
            if definition.get("profiles"):
                continue
            if definition.get("type") == "object_t":
                yield definition["object_type"]

    seen, todo = set(), []
    for name in CLASSES:
        todo.extend(references(export["classes"][name]["attributes"]))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(references(export["objects"][name]["attributes"]))
    return {
        "version": export["version"],
        "classes": {name: export["classes"][name] for name in CLASSES},
        "objects": {name: export["objects"][name] for name in sorted(seen)},
        "dictionary": {"types": export["dictionary"]["types"]},
    }


def _deprecated(validator, value, instance, schema):
    if value:
        yield ValidationError(f"{schema.get('title')!r} is deprecated in OCSF {VERSION}")


# `deprecated` is only an annotation in Draft 2020-12; here using such an attribute fails.
StrictValidator = validators.extend(Draft202012Validator, {"deprecated": _deprecated})


class DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _path(parts):
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _siblings(definitions, attributes, instance, path, problems):
    """Enum captions in sibling attributes, in the event and every object inside it."""
    if not isinstance(instance, dict):
        return
    for key, value in instance.items():
        definition = attributes.get(key)
        if definition is None:
            continue  # the JSON Schema reports it
        sibling, enum = definition.get("sibling"), definition.get("enum")
        if sibling and enum and sibling in instance and isinstance(value, int):
            entry = enum.get(str(value))
            if entry is not None and value != OTHER and instance[sibling] != entry["caption"]:
                problems.append(
                    (
                        _path(path + [sibling]),
                        f"{instance[sibling]!r} is not the caption of {key} {value} "
                        f"({entry['caption']!r})",
                    )
                )
        if definition.get("type") == "object_t":
            nested = definitions["objects"].get(definition["object_type"], {})
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                where = path + [key, i] if isinstance(value, list) else path + [key]
                _siblings(definitions, nested.get("attributes", {}), item, where, problems)


def check(definitions, schemas, by_uid, event):
    """Problems of one event, as (path, message)."""
    if not isinstance(event, dict):
        return [("$", "an event is a JSON object")]
    class_uid = event.get("class_uid")
    name = by_uid.get(class_uid) if isinstance(class_uid, int) else None
    if name is None:
        known = ", ".join(f"{uid} ({n})" for uid, n in sorted(by_uid.items()))
        return [("$.class_uid", f"{class_uid!r} is not one of the vendored classes: {known}")]
    problems = []
    for error in sorted(schemas[name].iter_errors(event), key=lambda e: list(e.absolute_path)):
        message = error.message
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        problems.append((_path(error.absolute_path), message))
    activity_id, type_uid = event.get("activity_id"), event.get("type_uid")
    if isinstance(activity_id, int) and type_uid != class_uid * 100 + activity_id:
        problems.append(
            ("$.type_uid", f"{type_uid!r} is not class_uid * 100 + activity_id "
             f"({class_uid * 100 + activity_id})")
        )
    metadata = event.get("metadata")
    if isinstance(metadata, dict):
        if metadata.get("version") != definitions["version"]:
            problems.append(
                ("$.metadata.version", f"{metadata.get('version')!r} is not {definitions['version']!r}")
            )
        if metadata.get("profiles"):
            problems.append(
                ("$.metadata.profiles", "profiles are declared, but only profile-free schemas are vendored")
            )
    _siblings(definitions, definitions["classes"][name]["attributes"], event, [], problems)
    return problems


def main(argv):
    if argv == ["--regenerate"]:
        FIXTURE.write_text(json.dumps(subset(get_ocsf_schema(VERSION)), indent=1) + "\n")
        print(f"wrote {FIXTURE}")
        return 0
    if not argv or any(a.startswith("-") for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        definitions = json.loads(FIXTURE.read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read {FIXTURE}: {e}", file=sys.stderr)
        return 2
    if definitions != subset(get_ocsf_schema(VERSION)):
        print(
            f"error: {FIXTURE} differs from the OCSF {VERSION} export in the installed "
            "ocsf-json-schema package: run validate_ocsf.py --regenerate and review the diff",
            file=sys.stderr,
        )
        return 2
    generator = OcsfJsonSchemaEmbedded(definitions)
    schemas, by_uid = {}, {}
    for name in CLASSES:
        schema = generator.get_class_schema(name, [])
        StrictValidator.check_schema(schema)
        schemas[name] = StrictValidator(schema)
        by_uid[definitions["classes"][name]["uid"]] = name

    counts, invalid, total = Counter(), 0, 0
    for argument in argv:
        try:
            lines = Path(argument).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            print(f"error: cannot read {argument}: {e}", file=sys.stderr)
            return 2
        if lines and lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, 1):
            total += 1
            try:
                event = json.loads(line, object_pairs_hook=_no_duplicates)
                problems = check(definitions, schemas, by_uid, event)
            except ValueError as e:
                problems = [("$", f"not a JSON event: {e}")]
            if problems:
                invalid += 1
                for path, message in problems[:MAX_ERRORS_PER_EVENT]:
                    print(f"{argument}:{number}: {path}: {message}")
                if len(problems) > MAX_ERRORS_PER_EVENT:
                    print(f"{argument}:{number}: ... {len(problems) - MAX_ERRORS_PER_EVENT} more")
            else:
                counts[by_uid[event["class_uid"]]] += 1
    if total == 0:
        print("FAILED: no event found")
        return 1
    if invalid:
        print(f"FAILED {invalid} of {total} events")
        return 1
    summary = ", ".join(f"{name}: {counts[name]}" for name in CLASSES)
    print(f"OK {total} events ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
