"""The documentation holds together: the README is short and its links land, every page the code points to
exists and is in the site, every config key has a meaning, and every command's --help ends with its page. (The
site itself is built strictly by ``make lint``; its getting-started page is run by tests/test_getting_started.py.)
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

import controller.__main__ as controller_main
import sim_switch.__main__ as switch_main
from dialout import config_fields as field
from dialout.config import Fleet, Scenario, Schedule
from dialout.config_fields import kind_of
from dialout.config_schema import documented, setting
from dialout.pages import Page, read_more
from tests.servers import REPO

README = REPO / "README.md"
README_MOST_LINES = 200


class _MkDocsLoader(yaml.SafeLoader):
    """mkdocs.yml as data: its one Python tag (Mermaid's fence format) read as the name it is."""


_MkDocsLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def nav_pages() -> set[str]:
    def walk(entries: object) -> list[str]:
        if isinstance(entries, str):
            return [entries]
        if isinstance(entries, list):
            return [page for entry in entries for page in walk(entry)]
        if isinstance(entries, dict):
            return [page for value in entries.values() for page in walk(value)]
        return []

    site = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_MkDocsLoader)
    return {f"docs/{page}" for page in walk(site["nav"])}


def test_the_readme_is_read_in_five_minutes() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MOST_LINES
    setup = lines[lines.index("## Setup: two commands") :]
    block = setup[setup.index("```sh") + 1 : setup.index("```")]
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]  # the two commands
    assert "make docs" in README.read_text(encoding="utf-8")


def test_every_link_in_the_readme_lands() -> None:
    targets = re.findall(r"\]\(([^)#]+)\)", README.read_text(encoding="utf-8"))
    local = [target for target in targets if "://" not in target]
    assert local, "the README links to its documentation"
    assert [target for target in local if not (REPO / target).exists()] == []


def test_every_page_the_code_names_exists_and_is_in_the_site() -> None:
    pages = nav_pages()
    for page in Page:
        assert (REPO / page).is_file(), page
        assert str(page) in pages, f"{page} is not in mkdocs.yml's nav"


def test_every_page_of_docs_is_in_the_site() -> None:
    written = {str(path.relative_to(REPO)) for path in (REPO / "docs").rglob("*.md")}
    assert written == nav_pages()


@pytest.mark.parametrize(
    ("parsers", "pages"),
    [
        (controller_main.parsers, controller_main.COMMAND_PAGES),
        (switch_main.parsers, {"run": Page.READING_A_RUN, "merge": Page.FLEETS}),
    ],
    ids=["controller", "sim_switch"],
)
def test_every_commands_help_ends_with_its_page(parsers: object, pages: dict[str, Page]) -> None:
    parser, commands = parsers()  # type: ignore[operator]
    assert set(commands) == set(pages)
    for name, command in commands.items():
        assert command.format_help().rstrip().endswith(read_more(pages[name])), name
    assert str(Page.CLI) in parser.format_help()


def test_every_config_key_has_a_meaning_and_a_type() -> None:
    from dialout.config import ControllerConfig, SwitchConfig

    keys = [
        *documented(ControllerConfig, "controller"),
        *documented(SwitchConfig, "switch"),
        *documented(Scenario, "scenarios.NAME"),
        *documented(Schedule, "scenarios.NAME.persistent"),
        *documented(Fleet, "scenarios.NAME.fleet"),
    ]
    assert len(keys) > 70
    for key in keys:
        assert key.doc.endswith("."), key.path  # a sentence, as the reference prints it
        if key.reader is not None:
            assert kind_of(key.reader), key.path


def test_a_key_without_a_meaning_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Section:
        size: int = setting(field.int_range(1, 9), 1, doc=" ")

    with pytest.raises(ValueError, match=r"config key section.size has no meaning"):
        documented(Section, "section")


def test_an_untrusted_certificate_names_the_page_to_read(tmp_path: Path) -> None:
    from tests.commands import run_module
    from tests.servers import write_config

    config = write_config(tmp_path)  # no certs/ here, and a switch never makes a CA
    done = run_module("sim_switch", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.endswith(f"({read_more(Page.PKI)})\n")
