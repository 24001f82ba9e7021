"""`kb plugins`: the connectors, fetchers, embedders and LLM backends installed, with their options."""

from __future__ import annotations

from typing import Any

import click

from .cli import _print_json, cli, user_errors
from .terminal import printable


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def plugins(as_json: bool) -> None:
    """List the installed connectors, fetchers, embedders and LLM backends, and the options each reads.

    A connector's or fetcher's option is set with `kb ingest -o KEY VALUE`; the LLM options
    are `kb ask`'s and `kb serve`'s flags. Third-party plugins (entry point group "kb", or
    modules named in $KB_PLUGINS) are listed with the built-ins.

    \b
    Example:
        kb plugins
        kb plugins --json
    """
    from .plugins import catalogue

    data = catalogue()
    if as_json:
        _print_json(data)
        return
    for line in format_catalogue(data):
        click.echo(printable(line))


_SECTIONS = (
    ("connectors", "Connectors", lambda e: f"{e['kind']}  {' '.join(e['suffixes'])}"),
    ("fetchers", "Fetchers", lambda e: f"{e['name']}  (priority {e['priority']})"),
    ("embedders", "Embedders", lambda e: " ".join([e["model_id"], *e["aliases"]]) + f"  ({e['dimension']} dims)"),
    ("llms", "LLM backends", lambda e: e["backend"]),
)


def format_catalogue(data: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines: list[str] = []
    for key, title, head in _SECTIONS:
        lines.append(f"{title}:")
        for entry in data[key]:
            lines.append(f"  {head(entry)}  [{entry['plugin']}]")
            lines += [f"      {_option_line(o)}" for o in entry["options"]]
    lines.append("LLM options (kb ask, kb serve and the ask page):")
    lines += [f"      {_option_line(o)}" for o in data["llm_options"]]
    return lines


def _option_line(option: dict[str, Any]) -> str:
    default = option["default"]
    shown = "" if default is None or default == [] else f" = {default}"
    return f"{option['name']} ({option['type']}{shown}): {option['help']}"
