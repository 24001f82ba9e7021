"""kb as an MCP server (official `mcp` SDK): tools search, ask, get_passage, list_sources; sources as resources.

The same tools serve `kb mcp KB.db…` over stdio (a desktop agent starts it) and `kb serve`'s
streamable HTTP at /mcp; what differs is the `Library` behind them: here, kb's engine in this
process; in kb serve, the ask page's worker and queue (datasette_plugins/kb_plugin/mcp_http.py).
Tool results carry the citation fields of the /v1 API. A bad argument is a tool error (the SDK's
ToolError), never a crash of the server.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from .chat import MAX_K, reply, where_fields
from .errors import KBError

MAX_TOOL_QUERY_CHARS = 2000
"""A search query's limit here: kb ask's question limit (a passage query is no longer)."""


class Library(Protocol):
    """What the tools ask of the KBs served; every method may raise KBError with one sentence."""

    names: list[str]

    async def search(self, name: str, query: str, k: int) -> list[dict[str, Any]]: ...

    async def ask(self, name: str, question: str) -> dict[str, Any]: ...

    async def passage(self, name: str, chunk_id: int) -> dict[str, Any]: ...

    async def sources(self, name: str) -> list[dict[str, Any]]: ...

    async def source_text(self, name: str, source_id: int) -> str: ...


def hit_record(hit: Any, url: str | None) -> dict[str, Any]:
    """A search hit with the citation fields (and its rank and text)."""
    return {"rank": hit.rank, **where_fields(hit, url), "text": hit.text, "score": round(hit.score, 6)}


def answer_record(answer: Any, link: Any) -> dict[str, Any]:
    """The ask tool's result: the answer with its [n] markers, the citations, whether kb abstained."""
    made = reply(answer, link)
    return {"answer": made.text, "citations": made.citations, "abstained": made.abstained, "question": answer.question}


def build_server(library: Library) -> Any:
    """The MCP server over `library`, one resource per source."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    names = library.names
    several = len(names) > 1
    server = MCPServer(
        "kb",
        instructions=(
            "Course knowledge bases. `ask` answers a question from the course with citations [n] (or abstains "
            "when the course does not say); `search` lists passages; `get_passage` reads one by chunk_id."
        ),
        log_level="WARNING",
    )

    def pick(name: str | None) -> str:
        if name is None:
            if several:
                raise ToolError("course is required: one of " + ", ".join(names) + ".")
            return names[0]
        if name not in names:
            raise ToolError(f"There is no course {name!r} here; courses: " + ", ".join(names) + ".")
        return name

    async def guarded(call: Any) -> Any:
        try:
            return await call
        except KBError as exc:  # the user's mistake or the KB's word: one sentence, as a tool error
            raise ToolError(str(exc)) from None

    @server.tool()
    async def search(query: str, k: int = 5, course: str | None = None) -> list[dict[str, Any]]:
        """Passages of the course nearest to `query` (hybrid keyword + vector search), best first."""
        if not query.strip():
            raise ToolError("The query is empty.")
        if len(query) > MAX_TOOL_QUERY_CHARS:
            raise ToolError(
                f"The query is too long ({len(query):,} characters; the limit is {MAX_TOOL_QUERY_CHARS:,})."
            )
        if not 1 <= k <= MAX_K:
            raise ToolError(f"k must be a whole number from 1 to {MAX_K}.")
        return await guarded(library.search(pick(course), query, k))

    @server.tool()
    async def ask(question: str, course: str | None = None) -> dict[str, Any]:
        """Answer a question from the course with citations, or abstain when the course does not answer it."""
        return await guarded(library.ask(pick(course), question))

    @server.tool()
    async def get_passage(chunk_id: int, course: str | None = None) -> dict[str, Any]:
        """One passage by its chunk_id (from search or a citation), with where it is in its source."""
        return await guarded(library.passage(pick(course), chunk_id))

    @server.tool()
    async def list_sources(course: str | None = None) -> list[dict[str, Any]]:
        """The course's sources: id, title, kind, passage count and the resource URI of each."""
        return await guarded(library.sources(pick(course)))

    return server


async def add_source_resources(server: Any, library: Library) -> None:
    """Each source as a resource, `kb://COURSE/sources/ID`, read on demand."""
    from mcp.server.mcpserver.resources import FunctionResource

    for name in library.names:
        for source in await library.sources(name):

            async def read(name: str = name, source_id: int = source["source_id"]) -> str:
                return await library.source_text(name, source_id)

            server.add_resource(
                FunctionResource(
                    uri=source["resource"],
                    name=f"{name}-source-{source['source_id']}",
                    title=source["title"],
                    description=f"{source['kind']} source of {name}: {source['passages']} passages",
                    mime_type="text/plain",
                    fn=read,
                )
            )


def resource_uri(name: str, source_id: int) -> str:
    return f"kb://{name}/sources/{source_id}"


class LocalLibrary:
    """kb's engine in this process (`kb mcp`): one thread does everything, the model loads on the first ask."""

    def __init__(self, paths: list[Path], llm: dict[str, Any], settings: Any = None):
        """`llm`: load_llm()'s options; `settings`: the AskSettings answers use."""
        from .answer import AskSettings
        from .passages import Catalog

        self.paths = {p.stem: str(p) for p in paths}
        if len(self.paths) != len(paths):
            raise KBError("Two of these files have the same name; serve them from differently named files.")
        self.names = list(self.paths)
        self.llm = llm
        self.settings = settings or AskSettings()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kb-mcp")
        self._catalog = Catalog()
        self._engines: dict[str, Any] = {}
        self._model: Any = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _engine(self, name: str) -> Any:
        from .answer import AnswerEngine, load_llm

        if name not in self._engines:

            def model() -> Any:
                if self._model is None:
                    self._model = load_llm(**self.llm)
                return self._model

            from .search import Searcher

            kb = self._catalog.kb(self.paths[name])
            # A long-lived process: the vectors stay in memory (kb.search.Searcher, resident).
            self._engines[name] = AnswerEngine(kb, model, self.settings, searcher=Searcher(kb, resident=True))
        return self._engines[name]

    @staticmethod
    def _link(hit: Any) -> str | None:
        return hit.link

    async def search(self, name: str, query: str, k: int) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            from .injection import clean_answer_record

            hits = self._engine(name).searcher.search(query, k)
            return clean_answer_record([hit_record(h, h.link) for h in hits])

        return await self._run(work)

    async def ask(self, name: str, question: str) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            return answer_record(self._engine(name).ask(question, log=False), self._link)

        return await self._run(work)

    async def passage(self, name: str, chunk_id: int) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from .injection import clean_answer_record
            from .passages import passage

            found = passage(self._catalog.kb(self.paths[name]), chunk_id)
            return clean_answer_record(found.record(found.link))

        return await self._run(work)

    async def sources(self, name: str) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            from .passages import sources

            listed = sources(self._catalog.kb(self.paths[name]))
            return [{**s, "resource": resource_uri(name, s["source_id"])} for s in listed]

        return await self._run(work)

    async def source_text(self, name: str, source_id: int) -> str:
        def work() -> str:
            from .injection import clean_answer
            from .passages import source_text

            return clean_answer(source_text(self._catalog.kb(self.paths[name]), source_id))

        return await self._run(work)


def run_stdio(paths: list[Path], llm: dict[str, Any], settings: Any = None) -> None:
    """Serve `paths` over stdio until the client closes it."""
    library = LocalLibrary(paths, llm, settings)

    async def main() -> None:
        server = build_server(library)
        await add_source_resources(server, library)
        await server.run_stdio_async()

    asyncio.run(main())
