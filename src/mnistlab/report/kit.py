"""The shared template kit of ``report.html`` and ``compare.html``: one Jinja2 environment.

Autoescape is always on, so every value a template prints (class names, file names, the command
line, config strings) is HTML-escaped: a run directory is untrusted. Only the package's own
stylesheet is marked safe. The pages inline their CSS and images, so they need no other file.
"""

from __future__ import annotations

import base64
import functools
from importlib import resources

import jinja2
from markupsafe import Markup


def num(value, spec: str = ".4f") -> str:
    """Format a number with ``spec``; ``-`` for anything that is not a number (e.g. ``None``)."""
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "-"


def duration(seconds) -> str:
    """``12.3 s`` under two minutes, ``4 min 5 s`` above; ``-`` for a missing value."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI, so the page carries its images inside."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@functools.cache
def environment() -> jinja2.Environment:
    """The environment every page is rendered with (built on first use, then reused).

    Templates come from ``mnistlab/report/templates``; missing variables are errors
    (``StrictUndefined``) rather than silently empty text.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mnistlab.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=num, duration=duration, data_uri=data_uri)
    env.globals["css"] = Markup(stylesheet())
    return env


def stylesheet() -> str:
    """The CSS shared by every page (``mnistlab/report/static/report.css``)."""
    return resources.files("mnistlab.report").joinpath("static", "report.css").read_text("utf-8")


def render(template: str, **context) -> str:
    """Render one of the package's templates (e.g. ``report.html.j2``) with ``context``."""
    return environment().get_template(template).render(**context)
