"""The README is a map: short, every link it and the reference in `docs/` hold leads to a
file (and a heading there), and every command it names exists, so a renamed file, heading
or command fails here rather than in a newcomer's shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
import typer
from markdown_it import MarkdownIt
from markdown_it.token import Token
from typer.testing import CliRunner

from mlops.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_LINES = 200

_markdown = MarkdownIt("commonmark").enable("table")


def _tokens(path: Path) -> list[Token]:
    return _markdown.parse(path.read_text())


def _walk(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        yield from _walk(token.children or [])


def _links(path: Path) -> list[str]:
    return [str(t.attrs["href"]) for t in _walk(_tokens(path)) if t.type == "link_open"]


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    tokens = _tokens(path)
    anchors: set[str] = set()
    for opening, inline in pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = "".join(
            c.content for c in inline.children or [] if c.type in ("text", "code_inline")
        )
        slug, n = _slug(text), 1
        while slug in anchors:  # GitHub numbers repeated headings: name, name-1, name-2
            slug, n = f"{_slug(text)}-{n}", n + 1
        anchors.add(slug)
    return anchors


def _documents() -> list[Path]:
    """README.md, docs/*.md and the local READMEs the README links to."""
    linked = [
        (ROOT / href.partition("#")[0]).resolve()
        for href in _links(README)
        if href.partition("#")[0].endswith(".md") and "://" not in href
    ]
    return sorted({README, *(ROOT / "docs").glob("*.md"), *(p for p in linked if p.is_file())})


def _code(path: Path) -> list[str]:
    """The inline code and the lines of code blocks of a Markdown file."""
    spans: list[str] = []
    for token in _walk(_tokens(path)):
        if token.type == "code_inline":
            spans.append(token.content)
        elif token.type in ("fence", "code_block"):
            spans.extend(token.content.splitlines())
    return spans


def _readme_commands() -> list[list[str]]:
    """Each `mlops <command> [<subcommand>]` the README names, as words."""
    found = {
        tuple(match.split())
        for span in _code(README)
        for match in re.findall(r"\bmlops((?: [a-z][a-z0-9-]*){1,2})", span)
    }
    return [list(words) for words in sorted(found)]


def _resolve(words: list[str]) -> list[str]:
    """The command path of `words` in the CLI: a group's word must name one of its
    commands; words after a plain command are its arguments."""
    command = typer.main.get_command(app)
    path: list[str] = []
    for word in words:
        commands = getattr(command, "commands", None)  # a group's commands by name
        if commands is None:
            break
        assert word in commands, f"`mlops {' '.join([*path, word])}` is not a command"
        command, path = commands[word], [*path, word]
    return path


def test_the_readme_is_a_map_of_at_most_200_lines() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines: move reference material to docs/"


def test_the_documents_checked_include_the_reference_and_the_local_readmes() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in _documents()}
    assert {"README.md", "docs/feature-store.md", "config/suites/README.md"} <= names


@pytest.mark.parametrize("document", _documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_points_at_an_existing_file_and_heading(document: Path) -> None:
    broken = []
    for href in _links(document):
        if re.match(r"[a-z]+:", href):  # http:, https:, mailto:
            continue
        target, _, anchor = href.partition("#")
        path = (document.parent / target).resolve() if target else document
        if not path.exists() or ROOT not in path.parents:
            broken.append(f"{href}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{href}: no heading '{anchor}' in {path.name}")
    assert broken == []


def test_the_readme_names_the_commands_it_is_checked_for() -> None:
    commands = {" ".join(words) for words in _readme_commands()}
    assert {"up", "db current", "db history", "db upgrade"} <= commands


@pytest.mark.parametrize("words", _readme_commands(), ids=" ".join)
def test_every_mlops_command_in_the_readme_exists(words: list[str]) -> None:
    path = _resolve(words)
    assert path, "the CLI has no command groups"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output


def test_the_scripts_the_readme_runs_exist_and_ci_runs_the_test_command() -> None:
    scripts = {m for span in _code(README) for m in re.findall(r"bash (scripts/\S+\.sh)", span)}
    assert {"scripts/up.sh", "scripts/test.sh", "scripts/setup.sh"} <= scripts
    assert all((ROOT / script).is_file() for script in scripts)
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_pytest_markers_the_readme_selects_are_registered() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    markers = {m.split(":")[0] for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    selected = {
        word
        for span in _code(README)
        for expression in re.findall(r'-m "([^"]+)"', span)
        for word in re.findall(r"\w+", expression)
        if word not in ("not", "and", "or")
    }
    assert selected and selected <= markers


def test_up_sh_sets_up_then_runs_mlops_up_with_its_arguments(tmp_path: Path) -> None:
    """`scripts/up.sh` in a copy of the repository whose setup only leaves a mark (the real
    one runs in CI through scripts/test.sh) and whose .venv is this one: it must run the
    setup, then `mlops up` with the arguments it was given."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "up.sh").write_text((ROOT / "scripts" / "up.sh").read_text())
    (tmp_path / "scripts" / "setup.sh").write_text("touch set-up\n")
    (tmp_path / ".venv").symlink_to(sys.prefix)
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "up.sh"), "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "set-up").exists()
    assert "--api-port" in result.stdout
