"""The wheel works on its own: built from a copy of the repository, installed
into a fresh virtual environment without torch, its `fngen build` run outside
the repository (so its own package and shipped templates are used) reproduces
the committed golden `examples/ops.py`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The marker is registered here because this suite may not touch pyproject.toml
# or a conftest.py.  pytest calls `pytest_configure` on plugins only, so this
# module names itself in `pytest_plugins`; and `pytestmark` is looked up lazily
# (PEP 562), after that registration, so that `pytest.mark.slow` does not warn
# and `-m "not slow"` deselects the test.
pytest_plugins = [__name__]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds and installs a wheel (~20 s)")


def __getattr__(name):
    if name == "pytestmark":
        return [pytest.mark.slow]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# What the copy of the repository leaves out: local state, not sources.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
)


def _run(args, cwd, timeout=120):
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _index_reachable() -> bool:
    """Whether pip's package index answers at all (TCP is enough)."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return True
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=5):
            return True
    except OSError:
        return False


def _failed(step: str, result: subprocess.CompletedProcess) -> str:
    return f"{step} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_installed_wheel_builds_the_golden_example(tmp_path):
    # Build from a copy, so that setuptools' build/ and *.egg-info never land
    # in the working tree that other work shares.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", dist], cwd=source
    )
    if built.returncode != 0 and not _index_reachable():
        pytest.skip("the package index is unreachable: cannot fetch build requirements")
    assert built.returncode == 0, _failed("python -m build --wheel", built)
    (wheel,) = dist.glob("fngen-*.whl")

    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    assert created.returncode == 0, _failed("python -m venv", created)
    python = venv / "bin" / "python"
    installed = _run(
        [python, "-m", "pip", "install", "--quiet", wheel], cwd=tmp_path, timeout=180
    )
    if installed.returncode != 0 and not _index_reachable():
        pytest.skip("the package index is unreachable: cannot install dependencies")
    assert installed.returncode == 0, _failed("pip install", installed)

    # Run elsewhere than the repository, with the spec at the same relative
    # path: the generated header names the path it was given.
    work = tmp_path / "work"
    (work / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "ops.yaml", work / "examples" / "ops.yaml")
    probe = _run(
        [
            python,
            "-c",
            "import importlib.util, fngen; print(fngen.__file__); "
            "print(importlib.util.find_spec('torch') is not None)",
        ],
        cwd=work,
    )
    assert probe.returncode == 0, _failed("import fngen", probe)
    location, has_torch = probe.stdout.split()
    assert Path(location).resolve().is_relative_to(venv.resolve()), location
    assert has_torch == "False", "installing the wheel pulled in torch"

    result = _run(
        [venv / "bin" / "fngen", "build", "examples/ops.yaml", "-o", "out.py"], cwd=work
    )
    assert result.returncode == 0, _failed("fngen build", result)
    generated = (work / "out.py").read_text(encoding="utf-8")
    golden = (ROOT / "examples" / "ops.py").read_text(encoding="utf-8")
    assert generated == golden, "the installed fngen does not reproduce examples/ops.py"
