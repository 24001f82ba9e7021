"""MCP over streamable HTTP at `kb serve`'s /mcp: kb's MCP tools (kb/mcp_server.py) over the served KBs.

Questions go through the ask page's worker and queue, searches through its search threads; a
passage, the source list and a source's text are read on one thread of their own, read-only.
Links are the server's own deep links, absolute, as in /v1.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kb.injection import clean_answer, clean_answer_record
from kb.mcp_server import add_source_resources, answer_record, build_server, hit_record, resource_uri

from .engine import workers
from .openai_api import Site, deep_link, link_for

MAX_BODY_BYTES = 256 * 1024


class ServedLibrary:
    """The KBs a Datasette serves, as kb.mcp_server.Library."""

    def __init__(self, site: Site, kbs: dict[str, tuple[str, Any]]):
        self.site = site
        self.kbs = kbs
        self.names = list(kbs)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kb-mcp")
        self._catalog: Any = None

    def _link(self, name: str) -> Any:
        return link_for(self.site, name, self.kbs[name][1])

    async def _read(self, fn: Any, name: str, *args: Any) -> Any:
        from kb.passages import Catalog

        def work() -> Any:
            if self._catalog is None:
                self._catalog = Catalog()
            return fn(self._catalog.kb(self.kbs[name][0]), *args)

        return await asyncio.get_running_loop().run_in_executor(self._thread, work)

    async def search(self, name: str, query: str, k: int) -> list[dict[str, Any]]:
        hits = await workers.search(self.kbs[name][0], query, k)
        link = self._link(name)
        return clean_answer_record([hit_record(h, link(h)) for h in hits])

    async def ask(self, name: str, question: str) -> dict[str, Any]:
        config = self.site.datasette.plugin_config("kb") or {}
        answer = await workers.ask(self.kbs[name][0], question, config)
        return answer_record(answer, self._link(name))

    async def passage(self, name: str, chunk_id: int) -> dict[str, Any]:
        from kb.passages import passage

        found = await self._read(passage, name, chunk_id)
        status = self.kbs[name][1]
        url = deep_link(self.site, name, status, found.uri, found.chunk_id, found.page, found.link)
        return clean_answer_record(found.record(url))

    async def sources(self, name: str) -> list[dict[str, Any]]:
        from kb.passages import sources

        listed = await self._read(sources, name)
        return [{**s, "resource": resource_uri(name, s["source_id"])} for s in listed]

    async def source_text(self, name: str, source_id: int) -> str:
        from kb.passages import source_text

        return clean_answer(await self._read(source_text, name, source_id))


async def build_app(site: Site, host: str) -> tuple[Any, Any]:
    """(the ASGI app answering /mcp, its session manager, which must run while the server does)."""
    from .openai_api import served_kbs

    library = ServedLibrary(site, await served_kbs(site.datasette))
    server = build_server(library)
    await add_source_resources(server, library)
    # Stateless: every tool call stands alone, so no session outlives its request. DNS-rebinding
    # protection (the Host header) is the SDK's own on a loopback host.
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=True,
        json_response=True,
        host=host,
        max_request_body_size=MAX_BODY_BYTES,
    )
    return app, server.session_manager
