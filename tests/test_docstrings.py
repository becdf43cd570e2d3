"""Runs the examples in every mlxkit docstring, and the code of the docs pages, so neither drifts.

Docstrings: each module is one test, run with `doctest`. Every docstring runs in its own
namespace: the module's globals plus a tiny trained classifier (`trainer`, `model`, `history`,
`x`, `y`, `x_test`, `y_test`) and the usual imports (`mx`, `nn`, `optim`, `np`), so an example
such as `trainer.fit(x, y, epochs=3)` trains for real.

Docs pages: the ```` ```python ```` blocks of each page under `docs/` (the example tutorials
aside, which quote their scripts) run in order in one namespace, like a notebook. A block right
after a `<!-- no-run: reason -->` line is skipped; the reason is in the page source.

Everything runs in a temporary working directory, so the files examples write (`runs/log.csv`,
`curves.png`) land there.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import re
import textwrap
from pathlib import Path

import mlxkit  # first, so the fast BLAS loads before mlx.core  # isort: skip
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

PACKAGE = Path(mlxkit.__file__).parent
DOCS = PACKAGE.parent / "docs"
MODULES = sorted(
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
)
# Names the trained namespace provides; docstrings that use none of them skip the training.
_TRAINED = re.compile(r"\b(trainer|model|history|x|y|x_test|y_test)\b")
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def trained_namespace() -> dict[str, object]:
    """A small classifier trained for two epochs: x is 4 features, y is whether they sum past 2."""
    rng = np.random.default_rng(0)
    x = rng.random((96, 4), dtype=np.float32)
    y = (x.sum(axis=1) > 2).astype(np.int32)
    x_test = rng.random((32, 4), dtype=np.float32)
    y_test = (x_test.sum(axis=1) > 2).astype(np.int32)
    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = mlxkit.Trainer(
        model, optim.Adam(learning_rate=1e-2), loss="cross_entropy", metrics=["accuracy"]
    )
    history = trainer.fit(x, y, batch_size=16, epochs=2, verbose=0, seed=0)
    return {
        "x": x,
        "y": y,
        "x_test": x_test,
        "y_test": y_test,
        "model": model,
        "trainer": trainer,
        "history": history,
    }


def base_namespace() -> dict[str, object]:
    return {"mlxkit": mlxkit, "mx": mx, "nn": nn, "optim": optim, "np": np}


def test_every_module_is_listed():
    # Guards the discovery itself: a broken walk would make the parametrized test vacuous.
    assert {"mlxkit", "mlxkit.trainer", "mlxkit.callbacks.history", "mlxkit.losses"} <= set(MODULES)
    assert len(MODULES) > 30


def test_namespace_is_trained():
    names = trained_namespace()
    history = names["history"].history
    assert len(history["loss"]) == 2
    assert history["loss"][1] < history["loss"][0]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in tests:
        source = "\n".join(example.source for example in test.examples)
        test.globs = {**test.globs, **base_namespace()}
        if _TRAINED.search(source):
            test.globs.update(trained_namespace())
        runner.run(test, out=report.write)
    assert runner.failures == 0, f"{runner.failures} failing example(s):\n{report.getvalue()}"


# A fenced block: its indentation (blocks inside tabs are indented), language and body.
_FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$",
    re.MULTILINE | re.DOTALL,
)
_NO_RUN = re.compile(r"<!--\s*no-run:\s*\S.*-->\s*$")


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The runnable ```python blocks of a page, with their line numbers, in order."""
    text = page.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        if match["lang"] != "python":
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if _NO_RUN.search(before):
            continue
        line = text.count("\n", 0, match.start("body")) + 1
        blocks.append((line, textwrap.dedent(match["body"])))
    return blocks


DOC_PAGES = (
    sorted(
        str(page.relative_to(DOCS))
        for page in DOCS.rglob("*.md")
        if page.relative_to(DOCS).parts[0] != "examples" and python_blocks(page)
    )
    if DOCS.is_dir()
    else []
)


def test_fence_parser(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text\n\n```python\nx = 1\n```\n\n<!-- no-run: needs two ranks -->\n```python\nboom\n```\n"
        '\n=== "Tab"\n\n    ```python\n    y = 2\n    ```\n\n```bash\nls\n```\n'
    )
    assert python_blocks(page) == [(4, "x = 1\n"), (15, "y = 2\n")]


@pytest.mark.parametrize("page", DOC_PAGES)
def test_docs_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    path = DOCS / page
    for line, source in python_blocks(path):
        # Blank lines in front make tracebacks point at the page's own line numbers.
        code = compile("\n" * (line - 1) + source, str(path), "exec")
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)
