"""Ingest as stages, in the order a source goes through them (kb/ingest.py drives them).

1. discover  kb/discover.py   targets -> Candidates (files, folders walked, URLs); a URL's fetcher
                              yields Fetched items
2. plan      plan.py          a Candidate or a Fetched item -> one Planned record: its URI, connector,
                              where its content is. Files and fetched sources are one path from here.
3. read      read.py          Planned -> Content: its bytes (or a streamed hash), within the size limit
             (the driver)     unchanged, renamed and duplicate sources end here, by hash (kb/sync.py)
4. extract   read.py          Content -> Document, through the connector, within the time limit
5. chunk     chunk.py         Document -> Prepared: cleaned title, chunks, their injection flags
6. embed     embed.py         Prepared's chunks -> vectors, in batches
7. write     write.py         one transaction per source; only then does the report say so

The seam for a parallel executor (Ray) is `prepare.prepare()`: stages 4-6 take a Planned record, its
Content and a PrepareSettings, and return a Prepared record. They touch no KB, hold no connection and
write nothing, so a worker can run them; the driver keeps what reads or writes the KB: planning
against the stored rows, the decisions by hash, and the single writer (stage 7). On Ray
(ray_executor.py, ray_stages.py) the stages run as a Ray Data dataset: `chunked()` (4-5) in tasks or
in the transcriber actors, and `embed()` (6) in the embedder actors.
"""


def silent(stage: str, fraction: float | None = None) -> None:
    """progress(stage, fraction) for a run nobody watches (a worker's, a library caller's)."""
