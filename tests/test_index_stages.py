"""The index run's stages, each on its own (indexer.plan, indexer.stages), and the runner that
assembles and times them (indexer.runner): real files, a real catalog, the hashing-tiny encoder."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from radsearch.encoders import create_model
from radsearch.indexer import IndexSummary, Progress, index_folder
from radsearch.indexer.discover import discover
from radsearch.indexer.grouping import Grouping, file_study, folder_study
from radsearch.indexer.plan import plan_run
from radsearch.indexer.runner import STAGE_ITEMS, StageClock, finish_run, run_batches
from radsearch.indexer.stages import (
    DICOMDIR_REASON,
    aggregate_run,
    attach_reports,
    embed_batch,
    read_files,
    read_tasks,
    record_unread,
    sync_run,
    write_batch,
)
from radsearch.indexer.worker import ReadOutcome, ReadTask
from radsearch.reading import read_file, stack_frames
from radsearch.reports import load_reports_csv
from radsearch.storage.store import Store

TINY = "hashing-tiny"


@pytest.fixture(scope="module")
def encoder():
    return create_model(TINY)


@pytest.fixture
def folder(tmp_path: Path, shared_data: Path) -> Path:
    """Two DICOM files, a two-frame file, a bad file, a DICOMDIR, a PNG/JPEG pair with a CSV,
    a report file and a file that is neither."""
    root = tmp_path / "studies"
    (root / "dicom").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "test-SR.dcm"):
        shutil.copy(get_testdata_file(name), root / "dicom" / name)
    shutil.copy(get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    (root / "dicom" / "empty.dcm").write_bytes(b"")
    (root / "notes.bval").write_text("0 1000\n")
    images = sorted((shared_data / "medpix2" / "images").iterdir())[:2]
    (root / "case").mkdir()
    for image in images:
        shutil.copy(image, root / "case" / image.name)
    (root / "case" / "report.txt").write_text("FINDINGS: The heart is normal in size.\n")
    return root


def _store(index: Path, encoder) -> Store:
    return Store.open_for_writing(index, encoder.describe())


# --- discover: the plan -------------------------------------------------------------------------

def test_plan_sorts_found_files_into_work_and_counts_the_rest(folder, tmp_path, encoder):
    found = discover(folder)
    summary = IndexSummary(index="test")
    with _store(tmp_path / "index", encoder) as store:
        plan = plan_run(store.conn, found, folder, None, summary, salt=store.salt)

    names = lambda items: sorted(Path(item.path).name for item in items)  # noqa: E731
    assert names(item for item, _ in plan.to_read) == sorted(
        ["CT_small.dcm", "MR_small.dcm", "test-SR.dcm", *(p.name for p in (folder / "case").iterdir()
                                                          if p.suffix != ".txt")])
    assert all(previous is None for _, previous in plan.to_read)  # nothing indexed before
    assert names(plan.bad) == ["empty.dcm"]
    assert names(plan.dicomdirs) == ["DICOMDIR"]
    assert names(plan.reports) == ["report.txt"]
    assert summary.skipped_kinds == {".bval": 1}
    assert plan.gone == [] and summary.unchanged == 0
    # the two images share a folder with a report.txt: one study
    assert set(plan.grouping.keys.values()) == {folder_study(str(folder / "case"))}


def test_plan_after_a_run_reads_only_what_changed_and_lists_what_is_gone(folder, tmp_path, encoder):
    index = tmp_path / "index"
    index_folder(folder, index=index, model=TINY, workers=0)
    (folder / "dicom" / "MR_small.dcm").unlink()
    ct = folder / "dicom" / "CT_small.dcm"
    os.utime(ct, ns=(ct.stat().st_atime_ns, ct.stat().st_mtime_ns + 10**9))  # touched, same content

    summary = IndexSummary(index=str(index))
    with _store(index, encoder) as store:
        plan = plan_run(store.conn, discover(folder), folder, None, summary, salt=store.salt)

    assert [Path(item.path).name for item, _ in plan.to_read] == ["CT_small.dcm"]
    (_, previous), = plan.to_read
    assert previous is not None  # its hash is known: the read stage can tell it is unchanged
    assert [Path(path).name for path in plan.gone] == ["MR_small.dcm"]
    assert not plan.bad and not plan.dicomdirs and not plan.reports  # on record, unchanged
    assert summary.unchanged > 0


# --- write: files never read --------------------------------------------------------------------

def test_record_unread_puts_bad_files_and_dicomdirs_on_record(folder, tmp_path, encoder):
    summary = IndexSummary(index="test")
    with _store(tmp_path / "index", encoder) as store:
        plan = plan_run(store.conn, discover(folder), folder, None, summary, salt=store.salt)
        assert record_unread(store.conn, plan, summary) == 2
        rows = {Path(row["path"]).name: (row["status"], row["reason"])
                for row in store.conn.execute("SELECT path, status, reason FROM files")}

    assert rows["DICOMDIR"] == ("skipped", DICOMDIR_REASON)
    assert rows["empty.dcm"][0] == "failed" and "empty" in rows["empty.dcm"][1]
    assert (summary.failed, summary.skipped) == (1, 1)
    assert [Path(path).name for path, _ in summary.skips] == ["DICOMDIR"]


# --- read ---------------------------------------------------------------------------------------

def _task(path: Path, encoder, previous: str | None = None) -> ReadTask:
    return ReadTask(str(path), previous, encoder.image_size, "salt")


def test_read_files_gives_one_outcome_per_task_in_workers_or_in_process(folder, encoder):
    paths = [folder / "dicom" / name for name in ("CT_small.dcm", "MR_small.dcm", "empty.dcm")]
    tasks = [_task(path, encoder) for path in paths]

    in_process = {o.path: o for o in read_files(tasks, workers=0)}
    in_workers = {o.path: o for o in read_files(tasks, workers=1)}

    assert set(in_process) == set(in_workers) == {str(path) for path in paths}
    for path, outcome in in_process.items():
        assert (outcome.status, outcome.sha256) == (in_workers[path].status, in_workers[path].sha256)
    assert in_process[str(paths[0])].status == "read"
    assert in_process[str(paths[2])].status == "failed"
    # the stored hash given: the content is known, nothing is decoded
    again, = read_files([_task(paths[0], encoder, in_process[str(paths[0])].sha256)], workers=0)
    assert again.status == "unchanged" and again.result is None


def test_closing_the_reads_stops_the_worker_processes(folder, encoder):
    tasks = [_task(folder / "dicom" / "CT_small.dcm", encoder)] * 20
    reads = read_files(tasks, workers=1)
    next(reads)
    assert multiprocessing.active_children()
    reads.close()
    assert multiprocessing.active_children() == []


def test_read_tasks_follow_the_plan_and_the_index_rules(folder, tmp_path, encoder):
    summary = IndexSummary(index="test")
    with _store(tmp_path / "index", encoder) as store:
        plan = plan_run(store.conn, discover(folder), folder, None, summary, salt=store.salt)
        tasks = read_tasks(plan, store, encoder)
        salt = store.salt
    assert [task.path for task in tasks] == [item.path for item, _ in plan.to_read]
    assert {(task.salt, task.image_size, task.keep_phi) for task in tasks} == {
        (salt, encoder.image_size, False)}


# --- embed --------------------------------------------------------------------------------------

def _outcomes(folder: Path, encoder) -> list[ReadOutcome]:
    names = ("CT_small.dcm", "empty.dcm", "test-SR.dcm", "MR_small.dcm")
    return list(read_files([_task(folder / "dicom" / name, encoder) for name in names], workers=0))


def test_embed_batch_embeds_each_frame_in_batches_and_the_report_text(folder, encoder):
    outcomes = _outcomes(folder, encoder)
    embedded = embed_batch(encoder, outcomes, batch_size=1)

    assert [item.outcome for item in embedded] == outcomes  # every outcome, in order
    ct, empty, sr, mr = embedded
    for item in (ct, mr):
        expected = encoder.encode_images(stack_frames([f.pixels for f in item.outcome.result.frames]))
        np.testing.assert_array_equal(item.vectors, expected)
    assert empty.vectors.shape == (0, encoder.dim) and empty.report is None
    assert sr.vectors.shape == (0, encoder.dim)  # a Structured Report has no frames...
    sentences, vectors = sr.report  # ...but its text is embedded, one vector per sentence
    assert sentences and vectors.shape == (len(sentences), encoder.dim)
    np.testing.assert_array_equal(vectors, encoder.encode_texts([s.text for s in sentences]))
    # batch size changes how frames are grouped, not their vectors (beyond float rounding)
    whole = embed_batch(encoder, outcomes, batch_size=32)
    for one, other in zip(embedded, whole):
        np.testing.assert_allclose(one.vectors, other.vectors, atol=1e-6)


# --- write --------------------------------------------------------------------------------------

def test_write_batch_writes_files_images_reports_and_counts(folder, tmp_path, encoder):
    outcomes = _outcomes(folder, encoder)
    found = {item.path: item for item in discover(folder)}
    summary = IndexSummary(index="test")
    with _store(tmp_path / "index", encoder) as store:
        write_batch(store.conn, embed_batch(encoder, outcomes, batch_size=32), found=found,
                    grouping=Grouping(), summary=summary)
        statuses = dict(store.conn.execute("SELECT path, status FROM files"))
        images = store.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        vectors = store.conn.execute(
            "SELECT COUNT(*) FROM vectors WHERE collection = 'images'").fetchone()[0]
        reports = [row[0] for row in store.conn.execute("SELECT source FROM reports")]

    assert statuses == {str(folder / "dicom" / name): status for name, status in (
        ("CT_small.dcm", "indexed"), ("empty.dcm", "failed"), ("test-SR.dcm", "indexed"),
        ("MR_small.dcm", "indexed"))}
    assert images == vectors == summary.images == 2
    assert reports == ["sr"] and summary.reports == 1
    assert (summary.indexed, summary.failed) == (3, 1)


def test_a_batch_that_fails_to_write_leaves_nothing_of_it(folder, tmp_path, encoder):
    outcomes = _outcomes(folder, encoder)
    embedded = embed_batch(encoder, outcomes, batch_size=32)
    found = {item.path: item for item in discover(folder) if Path(item.path).name != "MR_small.dcm"}
    with _store(tmp_path / "index", encoder) as store:
        with pytest.raises(KeyError):  # the last file is unknown: the batch fails part-way
            write_batch(store.conn, embedded, found=found, grouping=Grouping(),
                        summary=IndexSummary(index="test"))
        assert store.conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
        assert store.conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == 0


def test_grouping_places_a_csv_row_over_the_file_metadata(folder, tmp_path, encoder):
    image = sorted((folder / "case").glob("*.jpg"))[0]
    csv_path = folder / "reports.csv"
    csv_path.write_text(f"image_path,text,modality\ncase/{image.name},A finding.,MR\n")
    csv_reports = load_reports_csv(csv_path)
    with _store(tmp_path / "index", encoder) as store:
        plan = plan_run(store.conn, discover(folder), folder, csv_reports,
                        IndexSummary(index="test"), salt=store.salt)
    result = read_file(image, image_size=encoder.image_size, salt="salt")
    found = {item.path: item for item, _ in plan.to_read}[str(image)]

    study, series, metadata = plan.grouping.place(found, result)

    assert study == series == file_study(str(image))  # a CSV row of its own: a study of its own
    assert metadata["modality"] == "MR" and result.metadata.get("modality") != "MR"
    dicom = read_file(folder / "dicom" / "CT_small.dcm", image_size=encoder.image_size, salt="s")
    assert plan.grouping.place(found, dicom)[:2] == (dicom.study_uid_hash, dicom.series_uid_hash)


# --- reports, aggregate, sync -------------------------------------------------------------------

def test_reports_aggregate_and_sync_after_the_images(folder, tmp_path, encoder):
    summary = IndexSummary(index="test")
    found = discover(folder)
    with _store(tmp_path / "index", encoder) as store:
        plan = plan_run(store.conn, found, folder, None, summary, salt=store.salt)
        reads = read_files(read_tasks(plan, store, encoder), workers=0)
        write_batch(store.conn, embed_batch(encoder, list(reads), 32),
                    found={item.path: item for item, _ in plan.to_read}, grouping=plan.grouping,
                    summary=summary)
        assert attach_reports(store.conn, encoder, plan, None, salt=store.salt, found=found,
                              root=folder, summary=summary) == 1
        case_reports = store.conn.execute(
            "SELECT COUNT(*) FROM reports WHERE source = 'sidecar'").fetchone()[0]
        series = store.conn.execute("SELECT COUNT(*) FROM series").fetchone()[0]
        studies = store.conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
        assert aggregate_run(store.conn, encoder, plan, dim=store.dim, prune=False,
                             summary=summary) == series + studies
        assert store.conn.execute("SELECT COUNT(*) FROM studies WHERE dirty = 1").fetchone()[0] == 0
        points = store.conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        assert sync_run(store, summary) == points == summary.sent
        assert sync_run(store, summary) == 0  # in step: nothing more to send
    assert case_reports == 1 and summary.reports == 2  # the folder's report.txt and the SR


def test_aggregate_prunes_or_counts_what_is_gone(folder, tmp_path, encoder):
    index = tmp_path / "index"
    index_folder(folder, index=index, model=TINY, workers=0)
    (folder / "dicom" / "MR_small.dcm").unlink()
    for prune in (False, True):
        summary = IndexSummary(index=str(index))
        with _store(index, encoder) as store:
            plan = plan_run(store.conn, discover(folder), folder, None, summary, salt=store.salt)
            aggregate_run(store.conn, encoder, plan, dim=store.dim, prune=prune, summary=summary)
            left = store.conn.execute("SELECT COUNT(*) FROM files WHERE path LIKE '%MR_small%'")
            assert left.fetchone()[0] == (0 if prune else 1)
        assert (summary.removed, summary.missing) == ((1, 0) if prune else (0, 1))


# --- the runner ---------------------------------------------------------------------------------

class FakeTime:
    """A clock that moves only when told: stage times are exact, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_stage_clock_sums_each_stage_and_orders_them_as_the_pipeline():
    time = FakeTime()
    clock = StageClock(now=time)
    with clock.stage("write") as record:
        time.now += 0.5
        record.items += 3
    with clock.stage("discover") as record:
        time.now += 2.0
        record.items += 10
    with clock.stage("write") as record:
        time.now += 0.25
        record.items += 1

    def slow_items():
        for item in ("a", "b"):
            time.now += 1.5
            yield item

    assert list(clock.timed("read", slow_items())) == ["a", "b"]
    assert clock.as_dict() == {"discover": {"seconds": 2.0, "items": 10},
                               "read": {"seconds": 3.0, "items": 2},
                               "write": {"seconds": 0.75, "items": 4}}
    assert set(clock.as_dict()) <= set(STAGE_ITEMS)


def test_stage_clock_counts_a_stage_that_raised():
    time = FakeTime()
    clock = StageClock(now=time)
    with pytest.raises(RuntimeError), clock.stage("sync"):
        time.now += 4.0
        raise RuntimeError("back end down")
    assert clock.as_dict() == {"sync": {"seconds": 4.0, "items": 0}}


def _read(path: str, frames: int) -> ReadOutcome:
    class Result:  # only what the runner looks at: the frame count
        pass

    result = Result()
    result.frames = [None] * frames
    return ReadOutcome(path, "read", result=result)


def _recording_stages(time: FakeTime):
    embedded: list[list[str]] = []
    written: list[list[str]] = []

    def embed(outcomes):
        time.now += 1.0
        embedded.append([o.path for o in outcomes])
        return [o.path for o in outcomes]

    def write(batch):
        time.now += 0.5
        written.append(batch)

    return embed, write, embedded, written


def test_run_batches_batches_by_frames_and_times_each_stage():
    time = FakeTime()
    clock = StageClock(now=time)
    embed, write, embedded, written = _recording_stages(time)
    progress: list[Progress] = []
    reads = [_read("a", 3), _read("b", 0), _read("c", 2), _read("d", 1), _read("e", 1)]

    run_batches(reads, embed=embed, write=write, batch_size=4, clock=clock, total=5,
                on_progress=progress.append)

    assert embedded == written == [["a", "b", "c"], ["d", "e"]]  # 5 frames >= 4, then the rest
    assert clock.as_dict() == {"read": {"seconds": 0.0, "items": 5},
                               "embed": {"seconds": 2.0, "items": 7},
                               "write": {"seconds": 1.0, "items": 5}}
    assert progress[-1] == Progress(5, 5, 7) and [p.done for p in progress] == [1, 2, 3, 4, 5]


def test_run_batches_bounds_a_batch_by_files_too():
    time = FakeTime()
    embed, write, embedded, _ = _recording_stages(time)
    run_batches([_read(str(n), 0) for n in range(10)], embed=embed, write=write, batch_size=2,
                clock=StageClock(now=time))
    assert [len(batch) for batch in embedded] == [8, 2]


class ServerGone(Exception):
    pass


def _reads_then(error: Exception):
    yield _read("a", 1)
    yield _read("b", 1)
    raise error


def test_run_batches_writes_what_was_read_when_told_to_keep_it():
    time = FakeTime()
    embed, write, _, written = _recording_stages(time)
    with pytest.raises(ServerGone):
        run_batches(_reads_then(ServerGone()), embed=embed, write=write, batch_size=32,
                    clock=StageClock(now=time), keep_read_on=(ServerGone,))
    assert written == [["a", "b"]]


def test_run_batches_writes_nothing_more_after_another_error():
    time = FakeTime()
    embed, write, _, written = _recording_stages(time)
    with pytest.raises(ValueError):
        run_batches(_reads_then(ValueError("bug")), embed=embed, write=write, batch_size=32,
                    clock=StageClock(now=time), keep_read_on=(ServerGone,))
    assert written == []


def test_finish_run_times_aggregate_and_sync(folder, tmp_path, encoder):
    index = tmp_path / "index"
    index_folder(folder, index=index, model=TINY, workers=0)
    (folder / "dicom" / "MR_small.dcm").unlink()
    clock = StageClock()
    summary = IndexSummary(index=str(index))
    with _store(index, encoder) as store:
        from radsearch import runs

        plan = plan_run(store.conn, discover(folder), folder, None, summary, salt=store.salt)
        run_id = runs.record_start(store.conn, str(folder), store.spec.describe(), 0.0)
        finish_run(store, encoder, plan, prune=True, summary=summary, run_id=run_id, started=0.0,
                   clock=clock)
    assert list(clock.as_dict()) == ["aggregate", "sync"]
    assert clock.as_dict()["sync"]["items"] == summary.sent + summary.deleted > 0
    assert summary.removed == 1


# --- the assembled run --------------------------------------------------------------------------

def test_index_folder_reports_each_stage_with_its_items(folder, tmp_path):
    summary = index_folder(folder, index=tmp_path / "index", model=TINY, workers=1)

    stages = summary.stages
    assert list(stages) == ["model", "discover", "read", "embed", "write", "reports", "aggregate",
                            "sync"]
    assert stages["discover"]["items"] == len(discover(folder))
    assert stages["read"]["items"] == summary.indexed == 5  # 3 DICOM files, 2 JPEG images
    assert stages["embed"]["items"] == summary.images == 4  # the SR has no frames
    assert stages["write"]["items"] == 5 + 2  # and the empty file and the DICOMDIR, never read
    assert stages["reports"]["items"] == 1
    assert stages["sync"]["items"] == summary.sent
    assert all(times["seconds"] >= 0 for times in stages.values())
    as_json = json.loads(json.dumps(summary.to_dict()))
    assert as_json["stages"] == stages
    assert summary.stage_line().startswith("model ") and ", embed " in summary.stage_line()

    again = index_folder(folder, index=tmp_path / "index", model=TINY, workers=0)
    assert again.stages["read"]["items"] == again.stages["embed"]["items"] == 0


def test_index_json_prints_the_stage_times(folder, tmp_path):
    from typer.testing import CliRunner

    from radsearch.cli import app

    result = CliRunner().invoke(app, ["index", str(folder), "--index", str(tmp_path / "index"),
                                      "--model", TINY, "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    stages = json.loads(result.stdout)["stages"]
    assert stages["embed"]["items"] == 4 and set(stages) >= {"discover", "read", "write", "sync"}


def test_index_prints_the_stage_times_in_one_line(folder, tmp_path):
    from typer.testing import CliRunner

    from radsearch.cli import app

    result = CliRunner().invoke(app, ["index", str(folder), "--index", str(tmp_path / "index"),
                                      "--model", TINY, "--workers", "0"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("stages: ")]
    assert len(lines) == 1 and lines[0].startswith("stages: model ") and " s, read " in lines[0]
    assert result.stdout.splitlines()[0].startswith("indexed 5, unchanged 0, failed 1, skipped 1")
