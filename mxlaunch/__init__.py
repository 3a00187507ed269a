"""mxlaunch: take Apache MXNet training from one machine to a GPU cluster on AWS, and back.

One installed package; pyproject.toml maps the repository's folders into it. Floors point down only:

    mxlaunch.launcher  -> mxlaunch.infra (only in its CLI layer)  -> mxlaunch (base: exits, errors)
    mxlaunch.trainer   -> mxlaunch (base) and nothing else of ours
    mxlaunch.templates    jinja2 text (package data)

tests/test_layers.py keeps it so.
"""
