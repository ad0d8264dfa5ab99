"""Self-contained HTML pages: sections of tables and matplotlib figures inlined as base64 PNG.

Nothing on a page refers to the network or to other files, so a report opens from disk anywhere.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import matplotlib.pyplot as plt
from markupsafe import Markup

from cvtransfer.io import atomic_write_text

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
)


@dataclass
class Section:
    """One titled part of a page; ``body`` is HTML."""

    id: str
    title: str
    body: Markup


def write_page(path: str | Path, title: str, subtitle: str, sections: Sequence[Section]) -> Path:
    """Render ``sections`` into one HTML file at ``path`` (written atomically)."""
    from importlib.metadata import version

    __version__ = version("cvtransfer")

    page = _TEMPLATES.get_template("page.html.j2").render(
        title=title, subtitle=subtitle, sections=sections, version=__version__,
        created=datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    atomic_write_text(path, page)
    return Path(path)


def figure_html(fig: plt.Figure, alt: str, caption: str = "", dpi: int = 100) -> Markup:
    """``fig`` as an inline PNG (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    caption_html = Markup("<figcaption>{}</figcaption>").format(caption) if caption else Markup("")
    return Markup('<figure><img src="data:image/png;base64,{}" alt="{}">{}</figure>').format(data, alt, caption_html)


def png_html(path: str | Path, alt: str, caption: str = "") -> Markup:
    """A PNG file already written (a run folder's figure) as an inline image."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    caption_html = Markup("<figcaption>{}</figcaption>").format(caption) if caption else Markup("")
    return Markup('<figure><img src="data:image/png;base64,{}" alt="{}">{}</figure>').format(data, alt, caption_html)


def run_png_html(run_dir: Path, name: str, alt: str, caption: str = "") -> Markup:
    """:func:`png_html` of a picture the run folder holds; FileNotFoundError (the section then says why) if
    it is missing."""
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: re-run cvtransfer evaluate {run_dir}")
    return png_html(path, alt, caption)


def show_number(value: float | None) -> str:
    """A metric with 3 decimals, "n/a" for None (undefined)."""
    return "n/a" if value is None else f"{value:.3f}"


def figures_html(*figures: Markup) -> Markup:
    """Figures side by side (wrapping to one per line on narrow screens)."""
    return Markup('<div class="figures">{}</div>').format(Markup("").join(figures))


def table_html(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None,
               best: AbstractSet[tuple[int, int]] = frozenset(), row_classes: Sequence[str] | None = None) -> Markup:
    """A table; floats shown with 3 decimals, ``numeric`` columns right-aligned, ``best`` (row, column) cells highlighted."""
    numeric = list(numeric or [False] * len(headers))
    head = Markup("").join(
        Markup('<th class="num">{}</th>' if numeric[i] else "<th>{}</th>").format(h) for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            classes = " ".join(name for name, on in (("num", numeric[c]), ("best", (r, c) in best)) if on)
            cells.append(Markup('<td class="{}">{}</td>').format(classes, format_value(value)))
        row_class = row_classes[r] if row_classes else ""
        body.append(Markup('<tr class="{}">{}</tr>').format(row_class, Markup("").join(cells)))
    return Markup('<div class="table-wrap"><table><thead><tr>{}</tr></thead><tbody>{}</tbody></table></div>').format(
        head, Markup("").join(body))


def format_value(value: Any) -> Markup | str:
    """Floats with 3 decimals, None as n/a, markup as is, anything else as (escaped) text."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)


def note(text: str) -> Markup:
    return Markup('<p class="note">{}</p>').format(text)


def cards_html(items: Sequence[tuple[str, str]]) -> Markup:
    """Headline numbers: (value, label) cards."""
    return Markup('<div class="cards">{}</div>').format(
        Markup("").join(Markup("<div class=\"card\"><b>{}</b><span>{}</span></div>").format(v, k) for v, k in items))
