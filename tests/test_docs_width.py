"""Code in the docs fits the rendered column: no line of a code block scrolls sideways.

The width: at every desktop layout of the mkdocs-material theme (960 px wide and up, where the
navigation sits beside the page) the content column is at its narrowest at 960 and at 1220 px,
where a code block holds 643 px of text. With the code font of docs/stylesheets/extra.css
(0.74em, 11.8 px, a character 7.12 px wide, measured in headless Chromium) 90 characters fit
there; the limit keeps two in hand. Program output (```text blocks) wraps instead (extra.css),
so it is not limited. Narrower screens (phones) scroll, as any code site does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LIMIT = 88
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")


def long_code_lines(text: str) -> list[tuple[int, int, str]]:
    """`(line number, width, line)` of each code-block line wider than `LIMIT` characters."""
    found = []
    fence = indent = lang = None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence, indent, lang = match["fence"], match["indent"], match["lang"]
            continue
        if line.strip().startswith(fence):
            fence = None
            continue
        # A block inside a tab or an admonition is indented in the source, not on the page.
        shown = line[len(indent) :] if line.startswith(indent) else line
        if lang != "text" and len(shown) > LIMIT:
            found.append((number, len(shown), shown))
    return found


def test_the_checker_finds_long_lines():
    page = "x\n```python\nok = 1\n" + "y" * 89 + '\n```\n=== "a"\n\n    ```py\n    ' + "z" * 88
    page += "\n    ```\n```text\n" + "o" * 200 + "\n```\n"
    assert [(number, width) for number, width, _ in long_code_lines(page)] == [(4, 89)]


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_code_lines_fit_the_column(page):
    long = long_code_lines(page.read_text())
    assert not long, f"{page.relative_to(ROOT)}: code lines wider than {LIMIT} characters:\n" + (
        "\n".join(f"  line {n} ({w} chars): {line}" for n, w, line in long)
    )


def test_api_signatures_are_formatted_to_the_same_width():
    config = (ROOT / "mkdocs.yml").read_text()
    match = re.search(r"^\s*line_length:\s*(\d+)", config, re.MULTILINE)
    assert match and int(match[1]) <= LIMIT
    assert re.search(r"^\s*separate_signature:\s*true", config, re.MULTILINE)
