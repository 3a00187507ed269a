"""The text of every rendered file (jinja2 templates, package data) and `render`, the one way to fill one in:
text lives in templates, logic in Python; a missing variable is an error (StrictUndefined), never ''."""
from __future__ import annotations

import functools
import shlex


@functools.lru_cache(maxsize=1)
def environment():
    import jinja2  # heavy: kept off `--help`

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mxlaunch.templates", ""),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["shquote"] = shlex.quote
    return env


def render(template_name: str, **context) -> str:
    """Render `templates/<template_name>`."""
    return environment().get_template(template_name).render(**context)
