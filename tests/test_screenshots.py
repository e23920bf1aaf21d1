"""The documentation's pictures come out of today's code: ``tests/screenshots.py`` (what ``make screenshots``
runs) takes them from a real run into a directory of the test's own, never into docs/images/."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from tests.browser import chromium
from tests.screenshots import NAMES, WIDTH, take
from tests.servers import REPO


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk, first after the signature
    return width, height


def test_the_pictures_are_taken_from_a_real_run(tmp_path: Path) -> None:
    chromium()  # skips without Chromium, fails under CI
    taken = take(tmp_path / "images")
    assert [path.name for path in taken] == list(NAMES)
    for path in taken:
        width, height = png_size(path.read_bytes())
        assert width == WIDTH
        assert 300 <= height <= 900, (path.name, height)
        assert path.stat().st_size > 20_000, path.name  # a page drawn, not a blank one


def test_the_docs_show_every_picture_and_have_each_one() -> None:
    shown = {
        name
        for page in (REPO / "docs").rglob("*.md")
        for name in re.findall(r"\]\(images/([\w.-]+\.png)\)", page.read_text(encoding="utf-8"))
    }
    assert shown == set(NAMES)
    assert {path.name for path in (REPO / "docs" / "images").glob("*.png")} == set(NAMES)
