"""Bulk import and export of residents and devices as CSV and YAML, sans I/O: text in, records out.

Every bad row is reported with its line number (CSV: the physical line the record starts on; YAML: the
line of the list item), the field and the reason, so an installer can fix a whole file in one pass.
Parsing never touches the store; :func:`alarm_centre.registry.service.Registry.import_batch` checks references
and existing ids and writes nothing when any row is bad.

CSV has one file per kind, with a header row. List cells use ``;`` between items:
``responders`` is ``Name=+447700900123;Name 2=+447700900456`` (in calling order) and ``peripherals`` is
``id:type[@location];...`` (``p1:pendant;s1:smoke@hall``). YAML holds both kinds in one document:
``{residents: [...], devices: [...]}`` with the same fields as the API.

Every CSV cell written goes through :func:`safe_cell`: a cell a spreadsheet would run as a formula
(starting ``=``, ``+``, ``-``, ``@``, tab or carriage return) gets a leading ``'``; :func:`parse_csv`
takes that ``'`` off again, so an export imports back unchanged (``'+447700900123`` reads as
``+447700900123``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from devices.registry import Device, Resident, errors_of
from devices.strict_json import MAX_DEPTH

Kind = Literal["residents", "devices"]

RESIDENT_COLUMNS = (
    "id",
    "name",
    "address",
    "key_safe",
    "medical_notes",
    "language",
    "phone",
    "responders",
    "dc09_account",
)
DEVICE_COLUMNS = (
    "id",
    "kind",
    "resident_id",
    "channel",
    "phone",
    "imei",
    "serial_port",
    "firmware",
    "alexa_device_id",
    "heartbeat_interval_s",
    "heartbeat_grace_s",
    "peripherals",
    "dc09_account",
    "dc09_key",  # write-only: read on import, always empty on export
    "scaip_cid",
    "scaip_answer",
    "scaip_password",  # write-only, like dc09_key
)
COLUMNS: dict[str, tuple[str, ...]] = {"residents": RESIDENT_COLUMNS, "devices": DEVICE_COLUMNS}
MAX_ROWS = 100_000
#: First characters that make a spreadsheet read a cell as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """A CSV cell no spreadsheet runs as a formula: ``'`` before a cell that would start one.

    A cell that already starts with quotes before such a character gets one more, so
    :func:`unquote_cell` gives back exactly what was written.
    """
    text = "" if value is None else str(value)
    return "'" + text if text.lstrip("'").startswith(FORMULA_STARTS) else text


def unquote_cell(text: str) -> str:
    """The value :func:`safe_cell` was given (drops the one ``'`` it added)."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(FORMULA_STARTS) else text


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    field: str
    message: str
    kind: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" ({self.kind})" if self.kind else "")
        return f"{where}: {self.field}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "kind": self.kind, "field": self.field, "message": self.message}


@dataclass
class Batch:
    """Parsed records with the line each came from, and every error found."""

    residents: list[tuple[int, Resident]] = field(default_factory=list)
    devices: list[tuple[int, Device]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class MalformedFile(ValueError):
    """The file as a whole cannot be read (not CSV/YAML, wrong header, wrong shape)."""


# -- CSV -----------------------------------------------------------------------------------------
def _split_responders(cell: str) -> list[dict[str, str]]:
    out = []
    for n, item in enumerate(filter(None, (p.strip() for p in cell.split(";"))), 1):
        name, sep, phone = item.rpartition("=")
        if not sep:  # never echo the item: it is someone's name and number
            raise ValueError(f"responder {n} must be written Name=+447700900123")
        out.append({"name": name.strip(), "phone": phone.strip()})
    return out


def _split_peripherals(cell: str) -> list[dict[str, str]]:
    out = []
    for item in filter(None, (p.strip() for p in cell.split(";"))):
        ident, sep, rest = item.partition(":")
        if not sep:
            raise ValueError(f"peripheral {item[:40]!r} must be written id:type or id:type@location")
        kind, _, location = rest.partition("@")
        out.append({"id": ident.strip(), "type": kind.strip(), "location": location.strip()})
    return out


def _csv_record(kind: Kind, row: dict[str, str]) -> dict[str, Any]:
    cells = {k: unquote_cell(v.strip()) for k, v in row.items() if v is not None}
    record: dict[str, Any] = {k: v for k, v in cells.items() if v.strip() != ""}
    if kind == "residents":
        record["responders"] = _split_responders(record.get("responders", ""))
    else:
        record["peripherals"] = _split_peripherals(record.get("peripherals", ""))
    return record


def parse_csv(text: str, kind: Kind) -> Batch:
    """Residents or devices from CSV text with a header row; every bad row is reported."""
    batch = Batch()
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise MalformedFile("the file is empty; expected a header row") from None
    except csv.Error as exc:
        raise MalformedFile(f"line 1: not CSV: {exc}") from None
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in COLUMNS[kind]]
    if unknown or "id" not in header:
        raise MalformedFile(
            f"line 1: the header must name columns from {', '.join(COLUMNS[kind])} "
            f"and include id" + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    line = reader.line_num + 1
    while True:
        start = line
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            batch.errors.append(RowError(start, "(row)", f"not CSV: {exc}", kind))
            break
        line = reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            batch.errors.append(
                RowError(start, "(row)", f"{len(cells)} cells; the header has {len(header)}", kind)
            )
            continue
        if len(batch.residents) + len(batch.devices) >= MAX_ROWS:
            batch.errors.append(RowError(start, "(row)", f"more than {MAX_ROWS} rows", kind))
            break
        try:
            record = _csv_record(kind, dict(zip(header, cells, strict=True)))
        except ValueError as exc:
            batch.errors.append(
                RowError(start, "responders" if kind == "residents" else "peripherals", str(exc), kind)
            )
            continue
        _add(batch, kind, start, record)
    _check_duplicates(batch)
    return batch


def _add(batch: Batch, kind: Kind, line: int, record: Any) -> None:
    if not isinstance(record, dict):
        batch.errors.append(RowError(line, "(record)", "expected a mapping of fields", kind))
        return
    try:
        if kind == "residents":
            batch.residents.append((line, Resident.model_validate(record)))
        else:
            batch.devices.append((line, Device.model_validate(record)))
    except ValidationError as exc:
        for err in errors_of(exc):
            batch.errors.append(RowError(line, err["field"], err["message"], kind))


def _check_duplicates(batch: Batch) -> None:
    for kind, items in (("residents", batch.residents), ("devices", batch.devices)):
        first: dict[str, int] = {}
        for line, record in items:
            if record.id in first:
                batch.errors.append(
                    RowError(line, "id", f"{record.id!r} is already on line {first[record.id]}", kind)
                )
            else:
                first[record.id] = line
    batch.errors.sort(key=lambda e: e.line)


def to_csv(kind: Kind, records: list[Resident] | list[Device], *, omit: Collection[str] = ()) -> str:
    """Records as CSV in the same form :func:`parse_csv` reads, without the columns in ``omit`` (the
    fields the reader's role may not see)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [c for c in COLUMNS[kind] if c == "id" or c not in omit]
    writer.writerow([safe_cell(c) for c in columns])
    for record in records:
        dumped = record.model_dump(mode="json")
        if isinstance(record, Resident):
            dumped["responders"] = ";".join(f"{r.name}={r.phone}" for r in record.responders)
        else:
            assert isinstance(record, Device)
            dumped["peripherals"] = ";".join(
                f"{p.id}:{p.type.value}" + (f"@{p.location}" if p.location else "")
                for p in record.peripherals
            )
        writer.writerow([safe_cell(dumped.get(c)) for c in columns])
    return out.getvalue()


# -- YAML ----------------------------------------------------------------------------------------
class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what strict JSON refuses: ``.nan``/``.inf`` (and numbers that overflow to
    infinity), a mapping with the same key twice, and nesting deeper than strict JSON's limit."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_finite_float(self, node: yaml.ScalarNode) -> float:
        value: float = self.construct_yaml_float(node)
        if not math.isfinite(value):
            raise yaml.constructor.ConstructorError(
                None, None, f"{str(node.value)[:24]!r} is not a finite number", node.start_mark
            )
        return value

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {str(key)[:40]!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_finite_float)


def parse_yaml(text: str) -> Batch:
    """Residents and devices from a YAML document ``{residents: [...], devices: [...]}``."""
    batch = Batch()
    try:
        root = yaml.compose(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise MalformedFile(f"{where}not YAML: {getattr(exc, 'problem', None) or exc}") from None
    if root is None:
        return batch
    if not isinstance(root, yaml.MappingNode):
        raise MalformedFile(
            f"line {root.start_mark.line + 1}: expected a mapping with residents: and devices:"
        )
    constructor = StrictLoader("")
    sections: set[str] = set()
    for key_node, value_node in root.value:
        key = key_node.value
        if key not in ("residents", "devices"):
            batch.errors.append(
                RowError(
                    key_node.start_mark.line + 1,
                    str(key)[:40],
                    "unknown section; expected residents or devices",
                )
            )
            continue
        if key in sections:
            batch.errors.append(RowError(key_node.start_mark.line + 1, key, "duplicate section", key))
            continue
        sections.add(key)
        if not isinstance(value_node, yaml.SequenceNode):
            batch.errors.append(RowError(value_node.start_mark.line + 1, key, "expected a list", key))
            continue
        for item in value_node.value:
            line = item.start_mark.line + 1
            try:
                record = constructor.construct_document(item)
            except (yaml.YAMLError, ValueError, OverflowError) as exc:  # ValueError: a date like 2024-13-45
                batch.errors.append(RowError(line, "(record)", f"not valid YAML: {exc}", key))
                continue
            _add(batch, key, line, record)
    _check_duplicates(batch)
    return batch


def to_yaml(residents: list[Resident], devices: list[Device], *, omit: Collection[str] = ()) -> str:
    """Residents and devices as YAML in the same form :func:`parse_yaml` reads, without the resident
    fields in ``omit`` (the fields the reader's role may not see)."""
    doc = {
        "residents": [r.model_dump(mode="json", exclude=set(omit) - {"id"}) for r in residents],
        "devices": [d.model_dump(mode="json", exclude_none=True) for d in devices],
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
