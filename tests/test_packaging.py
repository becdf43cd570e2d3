"""Release readiness: the sdist and wheel build, pass `twine check`, and the wheel works installed.

One build per test session (`python -m build`: the sdist, then the wheel built from the sdist, as
PyPI users get them). The checks: the metadata PyPI shows, the wheel holds only the package, and
the wheel installed into a fresh virtual environment runs `mlxkit doctor` and the README's
snippet. The fresh environment sees this interpreter's site-packages through a `.pth` file, so
MLX and NumPy are not downloaded again; the installed wheel comes first on its path, and the
commands run outside the checkout, so they cannot import the source tree by accident.
"""

from __future__ import annotations

import email
import gzip
import re
import struct
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import mlxkit

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = mlxkit.__version__


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("build", reason="`build` is in the dev extra")
    out = tmp_path_factory.mktemp("dist")
    result = run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="module")
def metadata(dist) -> email.message.Message:
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        text = wheel.read(f"mlxkit-{VERSION}.dist-info/METADATA").decode("utf-8")
    return email.message_from_string(text)


def test_file_names_carry_the_single_sourced_version(dist):
    assert dist["wheel"].name == f"mlxkit-{VERSION}-py3-none-any.whl"
    assert dist["sdist"].name == f"mlxkit-{VERSION}.tar.gz"
    # The version lives in mlxkit/__init__.py only; pyproject.toml reads it from there.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert not re.search(r"^version\s*=", pyproject, re.MULTILINE)


def test_twine_check_passes(dist):
    pytest.importorskip("twine", reason="`twine` is in the dev extra")
    result = run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.values())])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_metadata_pypi_shows(metadata):
    assert metadata["Name"] == "mlxkit"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (ROOT / "README.md").read_text().strip()
    assert {"mlx", "apple-silicon", "deep-learning"} <= set(metadata["Keywords"].split(","))

    classifiers = metadata.get_all("Classifier")
    # One classifier per supported Python, matching Requires-Python, and nothing older.
    pythons = sorted(c.rsplit(":: ", 1)[1] for c in classifiers if re.search(r"3\.\d+$", c))
    assert pythons[0] == "3.10", pythons
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    # PEP 639: with a License-Expression, license classifiers are not allowed.
    assert not any(c.startswith("License ::") for c in classifiers)

    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Changelog", "Issues"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())

    requirements = metadata.get_all("Requires-Dist")
    assert any(r.startswith("mlx[cpu]") and "linux" in r for r in requirements)
    assert any(r.startswith("mlx>") and "darwin" in r for r in requirements)
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"dev", "docs", "plot"} <= extras


def test_readme_renders_on_pypi(metadata):
    # PyPI shows the README without the repository around it: relative links and images break.
    description = metadata.get_payload()
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    relative = [t for t in targets if not re.match(r"(https?://|mailto:|#)", t)]
    assert not relative, f"README links that break on PyPI (make them absolute): {relative}"


def test_wheel_holds_only_the_package(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(f"mlxkit-{VERSION}.dist-info/entry_points.txt").decode()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"mlxkit", f"mlxkit-{VERSION}.dist-info"}, tops
    assert "mlxkit/py.typed" in names
    assert f"mlxkit-{VERSION}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".so"))]
    sources = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "mlxkit").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sources <= set(names), sorted(sources - set(names))
    assert re.search(r"^mlxkit = mlxkit\.cli:main$", entry_points, re.MULTILINE), entry_points


def test_sdist_holds_the_sources_and_nothing_local(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = sdist.getnames()
    prefix = f"mlxkit-{VERSION}/"
    assert all(name.startswith(prefix) for name in names)
    inside = {name[len(prefix) :] for name in names}
    for required in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO"):
        assert required in inside, required
    assert "mlxkit/__init__.py" in inside and "tests/conftest.py" in inside
    local = [n for n in inside if re.match(r"(\.venv|\.git|site|dist|runs|build)(/|$)", n)]
    assert not local, local
    assert not [n for n in inside if "__pycache__" in n or n.endswith(".pyc")]


def write_idx_mnist(folder: Path, num_train: int, num_test: int) -> None:
    """MNIST-format IDX files (gzipped) of synthetic digits, for the README snippet."""
    from mlxkit.datasets import make_synthetic_digits

    (x_train, y_train), (x_test, y_test) = make_synthetic_digits(num_train, num_test)
    folder.mkdir()
    for split, images, labels in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        header = struct.pack(">IIII", 2051, len(images), 28, 28)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(header + images.tobytes())
        )
        header = struct.pack(">II", 2049, len(labels))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(header + labels.tobytes())
        )


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its Python."""
    home = tmp_path_factory.mktemp("venv")
    result = run([sys.executable, "-m", "venv", "--without-pip", str(home / "venv")])
    assert result.returncode == 0, result.stderr
    python = home / "venv" / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # This interpreter's packages (MLX, NumPy, pip), after the venv's own on sys.path.
    Path(site.stdout.strip(), "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = run(
        # --ignore-installed: the outer environment's mlxkit (an editable install, say) is visible
        # through outer.pth; it must be neither reused nor touched.
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            str(dist["wheel"]),
        ],
        cwd=home,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def test_installed_wheel_is_the_one_imported(installed):
    result = run(
        [str(installed), "-c", "import mlxkit; print(mlxkit.__file__)"], cwd=installed.parent
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed.parents[1]), result.stdout


def test_installed_wheel_dependencies_are_satisfied(installed, metadata):
    # The wheel's Requires-Dist, checked against what the environment holds, markers evaluated.
    from packaging.requirements import Requirement

    problems = []
    for line in metadata.get_all("Requires-Dist"):
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        probe = run(
            [
                str(installed),
                "-c",
                "import sys, importlib.metadata as m; print(m.version(sys.argv[1]))",
                requirement.name,
            ],
            cwd=installed.parent,
        )
        version = probe.stdout.strip()
        if probe.returncode != 0 or version not in requirement.specifier:
            problems.append(f"{requirement}: found {version or 'nothing'}")
    assert not problems, problems


def test_installed_console_script_runs_doctor(installed):
    script = installed.parent / "mlxkit"
    assert script.exists(), "the wheel's console script was not installed"
    result = run([str(script), "doctor"], cwd=installed.parent)
    # 0, or 1 on Linux when only MLX's reference BLAS is available (with advice printed).
    assert result.returncode in (0, 1), result.stdout + result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line[:1].isalpha())
    assert lines["mlxkit"].strip() == VERSION
    assert lines["matmul"].startswith("256x256 @ 256x256 in")
    if result.returncode == 1:
        assert sys.platform.startswith("linux") and "advice" in lines


def test_installed_wheel_runs_the_readme_snippet(installed, tmp_path):
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert snippet, "README.md has no python block"
    code = snippet.group(1)
    assert '"path/to/mnist"' in code, "the snippet's data path changed: update this test"
    write_idx_mnist(tmp_path / "mnist", 600, 100)
    code = code.replace('"path/to/mnist"', repr(str(tmp_path / "mnist")))
    code += "\nassert history.history['loss'][-1] < history.history['loss'][0]\n"
    code += "assert probs.shape == (100, 10)\nprint('README snippet OK')\n"
    result = run([str(installed), "-c", code], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "README snippet OK" in result.stdout
