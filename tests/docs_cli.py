"""docs/cli.md's command reference is each command's `--help`, copied between markers:

    <!-- help:ingest -->
    ```
    Usage: kb ingest ...
    ```
    <!-- /help:ingest -->

`python -m tests.docs_cli --write` rewrites the copies (and adds a section for a new command);
tests/test_docs.py fails when one has drifted, so the reference cannot go stale as options change.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from kb.cli import cli

DOC = Path(__file__).parent.parent / "docs" / "cli.md"
MARKER = re.compile(r"<!-- help:(?P<name>[a-z0-9 -]+?) -->\n.*?<!-- /help:(?P=name) -->", re.S)


def command_names(group: click.Group = cli, prefix: str = "") -> list[str]:
    """Every command as typed after `kb`, subcommands of groups too ("questions export"), sorted."""
    names = []
    for name, command in sorted(group.commands.items()):
        # A plugin's command (register_commands) is the plugin's to document: a test that loaded
        # one must not make kb's own reference look stale.
        module = getattr(command.callback, "__module__", None) or "kb"
        if command.hidden or not (module == "kb" or module.startswith("kb.")):
            continue
        names.append(prefix + name)
        if isinstance(command, click.Group):
            names += command_names(command, f"{prefix}{name} ")
    return names


def help_text(name: str) -> str:
    """`kb NAME --help` as a user sees it (kb's help has fixed widths, so this is the same everywhere)."""
    result = CliRunner().invoke(cli, [*name.split(), "--help"], prog_name="kb")
    if result.exit_code != 0:
        raise AssertionError(f"kb {name} --help failed: {result.output}")
    return result.output


def block(name: str) -> str:
    return f"<!-- help:{name} -->\n```\n{help_text(name)}```\n<!-- /help:{name} -->"


def rendered(text: str) -> str:
    """`text` with every help copy rewritten, copies of commands that are gone dropped with their
    heading, and a section appended for each command it lacks."""
    names = command_names()
    text = MARKER.sub(lambda m: block(m["name"]) if m["name"] in names else "", text)
    text = re.sub(r"## `kb [^`]+`\n\s*(?=## |\Z)", "", text)  # a heading left with nothing under it
    present = {m["name"] for m in MARKER.finditer(text)}
    for name in names:
        if name not in present:
            text = text.rstrip("\n") + f"\n\n## `kb {name}`\n\n{block(name)}\n"
    return text


def drift(text: str) -> list[str]:
    """The commands whose copy in `text` differs from their --help, is missing, or names no command."""
    names = command_names()
    copies = {m["name"]: m[0] for m in MARKER.finditer(text)}
    stale = [n for n in names if copies.get(n) != block(n)]
    return sorted(stale + [f"{n} (no such command)" for n in copies if n not in names])


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        DOC.write_text(rendered(DOC.read_text()))
        return 0
    if argv:
        print("usage: python -m tests.docs_cli [--write]", file=sys.stderr)
        return 2
    stale = drift(DOC.read_text())
    print("\n".join(f"stale: kb {n}" for n in stale) or "docs/cli.md is current")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
