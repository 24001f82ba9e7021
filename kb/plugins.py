"""The plugin manager: built-in and third-party connectors and embedders register the same way."""

from __future__ import annotations

import importlib
import os
from typing import Any

import pluggy

from . import hookspecs
from .errors import KBError

# Built-ins are plugins too (datasette's DEFAULT_PLUGINS): a third-party package registers
# through the "kb" entry point group, or a module named in $KB_PLUGINS (comma-separated).
DEFAULT_PLUGINS = (
    "connectors.pdf",
    "connectors.text",
    "connectors.html",
    "connectors.slides",
    "connectors.word",
    "connectors.documents",
    "connectors.images",
    "connectors.legacy_office",
    "connectors.web",
    "connectors.media",
    "kb.embedders",
    "kb.llm",
)

pm = pluggy.PluginManager("kb")
pm.add_hookspecs(hookspecs)

_loaded = False
_external: list[tuple[str, Any]] | None = None


def ensure_plugins_loaded() -> None:
    """Register the built-ins, entry-point plugins and $KB_PLUGINS modules, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    external = load_external_plugins()
    # The CLI loads the third-party plugins alone first (for register_commands, without importing every
    # connector); registered again after the built-ins, they are still called first and win a suffix.
    for _name, plugin in external:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
    for name in DEFAULT_PLUGINS:
        module = importlib.import_module(name)
        if not pm.is_registered(module):
            pm.register(module, name)
    for name, plugin in external:
        if not pm.is_registered(plugin):
            pm.register(plugin, name)


def load_external_plugins() -> list[tuple[str, Any]]:
    """Register the entry-point plugins and $KB_PLUGINS modules (not the built-ins), once; returns them."""
    global _external
    if _external is not None:
        return _external
    before = set(pm.get_plugins())
    pm.load_setuptools_entrypoints("kb")
    found = [(pm.get_name(p) or "", p) for p in pm.get_plugins() if p not in before]
    for name in filter(None, (n.strip() for n in os.environ.get("KB_PLUGINS", "").split(","))):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise KBError(f"Cannot load the plugin {name!r} named in KB_PLUGINS ({exc}).") from exc
        if not pm.is_registered(module):
            pm.register(module, name)
            found.append((name, module))
    _external = found
    return found


def _collect(hook_name: str) -> list[Any]:
    ensure_plugins_loaded()
    items: list[Any] = []
    getattr(pm.hook, hook_name)(register=items.append)
    return items


_connector_cache: tuple[frozenset[Any], dict[str, Any]] | None = None


def connectors() -> dict[str, Any]:
    """Connector classes keyed by the file suffixes they read (".pdf", ".md", ...)."""
    global _connector_cache
    ensure_plugins_loaded()
    # Asked once per file during ingest: rebuild the table only when the set of plugins changes.
    # Keyed by the plugin objects themselves, not their ids: holding them means a plugin registered
    # after another was dropped cannot reuse its id and be mistaken for it.
    key = frozenset(pm.get_plugins())
    if _connector_cache is not None and _connector_cache[0] == key:
        return _connector_cache[1]
    by_suffix: dict[str, Any] = {}
    # pluggy calls later-registered plugins first, so a third-party connector wins a suffix.
    for connector in reversed(_collect("register_connectors")):
        for suffix in connector.suffixes:
            by_suffix[suffix.lower()] = connector
    _connector_cache = (key, by_suffix)
    return by_suffix


def connector_for(name: str) -> Any | None:
    """The connector for a file name, by its suffix; None when no connector reads it."""
    lowered = name.lower()
    table = connectors()
    # Longest suffix first, so ".tar.gz"-style suffixes can be registered.
    for suffix in sorted(table, key=len, reverse=True):
        if lowered.endswith(suffix):
            return table[suffix]
    return None


def fetchers() -> list[Any]:
    """Fetcher classes for URLs, the one to ask first first (highest priority; later plugins win ties)."""
    found = _collect("register_fetchers")
    return sorted(found, key=lambda f: -getattr(f, "priority", 0))


def fetcher_for(url: str) -> Any | None:
    """The first fetcher that claims `url`; None when none does."""
    for fetcher in fetchers():
        if fetcher.claims(url):
            return fetcher
    return None


def embedders() -> dict[str, Any]:
    """Embedder classes keyed by model id and by each alias."""
    table: dict[str, Any] = {}
    for embedder in reversed(_collect("register_embedders")):
        table[embedder.model_id] = embedder
        for alias in getattr(embedder, "aliases", ()):
            table[alias] = embedder
    return table


def get_embedder(name: str | None = None) -> Any:
    """An embedder instance by model id or alias (the default when None); models load lazily."""
    from .embedders import DEFAULT_EMBEDDER

    table = embedders()
    key = name or DEFAULT_EMBEDDER
    if key not in table:
        known = ", ".join(sorted({cls.model_id for cls in table.values()}))
        raise KBError(f"No embedder named {key!r} is installed (known: {known}).")
    return table[key]()


def llms() -> dict[str, Any]:
    """LLM backend classes keyed by backend name ("llama-cpp", "openai-compatible", ...)."""
    table: dict[str, Any] = {}
    for backend in reversed(_collect("register_llms")):
        table[backend.backend] = backend
    return table


def get_llm(backend: str, **options: Any) -> Any:
    """An LLM backend instance: get_llm("llama-cpp", model_path=...) or get_llm("openai-compatible", url=...)."""
    table = llms()
    if backend not in table:
        raise KBError(f"No LLM backend named {backend!r} is installed (known: {', '.join(sorted(table))}).")
    return table[backend](**options)


def declared_options() -> dict[str, Any]:
    """Every option the installed connectors and fetchers declare (`kb.options.OptionInfo` by name)."""
    from .options import merge

    plugins = {cls: None for cls in [*connectors().values(), *fetchers()]}
    return merge((_plugin_name(cls), cls.options) for cls in plugins if getattr(cls, "options", None) is not None)


def catalogue() -> dict[str, list[dict[str, Any]]]:
    """What `kb plugins` lists: each connector, fetcher, embedder and LLM backend, with its options."""
    from .options import LLMOptions, describe

    def entry(cls: Any, **fields: Any) -> dict[str, Any]:
        options = getattr(cls, "options", None)
        described = [info.to_dict() for info in describe(options)] if options is not None else []
        return {**fields, "plugin": _plugin_name(cls), "options": described}

    unique_connectors = list(dict.fromkeys(connectors().values()))
    return {
        "connectors": [entry(c, kind=c.kind, suffixes=list(c.suffixes)) for c in unique_connectors],
        "fetchers": [entry(f, name=f.name, priority=getattr(f, "priority", 0)) for f in fetchers()],
        "embedders": [
            entry(e, model_id=e.model_id, aliases=list(getattr(e, "aliases", ())), dimension=e.dimension)
            for e in dict.fromkeys(embedders().values())
        ],
        "llms": [entry(b, backend=b.backend) for b in llms().values()],
        # Every backend is chosen and tuned by the same options (kb ask, kb serve, the ask page).
        "llm_options": [info.to_dict() for info in describe(LLMOptions)],
    }


def _plugin_name(cls: Any) -> str:
    """The module a plugin class comes from, as `kb plugins` names it."""
    return getattr(cls, "__module__", "") or ""
