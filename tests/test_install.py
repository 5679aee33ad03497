"""The package installs: a wheel in a fresh virtualenv runs the site without this tree.

The wheel is built from a copy of the sources (nothing is written here), installed with
its dependencies into a virtualenv under the test's temporary folder, and `python -m web`
runs from there against the session's Redis and SecantusDB; the login page comes with
its CSS and scripts, byte for byte the installed ones.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers import WebProcess

# What a source distribution would leave out: the dev tree's caches, tools and tests.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "*_cache", ".hypothesis",
    "node_modules", "tests", "bench",
)  # fmt: skip
# No path of the source tree reaches the installed processes.
ISOLATED = {"PYTHONPATH": "", "PYTHONSAFEPATH": "1"}


def run(*argv: str | Path, cwd: Path) -> str:
    """Run a command to completion; its output, or a failure that shows it."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtualenv with notifier's wheel (and its dependencies) in it."""
    where = tmp_path_factory.mktemp("install")
    sources = where / "src"
    shutil.copytree(ROOT, sources, ignore=NOT_SOURCES)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run(*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", where / "dist", sources, cwd=where)
    (wheel,) = (where / "dist").glob("notifier-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", where / "venv", cwd=where)
    python = where / "venv" / "bin" / "python"
    run(*pip, "--python", python, "install", "--quiet", wheel, cwd=where)
    return python


@pytest.fixture
def installed_web(installed: Path, env: dict[str, str], db: object) -> Iterator[WebProcess]:
    """`python -m web` of the installed package, started outside this tree."""
    process = WebProcess({**env, **ISOLATED}, python=str(installed), cwd=installed.parents[1])
    process.start()
    yield process
    process.stop()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own server)
        assert response.status == 200, url
        body: bytes = response.read()
        return body


@pytest.mark.timeout(300)  # building and installing take a while on a loaded machine
def test_the_installed_package_serves_the_login_page_with_its_css_and_scripts(
    installed: Path, installed_web: WebProcess
):
    where = run(
        installed,
        "-c",
        "import web, notifier.realtime.render as r; print(web.__file__); print(r.TEMPLATES)",
        cwd=installed.parents[1],
    )
    site = installed.parents[1]
    web_init, core_templates = (Path(line) for line in where.splitlines())
    assert web_init.is_relative_to(site) and core_templates.is_relative_to(site), where

    page = get(f"{installed_web.url}/login").decode()
    assert 'name="password"' in page
    assets = re.findall(r'(?:href|src)="(/static/[^"?]+)\?v=\w+"', page)
    assert {"/static/app.css", "/static/app.js"} <= set(assets), assets
    static = web_init.parent / "static"
    for asset in assets:
        assert (
            get(installed_web.url + asset) == (static / asset.removeprefix("/static/")).read_bytes()
        )
