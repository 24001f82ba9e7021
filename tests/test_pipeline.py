"""The ingest stages as kb/pipeline lays them out: one path for a file and a fetched source, and a
prepare stage a worker process can run with no KB, whose record the driver's writer stores."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from kb import KB, Fetched, Ingester, Limits
from kb.discover import Candidate
from kb.pipeline.plan import plan_fetched, plan_file
from kb.pipeline.prepare import PrepareSettings, prepare
from kb.pipeline.read import read
from kb.pipeline.write import write
from kb.plugins import get_embedder
from kb.types import SourceReport

GUIDE = Path(__file__).parent.parent / "corpora" / "hydrology" / "field-guide-measuring-rainfall.md"


def chunk_rows(db: Path) -> list[tuple]:
    with KB.open(db) as kb:
        return kb.conn.execute(
            "SELECT chunks.ordinal, chunks.text, chunks.heading, sources.title, sources.kind, sources.content_hash "
            "FROM chunks JOIN sources ON sources.id = chunks.source_id ORDER BY chunks.ordinal"
        ).fetchall()


def test_a_file_and_a_fetched_copy_of_it_go_one_path(tmp_path, hash_embedder):
    with KB.open(tmp_path / "file.db", create=True) as kb:
        from_file = Ingester(kb, embedder=hash_embedder).run([str(GUIDE)]).reports[0]
    with KB.open(tmp_path / "fetched.db", create=True) as kb:
        fetched = Fetched(uri="https://example.org/course/guide.md", name=GUIDE.name, data=GUIDE.read_bytes())
        from_url = Ingester(kb, embedder=hash_embedder).ingest_one(fetched)
    assert (from_file.status, from_url.status) == ("ok", "ok")
    assert from_file.chunks == from_url.chunks > 1
    assert chunk_rows(tmp_path / "file.db") == chunk_rows(tmp_path / "fetched.db")


def test_prepare_runs_in_a_worker_process_and_the_driver_writes_its_record(tmp_path, hash_embedder):
    """What a Ray executor would do: plan and read on the driver, prepare in another process (its
    inputs and output pickled across), write on the driver. The KB ends as the Ingester leaves it."""
    planned = plan_file(Candidate(GUIDE, explicit=True, size=GUIDE.stat().st_size))
    content = read(planned, Limits())
    settings = PrepareSettings(get_embedder(hash_embedder))
    spawn = multiprocessing.get_context("spawn")  # nothing inherited from this process but what is pickled
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        prepared = pool.submit(prepare, planned, content, settings).result(timeout=300)
    assert prepared.status == "ok" and len(prepared.chunks) == len(prepared.vectors) > 1
    pickle.dumps(prepared)  # what came back can go on to another process too

    with KB.open(tmp_path / "driver.db", create=True) as kb:
        ingester = Ingester(kb, embedder=hash_embedder)  # binds the model and chunking as a run does
        report = SourceReport(uri=planned.uri, status="error")
        write(kb, prepared, content, report, settings_key=ingester.settings_key)
    assert (report.status, report.chunks) == ("ok", len(prepared.chunks))
    with KB.open(tmp_path / "ingester.db", create=True) as kb:
        Ingester(kb, embedder=hash_embedder).run([str(GUIDE)])
    assert chunk_rows(tmp_path / "driver.db") == chunk_rows(tmp_path / "ingester.db")


def test_a_fetched_source_plans_without_a_path(hash_embedder):
    planned = plan_fetched(Fetched(uri="https://example.org/t/notes", name="notes.md", data=b"# Rain\n\nIt falls."))
    assert planned.path is None and not planned.local and planned.connector.kind == "markdown"
    assert read(planned, Limits()).mtime is None
