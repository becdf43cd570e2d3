"""A Griffe extension: reads a Google-style `Example:` section as `Examples:`.

mlxkit's docstrings head their doctests `Example:` (singular, as Napoleon and the Google style
guide allow). Griffe only knows `Examples:`, and would render a singular heading as an admonition
whose `>>>` lines become Markdown text (so `[1, 3]` in an output line reads as a broken link).
Renaming the heading on load gives the usual highlighted example blocks without touching the
source. Loaded from `mkdocs.yml` (`extensions:` of the mkdocstrings Python handler).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Renames `Example:` section headings to `Examples:` in every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
