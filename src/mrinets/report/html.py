"""A self-contained HTML summary of a run: sections of pictures, tables and links.

The report is one file with inline CSS. Pictures are linked by paths relative to
the report's folder, so the folder can be moved or zipped as a whole; with
``embed=True`` they are inlined as base64 data URIs and the file stands alone.
Every piece of text that reaches the page goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

import mrinets
from mrinets.io.output import write_text

__all__ = ["Section", "write_html_report", "format_value", "flatten"]

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".webp": "image/webp"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1300px;
padding:1.5em;color:#222;background:#fafafa;line-height:1.4}
h1{margin-top:0;border-bottom:2px solid #345;padding-bottom:.3em}
h2{margin-top:1.8em;color:#345}
nav ul{columns:2;font-size:.95em}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:0 1.2em 1em;margin-bottom:1.5em}
figure{margin:.8em 0}
figure img{max-width:100%;background:#000;border-radius:4px}
figcaption{font-size:.85em;color:#666}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .7em;text-align:left;vertical-align:top}
th{background:#eef2f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
details{margin-top:2em;font-size:.9em}
code{font-size:.92em;word-break:break-all}
footer{color:#888;font-size:.8em;margin-top:1em}
"""


@dataclass
class Section:
    """One part of a report.

    Attributes
    ----------
    title : str
        Heading of the section.
    images : list of path-like
        Pictures (PNG, for instance), shown in order.
    measures : dict or list of dict, optional
        A dict is shown as a two-column table (nested dicts flattened with
        dotted keys); a list of dicts as one table row per dict.
    text : str, optional
        Plain text; blank lines separate paragraphs.
    links : list of path-like
        Output files, listed as links.
    """

    title: str
    images: list = field(default_factory=list)
    measures: dict | list[dict] | None = None
    text: str | None = None
    links: list = field(default_factory=list)


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into one level with dotted keys.

    Examples
    --------
    >>> flatten({"a": 1, "b": {"c": 2, "d": {"e": 3}}})
    {'a': 1, 'b.c': 2, 'b.d.e': 3}
    """
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def format_value(value: Any) -> str:
    """Text of a table cell: floats to 4 significant digits, integers exact.

    Examples
    --------
    >>> format_value(3.14159265), format_value(123456), format_value([1.23456, 2])
    ('3.142', '123456', '1.235, 2')
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _cell(value: Any) -> str:
    cls = ' class="num"' if _is_number(value) else ""
    return f"<td{cls}>{html.escape(format_value(value))}</td>"


def _table(measures: dict | list[dict], where: str) -> str:
    if isinstance(measures, Mapping):
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in flatten(measures).items())
        return f"<table>{rows}</table>"
    if isinstance(measures, Sequence) and not isinstance(measures, str) and all(
        isinstance(m, Mapping) for m in measures
    ):
        flat = [flatten(m) for m in measures]
        columns = list(dict.fromkeys(k for row in flat for k in row))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>" for row in flat)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    raise ValueError(f"{where}.measures must be a dict or a list of dicts, got {type(measures).__name__}")


def _href(target: str | os.PathLike, root: Path) -> str:
    """URL of ``target`` relative to the report's folder (``/`` separators, quoted)."""
    rel = os.path.relpath(os.path.abspath(target), root)
    return quote(Path(rel).as_posix())


def _data_uri(image: Path, where: str) -> str:
    if not image.is_file():
        raise ValueError(f"{where}.images: {image} does not exist (needed for embed=True)")
    mime = _MIME.get(image.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode('ascii')}"


def _section(section: Section, index: int, root: Path, embed: bool) -> str:
    where = f"sections[{index}]"
    if not isinstance(section, Section):
        raise ValueError(f"{where} must be a Section, got {type(section).__name__}")
    parts = [f'<section id="s{index}"><h2>{html.escape(str(section.title))}</h2>']
    if section.text:
        paragraphs = [p.strip() for p in str(section.text).split("\n\n") if p.strip()]
        parts += [f"<p>{html.escape(p)}</p>" for p in paragraphs]
    for image in section.images:
        image = Path(image)
        name = html.escape(image.name)
        if embed:
            parts.append(f'<figure><img src="{_data_uri(image, where)}" alt="{name}">'
                         f"<figcaption>{name}</figcaption></figure>")
        else:
            href = html.escape(_href(image, root))
            parts.append(f'<figure><a href="{href}"><img src="{href}" alt="{name}" loading="lazy"></a>'
                         f"<figcaption>{name}</figcaption></figure>")
    if section.measures is not None:
        parts.append(_table(section.measures, where))
    if section.links:
        items = "".join(f'<li><a href="{html.escape(_href(link, root))}">{html.escape(Path(link).name)}</a></li>'
                        for link in section.links)
        parts.append(f"<details open><summary>Files</summary><ul>{items}</ul></details>")
    parts.append("</section>")
    return "\n".join(parts)


def write_html_report(
    path: str | os.PathLike,
    *,
    title: str,
    sections: Sequence[Section],
    meta: Mapping | None = None,
    embed: bool = False,
) -> Path:
    """Write a one-file HTML report of a run, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.html``; image and file links are made relative to its folder.
    title : str
        Page title and top heading.
    sections : sequence of Section
        The report's parts, in order.
    meta : mapping, optional
        Run information (command line, parameters), shown with the mrinets
        version and the date in a ``<details>`` block.
    embed : bool
        Inline the images as base64 data URIs instead of linking them.

    Returns
    -------
    Path
        ``path``.
    """
    if not isinstance(title, str):
        raise ValueError(f"title must be a string, got {type(title).__name__}")
    if meta is not None and not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a mapping, got {type(meta).__name__}")
    path = Path(path)
    root = Path(os.path.abspath(path.parent))
    sections = list(sections)
    body = [_section(s, i, root, embed) for i, s in enumerate(sections)]
    toc = "".join(f'<li><a href="#s{i}">{html.escape(str(s.title))}</a></li>' for i, s in enumerate(sections))
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    run = {"mrinets version": mrinets.__version__, "date": when, **flatten(meta or {})}
    run_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(format_value(v))}</code></td></tr>"
                       for k, v in run.items())
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<nav><ul>{toc}</ul></nav>" if len(sections) > 1 else "",
        *body,
        f"<details><summary>Run information</summary><table>{run_rows}</table></details>",
        f"<footer>Generated by mrinets {html.escape(mrinets.__version__)} on {html.escape(when)}.</footer>",
        "</body></html>",
        "",
    ])
    return write_text(path, page)
