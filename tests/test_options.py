"""Options owned by the plugins that read them: `kb ingest -o`, the flags built from the same
declarations, `kb plugins`, the register_commands hook, one LLM-options definition, and their docs."""

from __future__ import annotations

import ast
import json
import re
import sqlite3
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from kb import KBError, LLMOptions, option
from kb.cli import CONTEXT, cli
from kb.options import describe, merge
from tests.helpers import ROOT, TEST_PLUGINS, run_kb

DOCS = ROOT / "docs" / "plugins.md"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="kb")


def stored_text(db) -> str:
    with sqlite3.connect(db) as conn:
        return " ".join(row[0] for row in conn.execute("SELECT text FROM chunks"))


def test_o_sets_a_third_party_connectors_option(tmp_path, hash_embedder):
    """The test plugin's .stamp connector declares `stamp`: -o reaches it through the engine, and
    without -o it reads its declared default."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "rain.stamp").write_text("Rain falls on the gauge.")
    stamped = invoke("ingest", str(tmp_path / "a.db"), str(folder), "--embedder", "hash", "-o", "stamp", "rainbow")
    assert stamped.exit_code == 0, stamped.output
    assert "Stamped rainbow." in stored_text(tmp_path / "a.db")
    plain = invoke("ingest", str(tmp_path / "b.db"), str(folder), "--embedder", "hash")
    assert plain.exit_code == 0, plain.output
    assert "Stamped plain." in stored_text(tmp_path / "b.db")


@pytest.mark.parametrize(
    ("pair", "said"),
    [
        (("depth", "1"), "No option named 'depth'; the options are: allow_private, crawl, max_depth"),
        (("max_depth", "deep"), "The option max_depth takes a whole number, not 'deep'."),
        (("max_depth", "-1"), "The option max_depth is at least 0, not '-1'."),
        (("ocr", "sometimes"), "The option ocr is one of auto, always, never, not 'sometimes'."),
        (("crawl", "maybe"), "The option crawl takes true or false, not 'maybe'."),
    ],
)
def test_a_bad_o_is_one_sentence_and_creates_nothing(tmp_path, pair, said):
    db = tmp_path / "kb.db"
    result = invoke("ingest", str(db), str(ROOT / "corpora" / "hydrology"), "-o", *pair)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {said}") and result.stderr.count("\n") == 1, result.stderr
    assert not db.exists()


def parsed(*args: str) -> dict:
    """The options `kb ingest` hands connectors and fetchers for these arguments (parsed, not run)."""
    from kb.cli_sources import ingest, plugin_options
    from kb.options import parse_pairs
    from kb.plugins import declared_options

    with ingest.make_context("ingest", ["DB", "SOURCE", *args], **CONTEXT) as ctx:
        settings = dict(ctx.params)
    settings["option"] = parse_pairs(settings["option"], declared_options())
    return {"engine_max_pages": settings["max_pages"], **plugin_options(settings)}


def test_flags_and_o_set_the_same_options():
    from kb.plugins import declared_options

    bare = parsed()
    assert {k: v for k, v in bare.items() if k not in ("engine_max_pages", "exclude")} == {
        name: info.default for name, info in declared_options().items()
    }
    assert bare["engine_max_pages"] == 5000 and bare["max_pages"] == 50  # the page limit is not the crawl's
    assert parsed("--depth", "1")["max_depth"] == parsed("-o", "max_depth", "1")["max_depth"] == 1
    assert (
        parsed("--max-site-pages", "3")["max_pages"] == 3
        and parsed("--max-site-pages", "3")["engine_max_pages"] == 5000
    )
    assert (
        parsed("--max-hours", "2")["max_duration_s"] == parsed("-o", "max_duration_s", "7200")["max_duration_s"] == 7200
    )
    assert parsed("--crawl")["crawl"] is True and parsed("-o", "crawl", "yes")["crawl"] is True
    assert parsed("--pdf-password", "a", "-o", "pdf_passwords", "b", "-o", "pdf_passwords", "c")["pdf_passwords"] == (
        "b",
        "c",
    )
    assert parsed("--depth", "3", "-o", "max_depth", "1")["max_depth"] == 1  # -o wins over a flag


def test_two_declarations_of_one_name_are_refused():
    @dataclass(frozen=True)
    class Shallow:
        max_depth: int = option(1, "How deep.")

    @dataclass(frozen=True)
    class Deep:
        max_depth: int = option(5, "How deep.")

    assert merge([("a", Shallow), ("b", Shallow)])["max_depth"].default == 1
    with pytest.raises(KBError, match="declared twice"):
        merge([("a", Shallow), ("b", Deep)])


def test_kb_plugins_lists_every_kind_with_its_options():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    web = next(f for f in data["fetchers"] if f["name"] == "web")
    assert {o["name"]: o["default"] for o in web["options"]} == {
        "allow_private": False,
        "crawl": False,
        "max_depth": 2,
        "max_pages": 50,
    }
    pdf = next(c for c in data["connectors"] if c["kind"] == "pdf")
    assert {"ocr", "ocr_lang", "pdf_passwords"} == {o["name"] for o in pdf["options"]}
    ocr = next(o for o in pdf["options"] if o["name"] == "ocr")
    assert ocr["choices"] == ["auto", "always", "never"] and ocr["flag"] == "--ocr" and ocr["help"]
    assert {c["kind"] for c in data["connectors"]} >= {"pdf", "markdown", "html", "docx", "media", "image"}
    assert any(e["model_id"] == "sentence-transformers/all-MiniLM-L6-v2" for e in data["embedders"])
    assert {b["backend"] for b in data["llms"]} >= {"llama-cpp", "openai-compatible"}
    assert [o["name"] for o in data["llm_options"]] == [info.name for info in describe(LLMOptions)]
    text = invoke("plugins")
    assert text.exit_code == 0
    assert "Fetchers:" in text.output and "max_depth (int = 2): How many links deep --crawl goes." in text.output


def test_a_plugin_adds_a_command():
    """register_commands: the test plugin, loaded through KB_PLUGINS, adds `kb hash-vector`."""
    from kb_test_plugins import HashEmbedder

    proc = run_kb("hash-vector", "rain gauge", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"{x:.3f}" for x in HashEmbedder().embed(["rain gauge"])[0]]


def test_every_asking_command_takes_the_one_llm_definition():
    """ask, eval, mcp, questions make and serve: each LLM flag is LLMOptions', default and all."""
    commands = [cli.commands[n] for n in ("ask", "eval", "mcp", "serve")] + [cli.commands["questions"].commands["make"]]
    for command in commands:
        flags = {opt for param in command.params for opt in param.opts}
        with command.make_context(command.name, [], resilient_parsing=True, **CONTEXT) as ctx:
            parsed = ctx.params
        for info in describe(LLMOptions):
            assert info.flag in flags, (command.name, info.flag)
            assert parsed[info.name] == info.default, (command.name, info.name)


def test_llm_options_from_the_plugin_configuration():
    """The ask page reads the configuration kb serve wrote, and one a person wrote by hand."""
    written = LLMOptions(n_ctx=2048, llm_url="http://127.0.0.1:9/v1").config()
    assert LLMOptions.from_config(written) == LLMOptions(n_ctx=2048, llm_url="http://127.0.0.1:9/v1")
    by_hand = LLMOptions.from_config({"n_ctx": "1024", "fast": "true", "threads": 2, "candidates": 8})
    assert (by_hand.n_ctx, by_hand.fast, by_hand.threads, by_hand.judge) == (1024, True, 2, "auto")
    with pytest.raises(KBError, match="The option judge is one of auto, retrieval, llm"):
        LLMOptions.from_config({"judge": "nobody"})
    with pytest.raises(KBError, match="not both"):
        LLMOptions(model="m.gguf", llm_url="http://127.0.0.1:9/v1").check()


def test_every_hook_and_option_is_documented():
    """datasette's check: each hookspec has a heading in docs/plugins.md, and each built-in option a
    table row with its current default."""
    from kb.plugins import declared_options

    docs = DOCS.read_text()
    tree = ast.parse((ROOT / "kb" / "hookspecs.py").read_text())
    hooks = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert len(hooks) >= 5
    for hook in hooks:
        signature = f"### {hook.name}({', '.join(a.arg for a in hook.args.args)})"
        assert signature in docs.splitlines(), f"{hook.name} is not documented in {DOCS}"
    options = list(declared_options().values()) + describe(LLMOptions)
    for info in options:
        default = "none" if info.default is None else "`()`" if info.default == () else f"`{info.default}`"
        row = re.compile(rf"^\| `{info.name}` \| {info.type} \| {re.escape(default)} \|", re.M)
        assert row.search(docs), f"the option {info.name} (default {info.default!r}) is not documented in {DOCS}"
