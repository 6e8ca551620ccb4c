"""report.html: the report as one self-contained page for the MLflow artifact viewer.

The viewer renders an ``.html`` artifact in a frame but resolves no relative link, so
report.md's ``![...](plot.png)`` images cannot show there. This module converts the subset of
markdown the report writes (headings, paragraphs, ``- `` lists, pipe tables, images,
```code```, ``**bold**``, ``_italic_``) to HTML and inlines every image as a ``data:`` URI.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px;
       margin: 1.2em; color: #1f2328; }
table { border-collapse: collapse; margin: 0.6em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
code { background: #f6f8fa; padding: 0 3px; border-radius: 3px; }
img { max-width: 100%; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #d0d7de; }
"""

IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
INLINE = (
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w\\])_([^_]+)_(?!\w)"), r"<em>\1</em>"),
)


def inline(text: str) -> str:
    """Escape ``text`` and apply the inline markup (code first, so its content stays)."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        escaped = html.escape(part, quote=False)
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{escaped[1:-1]}</code>")
            continue
        for pattern, replacement in INLINE:
            escaped = pattern.sub(replacement, escaped)
        out.append(escaped)
    return "".join(out)


def _cells(line: str) -> list[str]:
    """The cells of a pipe-table row (``\\|`` is a literal bar)."""
    body = line.strip().strip("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _table(lines: list[str]) -> str:
    head, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    out = ["<table>", "<tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def _image(alt: str, src: str, folder: Path) -> str:
    """An ``<img>`` with the file inlined when it exists next to the report."""
    path = folder / src
    if path.is_file() and path.suffix.lower() == ".png":
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        src = f"data:image/png;base64,{data}"
    return f'<p><img alt="{html.escape(alt)}" src="{html.escape(src)}"></p>'


def _blocks(markdown: str) -> list[list[str]]:
    """Split into blocks: runs of non-blank lines (a table or list is one block)."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in markdown.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _block(lines: list[str], folder: Path) -> str:
    """One block of markdown as HTML."""
    first = lines[0]
    if first.startswith("#"):
        level = len(first) - len(first.lstrip("#"))
        rest = "".join(_block(lines[1:], folder)) if len(lines) > 1 else ""
        return f"<h{level}>{inline(first[level:].strip())}</h{level}>{rest}"
    if len(lines) >= 2 and first.startswith("|") and set(lines[1].replace(" ", "")) <= set("|-:"):
        return _table(lines)
    if all(line.startswith("- ") or line.startswith("  ") for line in lines):
        items: list[str] = []
        for line in lines:
            if line.startswith("- "):
                items.append(line[2:])
            else:
                items[-1] += " " + line.strip()
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>"
    match = IMAGE.match(first.strip())
    if match and len(lines) == 1:
        return _image(match["alt"], match["src"], folder)
    return "<p>" + "<br>".join(inline(line) for line in lines) + "</p>"


def to_html(markdown: str, folder: Path, title: str) -> str:
    """The report as a standalone HTML page; images under ``folder`` are inlined."""
    body = "\n".join(_block(lines, folder) for lines in _blocks(markdown))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
