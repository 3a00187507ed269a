"""Render the files of `templates/` (jinja2, StrictUndefined): text lives in templates, logic in Python."""
from __future__ import annotations

import functools
import shlex

import jinja2


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
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
    """Render `templates/<template_name>`; a missing variable is an error, never an empty string."""
    return environment().get_template(template_name).render(**context)
