"""The generated files under ``docs/`` and the generated regions of ``events.md``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.contract import asyncapi, channels, jsonschema
from engine.core import events as ev

# --- Markdown for events.md ------------------------------------------------------------------


def _md_code(value: str) -> str:
    return "`" + value + "`"


def _md_type(node: channels.JsonObj) -> str:
    """A short human rendering of a (msgspec-generated) schema node."""
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "const" in node:
        return _md_code(json.dumps(node["const"]))
    if "enum" in node:
        return " \\| ".join(_md_code(json.dumps(v)) for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(_md_type(n) for n in node["anyOf"])
    kind = node.get("type")
    if kind == "array":
        return "array of " + _md_type(node["items"])
    if kind == "object":
        return "map of string to " + _md_type(node.get("additionalProperties", {}))
    if kind == "string" and node.get("format") == "date-time":
        return "string (RFC 3339 date-time with offset)"
    return str(kind) if kind else "any"


def _fields_table(schema: channels.JsonObj) -> str:
    required = set(schema.get("required", []))
    properties: channels.JsonObj = schema["properties"]
    # A meaning column only where the types document their fields (attribute docstrings).
    described = any("description" in node for node in properties.values())
    rows = ["| field | type | required / default |", "|---|---|---|"]
    if described:
        rows = ["| field | type | required / default | meaning |", "|---|---|---|---|"]
    for name, node in properties.items():
        if name in required:
            need = "required"
        elif "default" in node:
            need = "default " + _md_code(json.dumps(node["default"]))
        else:
            need = "optional"
        row = f"| `{name}` | {_md_type(node)} | {need} |"
        if described:
            row += f" {node.get('description', '')} |"
        rows.append(row)
    return "\n".join(rows)


def _subjects_table() -> str:
    rows = ["| subject | events | writer |", "|---|---|---|"]
    for channel in channels.CHANNELS:
        tags = ", ".join(_md_code(ev.tag_of(t)) for t in channel.events)
        writer = (
            "candidates in `<cluster>`" if channel.key == "lease" else "publisher of `<cluster>`"
        )
        rows.append(f"| `{channel.pattern}` | {tags} | {writer} |")
    dlq = channels.DEAD_LETTER_ADDRESS.replace("{", "<").replace("}", ">")
    rows.append(f"| `{dlq}` | dead letters (stream `MCSYNCDLQ_<SET>`) | readers of the log |")
    return "\n".join(rows)


def _headers_table(headers: tuple[channels.Header, ...]) -> str:
    rows = ["| header | value | set on | meaning |", "|---|---|---|---|"]
    rows += [f"| `{h.name}` | {h.value} | {h.when} | {h.description} |" for h in headers]
    return "\n".join(rows)


def markdown_regions() -> dict[str, str]:
    """The generated regions of ``events.md``, by region name."""
    bodies = jsonschema.event_bodies()
    regions: dict[str, str] = {
        "subjects": _subjects_table(),
        "headers": _headers_table(channels.event_headers()),
        "dead-letter-headers": _headers_table(channels.dead_letter_headers()),
    }
    for tag, body in bodies.events.items():
        regions["fields:" + tag] = _fields_table(body)
    parts = []
    for name, body in bodies.structs.items():
        parts.append(f"#### {name}\n\n{body['description']}\n\n{_fields_table(body)}")
    regions["structs"] = "\n\n".join(parts)
    return regions


_REGION = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>\S+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def missing_regions(text: str) -> list[str]:
    """Generated regions that ``events.md`` lacks (a new event type needs a section)."""
    present = {m.group("name") for m in _REGION.finditer(text)}
    return [name for name in markdown_regions() if name not in present]


def render_events_doc(text: str) -> str:
    """``text`` with every generated region replaced by its current content."""
    regions = markdown_regions()

    def fill(m: re.Match[str]) -> str:
        body = regions.get(m.group("name"))
        if body is None:
            return m.group(0)  # an unknown region is left alone (and not ours to judge)
        return m.group(1) + body + "\n" + m.group(4)

    return _REGION.sub(fill, text)


# --- files ---------------------------------------------------------------------------------


def generate() -> dict[str, str]:
    """Every fully generated file, by path relative to the docs folder, with its content."""
    files = {
        f"{channels.SCHEMAS_DIR}/{tag}.json": asyncapi.dump_json(schema)
        for tag, schema in jsonschema.event_schemas().items()
    }
    files[channels.ASYNCAPI_FILE] = asyncapi.dump_yaml(asyncapi.document())
    return files


def write(out_dir: Path) -> list[Path]:
    """Write the generated documents under ``out_dir`` (normally ``docs/``).

    Writes ``schemas/<tag>.json`` and ``asyncapi.yaml``, and refreshes the generated regions of
    ``events.md`` when that file exists (its prose is written by hand, so it is never created).
    Files already current are not touched. Schema files of tags that no longer exist are not
    deleted: :func:`check` reports them, because removing a published schema is a breaking
    change someone must decide on.

    Returns:
        Every path generated, current or rewritten, in a stable order.
    """
    written: list[Path] = []
    for rel, content in generate().items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8", newline="\n")
        written.append(path)
    doc = out_dir / channels.EVENTS_DOC
    if doc.is_file():
        text = doc.read_text(encoding="utf-8")
        new = render_events_doc(text)
        if new != text:
            doc.write_text(new, encoding="utf-8", newline="\n")
        written.append(doc)
    return written


def check(out_dir: Path) -> list[str]:
    """Names (relative to ``out_dir``) of the files that differ from what would be generated.

    Reports missing and changed files, schema files of unknown tags under ``schemas/``, and
    ``events.md`` when one of its generated regions is stale or missing (the file itself is
    optional). An empty list means everything is current.
    """
    stale: list[str] = []
    files = generate()
    for rel, content in files.items():
        path = out_dir / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(rel)
    schema_dir = out_dir / channels.SCHEMAS_DIR
    if schema_dir.is_dir():
        for path in sorted(schema_dir.glob("*.json")):
            rel = f"{channels.SCHEMAS_DIR}/{path.name}"
            if rel not in files:
                stale.append(rel)
    doc = out_dir / channels.EVENTS_DOC
    if doc.is_file():
        text = doc.read_text(encoding="utf-8")
        if missing_regions(text) or render_events_doc(text) != text:
            stale.append(channels.EVENTS_DOC)
    return sorted(stale)
