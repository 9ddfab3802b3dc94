"""Progress of loads and writes: callbacks, bars, and silence when nobody is watching."""

from typing import Any

import bson
import polars as pl
import pytest

from loom_frames import Persistable, declare_persist_db
from loom_frames import progress as progress_module
from loom_frames.progress import Reporter


@pytest.fixture
def Reading(db_name: str) -> Any:
    @declare_persist_db(db_name=db_name, collection_name="readings")
    class Reading(Persistable):
        sensor: str
        value: float

    return Reading


@pytest.fixture
def watched(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a notebook or a terminal, with bars shown at once (no 1 s delay)."""
    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    monkeypatch.setattr(progress_module, "AUTO_DELAY", 0.0)


def frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"sensor": [f"s{i % 3}" for i in range(n)],
                         "value": [i / 2 for i in range(n)]})


# ---------------------------------------------------------------- the reporter
def test_a_callback_gets_the_running_total_after_each_batch() -> None:
    seen: list[tuple[int, int | None]] = []
    with Reporter(lambda done, total: seen.append((done, total)), "x", None, "B") as r:
        for amount in (5, 7, 1):
            r.update(amount)
    assert seen == [(5, None), (12, None), (13, None)]


@pytest.mark.parametrize("bad", ["yes", 1, None, "Auto"])
def test_bad_progress_values_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="progress must be 'auto', True, False or a callable"):
        Reporter(bad, "x", None, "rows")


def test_auto_shows_nothing_when_nobody_watches(capsys: pytest.CaptureFixture[str]) -> None:
    assert not progress_module.interactive()  # pytest captures stderr: not a terminal
    with Reporter("auto", "quiet", 10, "rows") as r:
        for _ in range(10):
            r.update(1)
    assert capsys.readouterr().err == ""


def test_auto_skips_work_done_in_one_batch(
    watched: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with Reporter("auto", "one batch", 10, "rows") as r:
        r.update(10)
    with Reporter("auto", "one unknown batch", None, "B") as r:
        r.update(4096)
    assert capsys.readouterr().err == ""
    with Reporter("auto", "two batches", None, "B") as r:
        r.update(4096)
        r.update(4096)
    err = capsys.readouterr().err
    assert "two batches" in err and "8.00kB" in err  # bytes, scaled


def test_true_always_shows_a_bar_and_false_never(capsys: pytest.CaptureFixture[str]) -> None:
    with Reporter(True, "forced", 3, "rows") as r:
        r.update(3)
    assert "forced: 100%" in capsys.readouterr().err
    with Reporter(False, "off", 3, "rows") as r:
        r.update(1)
        r.update(2)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- writes
def test_writes_report_rows_per_batch(Reading: Any) -> None:
    seen: list[tuple[int, int | None]] = []
    result = Reading.insert_dataframe(frame(25), batch_size=10,
                                      progress=lambda done, total: seen.append((done, total)))
    assert result.inserted == 25
    assert seen == [(10, 25), (20, 25), (25, 25)]
    seen.clear()
    Reading.collection().create_index([("sensor", 1), ("value", 1)], unique=True)
    result = Reading.upsert_dataframe(frame(25), on=["sensor", "value"], batch_size=10,
                                      progress=lambda done, total: seen.append((done, total)))
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 25)
    assert seen[-1] == (25, 25) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_long_write_shows_a_bar_when_watched(
    Reading: Any, watched: None, capsys: pytest.CaptureFixture[str]
) -> None:
    Reading.insert_dataframe(frame(30), batch_size=10)
    err = capsys.readouterr().err
    assert "Reading: insert: 100%" in err and "30/30" in err
    Reading.insert_dataframe(frame(5), batch_size=10)  # one batch: no bar
    assert capsys.readouterr().err == ""


def test_a_bad_progress_value_writes_nothing(Reading: Any) -> None:
    with pytest.raises(ValueError, match="progress must be"):
        Reading.insert_dataframe(frame(3), progress="yes")
    assert Reading.collection().count_documents({}) == 0


# ---------------------------------------------------------------- loads
def returned_bytes(Reading: Any) -> int:
    """The BSON size of what a load of the model returns (clean data: no report field)."""
    keys = ["_id", "created_at", "updated_time", "sensor", "value"]
    docs = Reading.collection().find({}, projection=keys)
    return sum(len(bson.encode(doc)) for doc in docs)


def test_loads_report_bytes_received_per_server_batch(
    Reading: Any, monkeypatch: pytest.MonkeyPatch  # noqa: N803
) -> None:
    from loom_frames.read import cursor

    Reading.insert_dataframe(frame(50))
    expected = returned_bytes(Reading)
    seen: list[tuple[int, int | None]] = []
    table = Reading.filter().load_table(progress=lambda done, total: seen.append((done, total)))
    assert table.num_rows == 50
    assert seen == [(expected, None)]  # one server batch, total unknown
    seen.clear()
    monkeypatch.setattr(cursor, "FEEDBACK_BATCH", 20)  # watched: replies of 20 documents
    batches = list(Reading.filter().iter_batches(
        batch_size=15, progress=lambda done, total: seen.append((done, total))))
    assert [b.num_rows for b in batches] == [15, 15, 15, 5]  # cut across replies
    assert len(seen) == 3 and seen[-1] == (expected, None)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})  # strictly growing


def test_a_long_load_shows_a_bar_when_watched(
    Reading: Any, watched: None, capsys: pytest.CaptureFixture[str],  # noqa: N803
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loom_frames.read import cursor

    Reading.insert_dataframe(frame(50))
    capsys.readouterr()
    assert Reading.filter().load_polars().height == 50  # one server batch: no bar
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cursor, "FEEDBACK_BATCH", 20)  # watched: replies of 20 documents
    assert sum(b.num_rows for b in Reading.filter().iter_batches(batch_size=20)) == 50
    err = capsys.readouterr().err
    assert f"reading {Reading.collection().full_name}" in err and "B/s" in err
    assert Reading.filter().load_dataframe(progress=False).shape == (50, 5)
    assert capsys.readouterr().err == ""


def test_a_watched_load_asks_for_batches_that_move_the_bar(
    Reading: Any, commands: Any, monkeypatch: pytest.MonkeyPatch,  # noqa: N803
    capsys: pytest.CaptureFixture[str],
) -> None:
    # one 16 MiB reply would report once, at the end: watched, a load asks for replies of
    # FEEDBACK_BATCH documents (10,000; 20 here), unwatched for the server's own
    from loom_frames.read import cursor

    monkeypatch.setattr(cursor, "FEEDBACK_BATCH", 20)
    Reading.insert_dataframe(frame(50))
    commands.clear()
    seen: list[int] = []
    Reading.filter().load_table(progress=lambda done, total: seen.append(done))
    assert len(seen) == 3 and seen == sorted(seen)
    assert commands.named("find")[0]["batchSize"] == 20
    commands.clear()
    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    monkeypatch.setattr(progress_module, "AUTO_DELAY", 0.0)
    capsys.readouterr()
    assert Reading.filter().load_polars().height == 50
    assert f"reading {Reading.collection().full_name}" in capsys.readouterr().err
    commands.clear()
    Reading.filter().load_table(progress=False)
    assert "batchSize" not in commands.named("find")[0]


def test_a_bad_progress_value_fails_before_reading(Reading: Any, commands: Any) -> None:
    with pytest.raises(ValueError, match="progress must be"):
        Reading.filter().load_table(progress="always")
    assert commands.named("find") == []


# ---------------------------------------------------------------- in Jupyter
def test_in_a_jupyter_kernel_the_bar_is_a_widget_or_else_text() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    code = """
import sys
from loom_frames.progress import Reporter, interactive
print("interactive:", interactive())
with Reporter(True, "widget", 3, "rows") as r:
    r.update(1)
    r.update(2)
with Reporter("auto", "quick", 3, "rows") as r:  # one batch: nothing
    r.update(3)
sys.modules["ipywidgets"] = None  # as without the notebook extra: the text bar
with Reporter(True, "text", 3, "rows") as r:
    r.update(3)
"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=60).execute()
    outputs = nb.cells[0].outputs
    shown = [o for o in outputs if o["output_type"] == "display_data"]
    assert len(shown) == 1 and "application/vnd.jupyter.widget-view+json" in shown[0]["data"]
    assert "widget" in shown[0]["data"]["text/plain"]
    streams = {name: "".join(o["text"] for o in outputs
                             if o["output_type"] == "stream" and o["name"] == name)
               for name in ("stdout", "stderr")}
    assert "interactive: True" in streams["stdout"]
    assert "text: 100%" in streams["stderr"] and "quick" not in streams["stderr"]
