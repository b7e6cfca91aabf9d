#!/usr/bin/env python3
"""Generates master_events/models.py from the committed JSON Schemas (schemas/).

One frozen dataclass per event type (fields from `schemas/event/<type>.json`, in
snake_case, with the schema's descriptions as comments) and per control frame
(`schemas/control/*.json`). Run from anywhere:

    python3 clients/python/generate.py            # rewrite master_events/models.py
    python3 clients/python/generate.py --out F    # write elsewhere (the drift test)

A small generator of our own rather than datamodel-code-generator: the models need
the catalog's envelope as a shared base class and a wire-name table for parsing,
which a generic generator does not give, and it keeps the package free of build
dependencies.
"""

import argparse
import json
import pathlib
import re

HERE = pathlib.Path(__file__).resolve().parent
SCHEMAS = HERE.parents[1] / "schemas"
ENVELOPE = ["type", "seq", "ts", "origin", "originSeq", "originTs"]


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def class_name(type_name):
    return type_name[0].upper() + type_name[1:]


def py_type(prop):
    if "const" in prop:
        return "str" if isinstance(prop["const"], str) else "Any"
    if "oneOf" in prop and all("const" in o for o in prop["oneOf"]):
        return "str"
    if "enum" in prop:
        return "str"
    t = prop.get("type")
    if isinstance(t, list):
        t = [x for x in t if x != "null"]
        t = t[0] if len(t) == 1 else None
    if t == "string":
        return "str"
    if t == "integer":
        return "int"
    if t == "number":
        return "float"
    if t == "boolean":
        return "bool"
    if t == "array":
        return f"list[{py_type(prop.get('items', {}))}]"
    if t == "object":
        return "dict[str, Any]"
    return "Any"


def comment(text):
    return " ".join((text or "").split())


def fields_of(schema, skip):
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    out = []
    for wire in sorted(props):
        if wire in skip:
            continue
        prop = props[wire]
        out.append((snake(wire), wire, py_type(prop), wire in required, comment(prop.get("description"))))
    return out


def emit_class(lines, name, base, type_name, doc, fields):
    lines.append("")
    lines.append("")
    lines.append("@dataclass(frozen=True, kw_only=True)")
    lines.append(f"class {name}({base}):")
    lines.append(f'    """{doc}"""')
    lines.append("")
    lines.append(f'    TYPE: ClassVar[str] = "{type_name}"')
    lines.append(f"    WIRE: ClassVar[dict[str, str]] = {{{', '.join(f'{a!r}: {w!r}' for a, w, *_ in fields)}}}")
    for attr, _wire, ty, required, desc in fields:
        if desc:
            lines.append(f"    # {desc}")
        if required:
            lines.append(f"    {attr}: {ty}")
        else:
            lines.append(f"    {attr}: Optional[{ty}] = None")


def generate():
    version = json.loads((SCHEMAS / "version.json").read_text())["version"]
    lines = [
        '"""Typed models of every master activity event and stream control frame.',
        "",
        f"Generated from schemas/ (schema set {version}) by clients/python/generate.py;",
        "do not edit: tests/test_models.py fails when this file differs from a fresh",
        'generation."""',
        "",
        "from dataclasses import dataclass, field",
        "from typing import Any, ClassVar, Optional",
        "",
        f'SCHEMA_VERSION = "{version}"',
        "",
        "",
        "@dataclass(frozen=True, kw_only=True)",
        "class Event:",
        '    """Any event: the envelope every event line carries."""',
        "",
        '    TYPE: ClassVar[str] = ""',
        "    WIRE: ClassVar[dict[str, str]] = {}",
        "    ENVELOPE: ClassVar[dict[str, str]] = {",
    ]
    any_event = json.loads((SCHEMAS / "event" / "becameMaster.json").read_text())
    envelope = [f for f in fields_of(any_event, ["type"]) if f[1] in ENVELOPE]
    for attr, wire, *_ in envelope:
        lines.append(f'        "{attr}": "{wire}",')
    lines.append("    }")
    for attr, _wire, ty, _req, desc in envelope:
        if desc:
            lines.append(f"    # {desc}")
        lines.append(f"    {attr}: Optional[{ty}] = None")
    lines.append("    # The line as received (every field, unknown ones included).")
    lines.append("    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)")

    names = sorted(p.stem for p in (SCHEMAS / "event").glob("*.json"))
    for type_name in names:
        schema = json.loads((SCHEMAS / "event" / f"{type_name}.json").read_text())
        emit_class(lines, class_name(type_name), "Event", type_name,
                   comment(schema.get("description")), fields_of(schema, ENVELOPE))

    lines += [
        "",
        "",
        "@dataclass(frozen=True, kw_only=True)",
        "class Control:",
        '    """A stream control frame (not an event)."""',
        "",
        '    TYPE: ClassVar[str] = ""',
        "    WIRE: ClassVar[dict[str, str]] = {}",
        "    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)",
    ]
    controls = sorted(p.stem for p in (SCHEMAS / "control").glob("*.json"))
    for frame in controls:
        schema = json.loads((SCHEMAS / "control" / f"{frame}.json").read_text())
        emit_class(lines, class_name(frame), "Control", frame,
                   comment(schema.get("description")), fields_of(schema, ["type"]))
    lines += [
        "",
        "",
        "# Every event type's model, by its wire name.",
        "EVENT_TYPES: dict[str, type[Event]] = {",
    ]
    lines += [f'    "{n}": {class_name(n)},' for n in names]
    lines += ["}", "", "# Every control frame's model, by its wire name.", "CONTROL_TYPES: dict[str, type[Control]] = {"]
    lines += [f'    "{n}": {class_name(n)},' for n in controls]
    lines += ["}", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "master_events" / "models.py")
    args = parser.parse_args()
    args.out.write_text(generate())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
