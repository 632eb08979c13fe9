"""Tables: CSV read (Excel's encodings too) and written atomically; JSON read with one-line errors."""
from __future__ import annotations

import csv
import json
import os
import re
from io import StringIO
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nnunet_wmhloc.io.outputs import atomic_file
from nnunet_wmhloc.io.paths import WMHLocError, check_path


def write_csv(rows: Sequence[Mapping], path: str | os.PathLike, *, columns: Sequence[str] | None = None,
              overwrite: bool = False) -> Path:
    """Write dict rows as CSV (columns = first row's keys unless given); cells as `csv_cell` makes them
    (floats with 6 significant digits; text a spreadsheet would run as a formula starts with a quote)."""
    if columns is None:
        columns = list(rows[0].keys()) if rows else []
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="raise")
            w.writeheader()
            for r in rows:
                w.writerow({k: csv_cell(r.get(k, "")) for k in columns})
    return Path(path)


# OWASP's CSV-injection rule: a cell a spreadsheet would evaluate (it starts with = + - @, tab or carriage
# return) is written with a leading single quote, which spreadsheets show as text. Numbers are not touched,
# nor strings that are plain numbers ('-3.5', '+2', '1e-3'): a spreadsheet reads those as numbers, not formulas.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(v):
    """A value as a CSV/TSV cell: floats with 6 significant digits (NaN/inf empty), formula-like text
    neutralised (OWASP). Every table writer uses it."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.6g}"
    if isinstance(v, (int, np.integer)):
        return int(v)
    if v is None:
        return ""
    return formula_safe(str(v))


def formula_safe(v):
    """Text a spreadsheet would evaluate, with a leading quote; anything else (numbers too) unchanged. For
    writers that format their own values (e.g. BIDS TSV)."""
    if isinstance(v, str) and v.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(v):
        return "'" + v
    return v


def uncsv_cell(s: str) -> str:
    """The value csv_cell neutralised: the leading quote removed again (read_csv does this)."""
    if s[:1] == "'" and s[1:2] and s[1:].startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(s[1:]):
        return s[1:]
    return s


def read_csv(path: str | os.PathLike, *, required: Sequence[str] = ()) -> list[dict]:
    """Read a CSV as dict rows; missing file or missing columns raise WMHLocError naming the file.

    Excel's exports are read too: UTF-8 with or without BOM, UTF-16 (with BOM), else Windows-1252/Latin-1."""
    path = check_path(path, what="CSV file")
    text = _decode_table(path)
    reader = csv.DictReader(StringIO(text, newline=""))  # newline="": quoted line breaks stay in their field
    try:
        cols = reader.fieldnames or []
        missing = [c for c in required if c not in cols]
        if missing:
            raise WMHLocError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(cols) or 'none'})")
        dup = sorted({c for c in cols if cols.count(c) > 1})
        if dup:  # DictReader would keep the last of them silently
            raise WMHLocError(f"{path}: column(s) {', '.join(map(repr, dup))} appear more than once in the header")
        rows = []
        for r in reader:
            if None in r:  # DictReader files cells beyond the header under None: a shifted or broken row
                raise WMHLocError(f"{path}: line {reader.line_num}: {len(cols) + len(r[None])} cells, the header "
                                  f"has {len(cols)} columns")
            rows.append({k: uncsv_cell(v) if isinstance(v, str) else v for k, v in r.items()})
        return rows
    except csv.Error as e:
        raise WMHLocError(f"{path}: line {reader.line_num}: not a valid CSV ({e})") from None


def _decode_table(path: Path) -> str:
    data = path.read_bytes()
    if data[:4] == b"PK\x03\x04":
        raise WMHLocError(f"{path}: is a zip/Excel file, not a CSV (save it as CSV)")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise WMHLocError(f"{path}: not valid UTF-16 text ({e.reason} at byte {e.start})") from None
    if b"\x00" in data:
        raise WMHLocError(f"{path}: holds NUL bytes: a binary file or UTF-16 without byte-order mark, not a "
                          "CSV (save it as CSV UTF-8)")
    for enc in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def read_json(path: str | os.PathLike, *, what: str = "JSON file", expect: type | None = dict):
    """Parsed JSON; a missing, unreadable or malformed file (or one holding the wrong kind of value) is a
    one-line WMHLocError naming it."""
    path = check_path(path, what=what)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise WMHLocError(f"{path}: {what} is not valid JSON ({str(e)[:120]})") from None
    except RecursionError:  # json's decoder recurses per nesting level
        raise WMHLocError(f"{path}: {what} is JSON nested too deeply") from None
    if expect is not None and not isinstance(obj, expect):
        raise WMHLocError(f"{path}: {what} holds a JSON {type(obj).__name__}, expected a {expect.__name__}")
    return obj
