"""The vendored htmx files are exactly the released ones noted in web/static/vendor/README.md."""

import hashlib
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parent.parent / "web" / "static" / "vendor"

SUMS = {
    "htmx.min.js": "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717",
    "htmx-ext-ws.js": "dab17ec53b42135cc90ca3657a9be5e2aae6cceb3dbbf1952541aa4650fcb59e",
}


@pytest.mark.parametrize("name", sorted(SUMS))
def test_vendored_file_matches_its_release(name: str) -> None:
    assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == SUMS[name]


@pytest.mark.parametrize("name", sorted(SUMS))
def test_vendored_file_has_licence_and_note(name: str) -> None:
    stem = name.removesuffix(".min.js").removesuffix(".js")
    assert (VENDOR / f"{stem}.LICENSE").read_text().strip()
    assert SUMS[name] in (VENDOR / "README.md").read_text()
