"""The one way the benchmark scripts write a measured table into README.md: between the markers
<!-- NAME --> and <!-- /NAME -->, so the prose around a table stays as written."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def write_table(name: str, table: str) -> None:
    start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
    text = README.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start.strip()} ... {end} markers")
    head, rest = text.split(start, 1)
    README.write_text(head + start + table + "\n" + end + rest.split(end, 1)[1])
