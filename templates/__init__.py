"""The text of every rendered file (jinja2 templates), package data of mxlaunch."""
