"""What a KB says about itself in Datasette: table and column descriptions, and stored search queries."""

from __future__ import annotations

from typing import Any

from markupsafe import escape

from kb import Fusion

from .status import Status

TABLES: dict[str, dict[str, Any]] = {
    "kb_meta": {
        "description": "What this KB file is: schema version, embedding model and dimension, chunking "
        "settings and vector index. kb reads it to open the file with the model it was built with.",
    },
    "sources": {
        "description": "One row per ingested source (file, web page or recording), with its status.",
        "label_column": "title",
        "facets": ["kind", "status"],
        "columns": {
            "uri": "Where the source came from: a file:// path, a path below the course folder (in a learner "
            "copy), or the web address. Click it to read the source.",
            "kind": "The connector that read it (pdf, slides, markdown, html, media, ...).",
            "title": "The title found in the source.",
            "content_hash": "SHA-256 of the content: an unchanged source is skipped on the next ingest, and the "
            "stored original (source_files) has this key. A link when the original is stored.",
            "size": "Size in bytes.",
            "mtime": "The file's modification time (seconds since 1970) when it was read.",
            "fetched_at": "When a web source was fetched.",
            "ingested_at": "When kb last wrote this source.",
            "status": "ok, empty (nothing to index) or error.",
            "error": "Why the source could not be read, when status is error.",
            "metadata": "JSON: author, duration, licence and other details the connector found.",
        },
    },
    "chunks": {
        "description": "The passages kb searches and cites, each with where it is in its source. "
        "Click a page, slide or time to open the source there, or the source's title to read it.",
        "fts_table": "chunks_fts",
        "fts_pk": "id",
        "columns": {
            "source_id": "The source this passage comes from (click to read the passage in it).",
            "ordinal": "Position of the passage within its source.",
            "text": "The passage.",
            "page": "PDF page (1-based).",
            "slide": "Slide number (1-based).",
            "start_s": "Start time in a recording (shown as mm:ss).",
            "end_s": "End time in a recording.",
            "heading": 'Heading path, "Part > Section".',
            "anchor": "HTML id of the nearest heading in a web page.",
            "link": "The deep link a citation opens: page, slide, heading anchor or time (in a learner copy, "
            "relative to the copy's folder). Click it to open the source there.",
            "flags": "What the passage holds besides course text: instructions (sentences addressed to an AI, "
            "such as 'ignore previous instructions'), markup (image or link markup). Such passages stay "
            "searchable; answers never carry their images or links.",
        },
    },
    "embeddings": {
        "hidden": True,
        "description": "One vector per chunk: little-endian float32 BLOBs from the model named in kb_meta. "
        "The vector index is rebuilt from these.",
        "columns": {"vector": "The embedding as float32 bytes (4 per dimension)."},
    },
    "chunks_fts": {
        "description": "Full-text index (SQLite FTS5, porter stemming) over chunk text and headings; "
        "the keyword half of kb's search.",
    },
    "answers": {
        "description": "Every kb ask answered from this file: question, answer, cited chunks, model, settings "
        "and timings (kb serve opens files read-only and logs nothing).",
        "columns": {
            "abstained": "1 when the KB did not answer the question.",
            "citations": "JSON list of the cited chunks with their deep links.",
        },
    },
    "questions": {
        "description": "Study questions made from the passages by kb questions, each with its answer, the quote "
        "that backs it and its chunk. Drafts passed every check and wait for the teacher; rejected ones say why. "
        "A learner copy holds only the approved ones, which its self-test page asks.",
        "label_column": "question",
        "facets": ["status", "kind", "reason"],
        "columns": {
            "kind": "short (short answer), mcq (multiple choice, four options), truefalse, or cloze (one blank).",
            "question": "The question; a true/false statement; a cloze's sentence with its blank (_____).",
            "answer": "The answer: the correct option's text, true or false, or the cloze's missing words.",
            "options": "Multiple choice: the four options as a JSON array, in the order shown.",
            "correct": "Multiple choice: the position of the correct option (0 is A).",
            "quote": "The passage's own words that back the answer (checked to occur in the chunk).",
            "chunk_id": "The passage the question was made from (empty once its source was re-ingested).",
            "locator": "Where that passage is: source, page, slide, time or heading.",
            "status": "draft (passed its checks), approved (by the teacher) or rejected.",
            "reason": "Why it was rejected: the check that failed, or teacher.",
            "checks": "JSON: what each check found, with kb's answer engine's own answer and citations.",
        },
    },
    "chunk_sources": {
        "description": "Each chunk with its source's title and deep link, for browsing and faceting.",
    },
    "source_files": {
        "hidden": True,
        "description": "The original files of the sources, one row per distinct SHA-256 (sources.content_hash), "
        "stored by kb export. The plugin serves them at /-/kb/DB/files/SOURCE_ID/NAME.",
    },
    "source_file_blocks": {
        "hidden": True,
        "description": "The bytes of each stored original, in blocks of 256 KiB: concatenate data ORDER BY block.",
    },
    "chunks_vec": {
        "hidden": True,
        "description": "The vector index (sqlite-vec vec0), derived from embeddings; kb reindex rebuilds it.",
    },
    "chunks_vss": {
        "hidden": True,
        "description": "The vector index (sqlite-vss vss0), derived from embeddings; kb reindex rebuilds it.",
    },
}

# What a chunk row shows in the search queries below, and where it is (uri: to link it to its source).
HIT_COLUMNS = (
    "cs.chunk_id, cs.source_title, cs.page, cs.slide, cs.start_s, cs.heading, cs.link, "
    "substr(cs.text, 1, 300) AS text, cs.uri"
)

KEYWORD_SQL = f"""select {HIT_COLUMNS}, round(bm25(chunks_fts, 1.0, 0.5), 3) as bm25
from chunks_fts join chunk_sources cs on cs.chunk_id = chunks_fts.rowid
where chunks_fts match kb_fts_query(:query)
order by bm25(chunks_fts, 1.0, 0.5)
limit 20"""

SEMANTIC_SCAN_SQL = f"""select {HIT_COLUMNS}, round(kb_distance(e.vector, q.vector), 4) as distance
from (select kb_embed(:query) as vector) as q, embeddings e
join chunk_sources cs on cs.chunk_id = e.chunk_id
order by distance
limit 20"""

SEMANTIC_VEC_SQL = f"""select {HIT_COLUMNS}, round(v.distance, 4) as distance
from chunks_vec v join chunk_sources cs on cs.chunk_id = v.rowid
where v.embedding match kb_embed(:query) and k = 20
order by v.distance"""

# The nearest chunks as (chunk_id, distance), by scanning every stored vector or through vec0.
# (Materialized: vec0 refuses a KNN query that SQLite flattens into the window's ORDER BY.)
NEAREST_SCAN = """select e.chunk_id, kb_distance(e.vector, q.vector) as d from embeddings e, q
  order by d, e.chunk_id limit {depth}"""
NEAREST_VEC = """select rowid as chunk_id, distance as d from chunks_vec
  where embedding match kb_embed(:query) and k = {depth} order by distance"""

# Each list's values normalised as kb.fusion does (higher is better): z-score or min-max, 1.0 for a
# list whose values are all equal.
_NORMALISED = {
    "zscore": "case when s.spread > 0 then (l.v - s.mean) / s.spread else 1.0 end",
    "minmax": "case when s.hi > s.lo then (l.v - s.lo) / (s.hi - s.lo) else 1.0 end",
}


def hybrid_sql(nearest: str, fusion: Fusion | None = None) -> str:
    """kb search's fusion in SQL, with the weights and depth the KB records (kb.fusion)."""
    fusion = fusion or Fusion()
    lists = f"""with q as (select kb_embed(:query) as vector),
matched as materialized (
  select rowid as chunk_id, bm25(chunks_fts, 1.0, 0.5) as b
  from chunks_fts where chunks_fts match kb_fts_query(:query)
  order by b limit {fusion.depth}
),
keyword as (
  select chunk_id, -b as v, row_number() over (order by b, chunk_id) as r from matched
),
nearest as materialized (
  {nearest.format(depth=fusion.depth)}
),
semantic as (
  select chunk_id, -d as v, row_number() over (order by d, chunk_id) as r from nearest
),"""
    if fusion.method == "rrf":
        fused = f"""
fused as (
  select chunk_id, sum(w / ({fusion.rrf_k} + r)) as score
  from (select chunk_id, r, {fusion.keyword_weight!r} as w from keyword
        union all select chunk_id, r, {fusion.vector_weight!r} as w from semantic)
  group by chunk_id
)"""
    else:
        normalised = _NORMALISED["zscore" if fusion.method == "adaptive" else fusion.method]
        stats = "avg(v) as mean, sqrt(max(avg(v * v) - avg(v) * avg(v), 0)) as spread, min(v) as lo, max(v) as hi"
        weights = {"kz": repr(fusion.keyword_weight), "sz": repr(fusion.vector_weight)}
        if fusion.method == "adaptive":
            # Each weight times the list's confidence on this query: its top z-score to the power.
            weights = {
                z: f"{w} * coalesce(pow(max(0.0, (select max(z) from {z})), {fusion.confidence!r}), 1.0)"
                for z, w in weights.items()
            }
        # A chunk one list missed scores as that list's worst candidate (0 when the list is empty).
        fused = f"""
kstats as (select {stats} from keyword),
sstats as (select {stats} from semantic),
kz as (select l.chunk_id, {normalised} as z from keyword l, kstats s),
sz as (select l.chunk_id, {normalised} as z from semantic l, sstats s),
everyone as (select chunk_id from keyword union select chunk_id from semantic),
fused as (
  select e.chunk_id,
    {weights["kz"]} * coalesce(kz.z, (select min(z) from kz), 0)
    + {weights["sz"]} * coalesce(sz.z, (select min(z) from sz), 0) as score
  from everyone e left join kz on kz.chunk_id = e.chunk_id left join sz on sz.chunk_id = e.chunk_id
)"""
    return (
        lists
        + fused
        + f"""
select {HIT_COLUMNS}, round(fused.score, 5) as score
from fused join chunk_sources cs on cs.chunk_id = fused.chunk_id
order by fused.score desc, cs.chunk_id
limit 20"""
    )


def database_metadata(name: str, status: Status, ask_url: str, table_url: Any) -> dict[str, Any]:
    """The metadata block of one KB database; `table_url(table)` is the Datasette URL of a table."""
    meta = status.meta
    model = meta.get("embedding_model", "no model yet")
    stored = sum(1 for s in status.sources.values() if s.stored)
    description = (
        f'<p><strong><a href="{escape(ask_url)}">Ask this course a question</a></strong> and get an answer '
        "that cites its sources, or search it.</p>"
        f'<p>Or browse <a href="{escape(table_url("sources"))}">its {status.counts.get("sources", 0):,} sources</a> '
        f"({stored:,} with their original file) and "
        f'<a href="{escape(table_url("chunks"))}">their {status.counts.get("chunks", 0):,} passages</a>.</p>'
        f'<p><a href="{escape(ask_url)}/quiz">Test yourself</a> on the study questions the teacher approved.</p>'
        f'<p class="kb-small">Embedded with {escape(model)}. The stored queries below search it by keyword '
        "(BM25), by meaning (embeddings) or both, as <code>kb search</code> does.</p>"
    )
    tables = {table: dict(info) for table, info in TABLES.items()}
    tables["sqlite_sequence"] = {"hidden": True}
    # sqlite-vec's and sqlite-vss's own tables: Datasette hides FTS5's by itself, not these.
    for shadow in ("info", "chunks", "rowids", "vector_chunks00", "index", "data"):
        tables[f"chunks_vec_{shadow}"] = {"hidden": True}
        tables[f"chunks_vss_{shadow}"] = {"hidden": True}
    return {"databases": {name: {"description_html": description, "tables": tables}}}


def canned_queries(status: Status) -> dict[str, dict[str, Any]]:
    """Stored queries for keyword, semantic and hybrid search of one KB."""
    semantic = SEMANTIC_VEC_SQL if status.vector_extension == "vec" else SEMANTIC_SCAN_SQL
    try:
        fusion = Fusion.from_meta(status.meta)
    except ValueError:
        fusion = Fusion()  # damaged settings: kb search refuses the KB and says why; the tables still browse
    return {
        "keyword_search": {
            "title": "Keyword search (FTS5, BM25)",
            "description": "Passages containing the words of the query, best BM25 score first "
            "(a heading match counts half). Every word is quoted, so FTS5 operators are plain text.",
            "sql": KEYWORD_SQL,
        },
        "semantic_search": {
            "title": "Semantic search (embeddings)",
            "description": "Passages nearest in meaning to the query: the query is embedded with the KB's own "
            "model (kb_embed) and compared by cosine distance to every stored vector"
            + (" through the sqlite-vec index." if status.vector_extension == "vec" else " (kb_distance)."),
            "sql": semantic,
        },
        "hybrid_search": {
            "title": "Hybrid search (BM25 + embeddings, as kb search)",
            "description": f"The {fusion.depth} best passages by keyword and the {fusion.depth} nearest by meaning, "
            + f"fused by {fusion.describe()}, as this KB records: kb search's ranking, in SQL.",
            "sql": hybrid_sql(NEAREST_VEC if status.vector_extension == "vec" else NEAREST_SCAN, fusion),
        },
    }
