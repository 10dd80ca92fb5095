"""HTML building blocks for the run report: escaped tables, notes, inlined images, the page shell.

Standard library only (``html.escape``, ``string.Template``): the page must build
on a Raspberry Pi with nothing but the deploy requirements. Everything the page
needs is inside it: CSS inline, images as data: URIs, no JavaScript, no requests.
"""
import base64
import html
import string

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em; color: #222; }
h1 { margin-bottom: 0.2em; }
section { border-top: 1px solid #ccc; margin-top: 1.5em; padding-top: 0.5em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.4em 0.8em; margin: 0.5em 0; }
.meta { color: #666; font-size: 0.9em; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
nav a { margin-right: 1em; }
.small { font-size: 0.8em; color: #555; }
.scroll { overflow-x: auto; }
"""

PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>$title</title>
<link rel="icon" href="data:,">
<style>$style</style>
</head>
<body>
<h1>$title</h1>
<p class="meta">$meta</p>
<nav>$nav</nav>
$sections
</body>
</html>
""")


def esc(value):
    """Escaped text of any value."""
    return html.escape("" if value is None else str(value))


def number(value, digits=3):
    """A number for a table cell: thousands separators for ints, ``digits`` decimals for floats, '-' for None."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        small = value != 0 and abs(value) < 10 ** -digits  # e.g. 0.00042 ms stays readable
        return f"{value:.{digits}g}" if small else f"{value:,.{digits}f}"
    return str(value)


def pct(value):
    """A fraction as a percentage with two decimals, '-' for None."""
    return "-" if value is None else f"{100 * value:.2f}%"


class Raw(str):
    """HTML that is already safe (not escaped again by ``table``)."""


def cell(value):
    """One <td>: numbers right-aligned, Raw HTML as is, the rest escaped."""
    if isinstance(value, Raw):
        return f"<td>{value}</td>"
    if value is None:
        return "<td>-</td>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{esc(number(value))}</td>'
    return f"<td>{esc(value)}</td>"


def table(headers, rows, table_id=None):
    """An HTML table; cells are escaped unless they are ``Raw``."""
    attr = f' id="{esc(table_id)}"' if table_id else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table{attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n'
            "</table></div>")


def pairs(rows):
    """A two-column key/value table from [(key, value)]."""
    return table(["", ""], rows).replace("<thead><tr><th></th><th></th></tr></thead>\n", "")


def note(text):
    """A highlighted note (escaped) e.g. saying which command produces a missing part."""
    return f'<p class="note">{esc(text)}</p>'


def paragraph(text, css=None):
    attr = f' class="{css}"' if css else ""
    return f"<p{attr}>{esc(text)}</p>"


def image(png, alt):
    """An <img> with the PNG bytes inlined as a data: URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def section(section_id, title, parts):
    """A <section> with a stable id (tests and links find it by id)."""
    body = "\n".join(p for p in parts if p)
    return f'<section id="{esc(section_id)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title, meta, sections):
    """The whole page from [(id, title, html)] sections."""
    nav = " ".join(f'<a href="#{esc(sid)}">{esc(stitle)}</a>' for sid, stitle, _ in sections)
    body = "\n".join(section(sid, stitle, [content]) for sid, stitle, content in sections)
    return PAGE.substitute(title=esc(title), meta=esc(meta), nav=nav, sections=body, style=STYLE)
