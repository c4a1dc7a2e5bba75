"""A self-contained HTML page: sections, tables, figures and inline PNGs, escaped, with no outside fetch.

What :mod:`hvit_sweeps.report` writes its page with. Images are ``data:`` URIs, the
style sheet is inline, and every string that is not marked :class:`Raw` is escaped.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["Raw", "escape", "figure", "img", "link", "page", "png_of", "table"]

SCROLL_OVER = (1600, 1400)  # px (width, height): shown at full size in a scroll box, so small labels stay readable

# The plot grid is auto-fill, not auto-fit: plotly sizes a figure to its cell as the page is parsed, and with
# auto-fit the first cell spans the whole row until the second figure arrives.
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1320px;padding:0 24px 48px;color:#1d1d1f}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:40px}
nav a{margin-right:16px}table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
img{max-width:100%;height:auto;display:block;margin:8px 0}.scroll{overflow:auto;max-height:1000px;border:1px solid #ddd}
.scroll img{max-width:none}figure{margin:16px 0}figcaption{font-weight:600;font-size:14px;color:#444}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:8px 24px}
.note{color:#666;font-size:13px}details{margin:6px 0}code{background:#f3f3f3;padding:1px 4px}
"""


class Raw(str):
    """HTML that a table cell must not escape."""


def page(title: str, sections: Mapping[str, str], headings: Mapping[str, str]) -> str:
    """The whole page: a title, a nav bar, and each section (by id) under its heading."""
    nav = "".join(f"<a href='#{key}'>{escape(headings[key])}</a>" for key in sections)
    body = "".join(
        f"<section id='{key}'><h2>{escape(headings[key])}</h2>{content}</section>" for key, content in sections.items()
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><p class='note'>hvit-sweep report, {stamp}</p><nav>{nav}</nav>{body}</body></html>"
    )


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], *, header: bool = True) -> str:
    top = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>" if header else ""
    cells = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{top}{cells}</table>"


def _cell(value: Any) -> str:
    return value if isinstance(value, Raw) else escape(str(value))


def figure(name: str, content: str) -> str:
    return (
        f"<figure id='fig-{escape(name)}'><figcaption>{escape(name.replace('_', ' '))}</figcaption>{content}</figure>"
    )


def img(png: bytes, alt: str) -> str:
    tag = f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
    width, height = _png_size(png)
    return f"<div class='scroll'>{tag}</div>" if width > SCROLL_OVER[0] or height > SCROLL_OVER[1] else tag


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the PNG header; (0, 0) for anything else."""
    return struct.unpack(">II", png[16:24]) if png[:8] == b"\x89PNG\r\n\x1a\n" else (0, 0)


def png_of(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def link(url: str, text: str) -> str:
    return f"<a href='{escape(url)}'>{escape(text)}</a>"


def escape(text: str) -> str:
    return html.escape(text, quote=True)
