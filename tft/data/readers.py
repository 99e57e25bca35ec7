"""Readers for each data format. Every problem is reported as `file:line: what is wrong`.

Readers return plain examples; label lists, dataset-level checks and warnings live in
`tft.data.dataset`. All readers share `read_lines`, which handles BOMs, CRLF and bad UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tft.errors import DataError
from tft.tasks import LabelSite

log = logging.getLogger("tft")

# A JSON line nested deeper than this is refused before parsing (json recursion is not a defence).
MAX_JSON_DEPTH = 64


@dataclass
class TextExample:
    """One classification / regression example."""

    guid: str
    text: str
    text_pair: str | None = None
    label: str | float | None = None
    line: int = 0


@dataclass
class TokenExample:
    """One NER example: words (characters for Chinese) with one BIO tag each."""

    guid: str
    tokens: list[str]
    tags: list[str] | None = None
    text: str | None = None  # original text when the source has one (CLUENER)
    line: int = 0


@dataclass
class ReadResult:
    examples: list
    warnings: Counter = field(default_factory=Counter)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without line ending); strict UTF-8, BOM and CRLF tolerated. The file is
    read as it is iterated: a million-line input costs one line of memory here."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected a file") from None
    with handle:
        blank = True
        number = 0
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            blank = blank and not raw.strip()
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                                number) from None
            yield number, line
        if blank:
            raise DataError(path, "file is empty")


def _json_depth_ok(line: str) -> bool:
    depth = deepest = 0
    in_str = escaped = False
    for ch in line:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def read_json_records(path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in read_lines(path):
        if not line.strip():
            continue
        if not _json_depth_ok(line):
            raise DataError(path, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels", number)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})", number) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON object, got {type(record).__name__}", number)
        yield number, record


def _text(value, path, number, name) -> str:
    if isinstance(value, str):
        return value
    raise DataError(path, f"field '{name}' must be a string, got {type(value).__name__}", number)


LABELS_SEEN = object()  # key of the per-file table of numeric labels, kept beside the ids seen


def _check_id(seen: dict, guid, path, number, id_field):
    if guid in seen:
        raise DataError(path, f"duplicate {id_field} {guid!r} (first seen at line {seen[guid]})", number)
    seen[guid] = number


def _row_to_example(row: dict, path, number, task, require_label: bool, seen_ids: dict, warnings: Counter):
    def get(name, required=True):
        if name in row:
            return row[name]
        if required:
            found = ", ".join(repr(k) for k in list(row)[:8]) or "none"
            raise DataError(path, f"missing field '{name}' (the fields here: {found})", number)
        return None

    text = _text(get(task.text_field), path, number, task.text_field)
    pair = _text(get(task.text_pair_field), path, number, task.text_pair_field) if task.text_pair_field else None
    label = None
    if task.label_field:
        raw = get(task.label_field, required=require_label)
        if raw is None and task.label_field in row:  # JSON null: neither a label nor an unlabelled file's absence
            raise DataError(path, f"field '{task.label_field}' is null; give the example its label, or leave the "
                                  "field out of every line of an unlabelled file", number)
        if raw is not None and not (isinstance(raw, str) and raw.strip() in task.skip_labels):
            label = task.kind.read_label(raw, LabelSite(path, number, task.label_field),
                                         seen_ids.setdefault(LABELS_SEEN, {}))
        elif raw is not None:
            warnings[f"examples without a gold label ({raw!r}) skipped"] += 1
            return None
    guid = row.get(task.id_field) if task.id_field else None
    if guid is not None and guid != "":
        _check_id(seen_ids, guid, path, number, task.id_field)
    else:
        guid = f"line-{number}"
    return TextExample(str(guid), text, pair, label, number)


def read_json(path: Path, task, require_label: bool) -> ReadResult:
    result = ReadResult([])
    result.examples.extend(iter_json_examples(path, task, require_label, result.warnings))
    return result


def iter_json_examples(path: Path, task, require_label: bool = False, warnings: Counter | None = None):
    """The examples of a JSON-lines file one at a time, as it is read (inference streams them)."""
    seen: dict = {}
    warnings = Counter() if warnings is None else warnings
    for number, record in read_json_records(path):
        ex = _row_to_example(record, path, number, task, require_label, seen, warnings)
        if ex is not None:
            yield ex


def read_tsv(path: Path, task, require_label: bool) -> ReadResult:
    """GLUE TSV: header row, tab-separated, no quoting (GLUE texts contain bare quote characters)."""
    result = ReadResult([])
    seen: dict = {}
    header = None
    for number, line in read_lines(path):
        if not line.strip():
            continue
        cells = line.split("\t")
        if header is None:
            header = _header([c.strip() for c in cells], path, number, "\t")
            continue
        if len(cells) != len(header):
            raise DataError(path, f"expected {len(header)} tab-separated columns as in the header, found {len(cells)}", number)
        row = {h: c.strip() for h, c in zip(header, cells)}
        ex = _row_to_example(row, path, number, task, require_label, seen, result.warnings)
        if ex is not None:
            result.examples.append(ex)
    if header is None:
        raise DataError(path, "no header row")
    return result


CSV_DELIMITERS = (",", ";", "\t", "|")
CELL_LIMIT = 1 << 30  # csv's own default (131,072 characters) refuses long texts that --max-chars would cut anyway


def _header(names: list[str], path, number: int, delimiter: str) -> list[str]:
    """A header row whose names are distinct (a name given twice would silently read one column as the other)."""
    seen: dict[str, int] = {}
    for column, name in enumerate(names, 1):
        if name in seen:
            shown = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))
            raise DataError(path, f"the header names {name!r} twice (columns {seen[name]} and {column}, "
                                  f"{shown}-separated); rename one", number)
        seen[name] = column
    return names


def _csv_layout(lines: list[tuple[int, str]], path) -> tuple[str, int]:
    """(delimiter, lines to skip before the header): Excel's `sep=;` first line says it; otherwise a header with no
    comma but another usual delimiter (a semicolon CSV of a European Excel) is read with that one."""
    if lines and lines[0][1].strip().lower().startswith("sep=") and len(lines[0][1].strip()) == 5:
        return lines[0][1].strip()[4], 1
    if Path(path).suffix == ".tsv":
        return "\t", 0
    header = lines[0][1] if lines else ""
    if "," not in header:
        for candidate in CSV_DELIMITERS[1:]:
            if candidate in header:
                log.info("%s: the header has no comma; reading it %r-separated", path, candidate)
                return candidate, 0
    return ",", 0


def read_csv(path: Path, task, require_label: bool) -> ReadResult:
    """CSV with a header row: comma-separated (`.tsv` files tab-separated; Excel's `sep=X` first line, or a header
    with no comma but a semicolon, tab or bar, picks that delimiter), standard quoting."""
    lines = list(read_lines(path))
    delimiter, skip = _csv_layout(lines, path)
    offset = skip  # csv counts lines from the header it is given
    text = "\n".join(line for _, line in lines[skip:])
    csv.field_size_limit(CELL_LIMIT)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    result = ReadResult([])
    seen: dict = {}
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(path, "no header row") from None
    except csv.Error as e:
        raise DataError(path, f"malformed CSV: {e}", 1 + offset) from None
    header = _header([h.strip() for h in header], path, 1 + offset, delimiter)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(path, f"malformed CSV: {e}", reader.line_num + offset) from None
        number = reader.line_num + offset
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise DataError(path, f"expected {len(header)} columns as in the header, found {len(cells)}", number)
        ex = _row_to_example(dict(zip(header, cells)), path, number, task, require_label, seen, result.warnings)
        if ex is not None:
            result.examples.append(ex)
    return result


def _split_tag(tag: str, path, number):
    if tag == "O":
        return "O", None
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[0], tag[2:]
    raise DataError(path, f"invalid tag {tag!r}: expected O, B-TYPE or I-TYPE", number)


def to_bio(tags: list[str], lines: list[int], path, scheme: str, warnings: Counter) -> list[str]:
    """Validate tags and convert to BIO. An I-X that does not continue an X entity starts one:
    that is the IOB1 rule, and for BIO files the same repair seqeval applies (counted as a warning)."""
    out = []
    prev_type = None
    for tag, number in zip(tags, lines):
        prefix, etype = _split_tag(tag, path, number)
        if prefix == "I" and prev_type != etype:
            if scheme == "BIO":
                warnings["orphan I- tags repaired to B-"] += 1
            tag = f"B-{etype}"
        out.append(tag)
        prev_type = etype
    return out


def read_columns(path: Path, task, require_label: bool) -> ReadResult:
    """CoNLL-style column files: token first, tag last, blank line between sentences, -DOCSTART- skipped."""
    result = ReadResult([])
    columns = None
    tokens, tags, lines = [], [], []

    def flush(number):
        if tokens:
            bio = to_bio(tags, lines, path, task.tag_scheme, result.warnings) if tags else None
            result.examples.append(TokenExample(f"line-{lines[0]}", list(tokens), bio, None, lines[0]))
        tokens.clear(), tags.clear(), lines.clear()

    for number, line in read_lines(path):
        cells = line.split()
        if not cells:
            flush(number)
            continue
        if cells[0] == "-DOCSTART-":
            flush(number)
            continue
        if columns is None:
            columns = len(cells)
            if columns < 2 and require_label:
                raise DataError(path, "expected at least 2 columns (token and tag), found 1", number)
        elif len(cells) != columns:
            raise DataError(path, f"expected {columns} columns as on the first line, found {len(cells)}", number)
        tokens.append(cells[0])
        lines.append(number)
        if columns >= 2:
            tags.append(cells[-1])
    flush(None)
    return result


def read_cluener(path: Path, task, require_label: bool) -> ReadResult:
    """CLUENER JSON lines: {"text", "label": {type: {entity: [[start, end_inclusive], ...]}}} -> character BIO."""
    result = ReadResult([])
    seen: dict = {}
    for number, record in read_json_records(path):
        text = _text(record.get("text"), path, number, "text") if "text" in record else None
        if text is None:
            raise DataError(path, "missing field 'text'", number)
        guid = record.get("id")
        if guid is not None:
            _check_id(seen, guid, path, number, "id")
        tags = None
        if "label" in record:
            tags = _spans_to_bio(text, record["label"], path, number, result.warnings)
        elif require_label:
            raise DataError(path, "missing field 'label'", number)
        result.examples.append(TokenExample(str(guid) if guid is not None else f"line-{number}", list(text), tags, text, number))
    return result


def _spans_to_bio(text: str, label, path, number, warnings: Counter) -> list[str]:
    if not isinstance(label, dict):
        raise DataError(path, f"field 'label' must be an object of entity types, got {type(label).__name__}", number)
    tags = ["O"] * len(text)
    for etype, entities in label.items():
        if not isinstance(entities, dict):
            raise DataError(path, f"label type {etype!r} must map entity text to spans", number)
        for entity, spans in entities.items():
            if not isinstance(spans, list):
                raise DataError(path, f"spans of {entity!r} must be a list of [start, end]", number)
            for span in spans:
                if (not isinstance(span, list) or len(span) != 2
                        or not all(isinstance(i, int) and not isinstance(i, bool) for i in span)):
                    raise DataError(path, f"span {span!r} of {entity!r} must be [start, end] integers", number)
                start, end = span
                if not 0 <= start <= end < len(text):
                    raise DataError(path, f"span [{start}, {end}] of {entity!r} is outside the text (length {len(text)})", number)
                if text[start:end + 1] != entity:
                    raise DataError(path, f"span [{start}, {end}] reads {text[start:end + 1]!r}, not {entity!r}", number)
                if any(t != "O" for t in tags[start:end + 1]):
                    warnings["overlapping entity spans dropped"] += 1
                    continue
                tags[start] = f"B-{etype}"
                for i in range(start + 1, end + 1):
                    tags[i] = f"I-{etype}"
    return tags


READERS = {
    "json": read_json,
    "tsv": read_tsv,
    "csv": read_csv,
    "columns": read_columns,
    "cluener": read_cluener,
}
