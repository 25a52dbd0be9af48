"""The corrections log: round trip, durability, append-only, concurrency, export and CLI."""

from __future__ import annotations

import json
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from vrshq.backend.corrections import (
    DB_FILENAME,
    Correction,
    CorrectionsLog,
    default_url,
    export_jsonl,
    public_url,
)
from tests.cli_helpers import assert_one_line_error, run_cli
from vrshq.masks.rle import decode_rle, encode_rle

ROOT = Path(__file__).resolve().parents[1]
SHA = "ab" * 32


def mask(h=6, w=8, box=(1, 2, 4, 5)) -> dict:
    m = np.zeros((h, w), bool)
    if box is not None:
        x0, y0, x1, y1 = box
        m[y0:y1, x0:x1] = True
    return encode_rle(m)


def make(**overrides) -> Correction:
    fields = {
        "project": 3, "task": 17, "annotation": 101, "annotator": "ann@example.com",
        "video_path": "/data/videos/cat.mp4", "video_sha256": SHA, "fps": 25.0,
        "prompt": "the black cat",
        "obj_id": 1, "label": "cat", "frame": 4,
        "predicted_mask": mask(box=(1, 1, 3, 3)), "corrected_mask": mask(),
        "predicted_boxes": [{"frame": 4, "x": 10, "y": 20.5, "width": 30, "height": 40}],
        "corrected_boxes": [{"frame": 4, "x": 12, "y": 21, "width": 28, "height": 41, "enabled": True}],
        "model_version": "vrshq-3b@abc123", "plugin": "vrshq", "event": "ANNOTATION_UPDATED",
        "annotated_at": "2025-03-01T10:00:00+00:00",
    }
    fields.update(overrides)
    return Correction(**fields)


@pytest.fixture
def log(tmp_path):
    with CorrectionsLog.for_model_dir(tmp_path) as lg:
        yield lg


# --- the record --------------------------------------------------------------------------


def test_round_trip_of_every_field(log):
    originals = [
        make(),
        make(task="18", annotation=None, annotator=None, video_sha256=None, fps=None, prompt="",
             predicted_mask=None, corrected_mask=mask(box=None), predicted_boxes=None,
             corrected_boxes=[], event="ANNOTATION_CREATED", annotated_at=None, obj_id=7, frame=0),
        make(predicted_mask=mask(box=None), corrected_mask=None, predicted_boxes=None,
             corrected_boxes=None, event="interactive", annotator=42),
        make(corrected_mask=None, corrected_boxes=None,
             corrected_clicks=[{"x": 3, "y": 4.5, "label": 1}, {"x": 0.0, "y": 7.25, "label": 0}]),
    ]
    ids = [log.append(c) for c in originals]
    assert ids == sorted(ids) and len(set(ids)) == 4
    back = log.list()
    assert len(back) == 4 and log.count() == 4
    for orig, got, i in zip(originals, back, ids):
        assert got.id == i
        assert datetime.fromisoformat(got.created_at).utcoffset().total_seconds() == 0
        assert got == replace(orig, id=i, created_at=got.created_at)
        for name in ("predicted_mask", "corrected_mask"):
            a, b = getattr(orig, name), getattr(got, name)
            assert (a is None) == (b is None)
            if a is not None:
                assert np.array_equal(decode_rle(a), decode_rle(b))
    assert back[1].task == 18  # a digit string reads back as the int Label Studio uses
    assert not decode_rle(back[1].corrected_mask).any()
    assert back[0].corrected_boxes[0] == {"frame": 4, "x": 12.0, "y": 21.0, "width": 28.0,
                                          "height": 41.0, "enabled": True}
    assert Correction.from_json(json.loads(json.dumps(back[0].to_json()))) == back[0]
    assert back[3].corrected_clicks == [{"x": 3.0, "y": 4.5, "label": 1}, {"x": 0.0, "y": 7.25, "label": 0}]
    assert back[0].corrected_clicks is None


def test_a_log_from_before_clicks_gets_the_column(tmp_path):
    """A log created before ``corrected_clicks`` existed: its rows read back, clicks are logged."""
    with CorrectionsLog.for_model_dir(tmp_path / "new") as lg:
        lg.append(make())
    con = sqlite3.connect(tmp_path / "new" / DB_FILENAME)
    (ddl,) = con.execute("SELECT sql FROM sqlite_master WHERE name = 'corrections'").fetchone()
    con.close()
    old = ddl.replace(", \n\tcorrected_clicks TEXT", "").replace(",\n\tcorrected_clicks TEXT", "")
    assert "corrected_clicks" not in old, ddl
    (tmp_path / "old").mkdir()
    con = sqlite3.connect(tmp_path / "old" / DB_FILENAME)
    con.execute(old)
    columns = [r[1] for r in con.execute("PRAGMA table_info(corrections)")]
    row = make()
    con.execute(f"INSERT INTO corrections ({', '.join(columns[1:])}) VALUES ({', '.join('?' * (len(columns) - 1))})",
                ["2025-03-01T10:00:00+00:00" if c == "created_at" else
                 json.dumps(getattr(row, c)) if c.endswith(("_mask", "_boxes")) else
                 str(getattr(row, c)) if getattr(row, c) is not None else None for c in columns[1:]])
    con.commit()
    con.close()
    with CorrectionsLog.for_model_dir(tmp_path / "old") as lg:
        lg.append(make(corrected_mask=None, corrected_clicks=[{"x": 1, "y": 2, "label": 0}]))
        first, second = lg.list()
    assert first.corrected_clicks is None and first.corrected_boxes == row.corrected_boxes
    assert second.corrected_clicks == [{"x": 1.0, "y": 2.0, "label": 0}]


@pytest.mark.parametrize("overrides, needle", [
    ({"frame": -1}, "frame must be >= 0"),
    ({"frame": 1.5}, "frame must be an int"),
    ({"corrected_mask": mask(h=7)}, "sizes must agree"),
    ({"corrected_mask": {"size": [2, 2], "counts": 5}}, "corrected_mask"),
    ({"predicted_boxes": [{"frame": 0, "x": 1, "y": 1, "width": 1}]}, "lacks height"),
    ({"predicted_boxes": [{"frame": -2, "x": 1, "y": 1, "width": 1, "height": 1}]}, "frame must be >= 0"),
    ({"corrected_boxes": [{"frame": 0, "x": 1, "y": 1, "width": -1, "height": 1}]}, "width must be >= 0"),
    ({"corrected_boxes": [{"frame": 0, "x": 1, "y": 1, "width": 1, "height": 1, "color": 1}]}, "unknown keys color"),
    ({"event": "ANNOTATION_DELETED"}, "event must be one of"),
    ({"video_sha256": "xyz"}, "64 hex digits"),
    ({"fps": 0}, "fps must be"),
    ({"project": None}, "project is required"),
    ({"task": True}, "task must be an int or a string"),
    ({"model_version": ""}, "model_version"),
    ({"annotated_at": "yesterday"}, "ISO 8601"),
    ({"corrected_clicks": []}, "at least one click"),
    ({"corrected_clicks": [{"x": 1, "y": 2}]}, "dict of x, y and label"),
    ({"corrected_clicks": [{"x": -1, "y": 2, "label": 1}]}, r"x must be a finite number >= 0"),
    ({"corrected_clicks": [{"x": 1, "y": float("nan"), "label": 1}]}, r"y must be a finite number"),
    ({"corrected_clicks": [{"x": 1, "y": 2, "label": 2}]}, "label must be 1"),
    ({"corrected_clicks": [{"x": 1, "y": 2, "label": True}]}, "label must be 1"),
    ({"corrected_clicks": {"x": 1}}, "must be a list of clicks"),
])
def test_validation(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        make(**overrides)


# --- storage -----------------------------------------------------------------------------


def test_sqlite_is_wal_and_durable_settings(log, tmp_path):
    assert log.url.database == str(tmp_path.resolve() / DB_FILENAME)
    with log.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
    raw = sqlite3.connect(tmp_path / DB_FILENAME)  # WAL is persistent in the file itself
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='corrections'"
                       ).fetchall() == [("ix_corrections_project_task",)]
    raw.close()


def test_append_only_even_for_raw_sql(log, tmp_path):
    log.append(make())
    assert not hasattr(log, "update") and not hasattr(log, "delete")
    raw = sqlite3.connect(tmp_path / DB_FILENAME)
    for sql in ("UPDATE corrections SET label = 'dog'", "DELETE FROM corrections"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            raw.execute(sql)
        raw.rollback()
    raw.close()
    assert log.count() == 1 and log.list()[0].label == "cat"


def test_committed_before_append_returns(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_corrections import make
        from vrshq.backend.corrections import CorrectionsLog
        log = CorrectionsLog.for_model_dir({str(tmp_path)!r})
        row_id = log.append(make(label="killed"))
        print(row_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    row_id = int(proc.stdout.strip())
    with CorrectionsLog.for_model_dir(tmp_path, create=False) as log:
        got = log.list()
    assert [(c.id, c.label) for c in got] == [(row_id, "killed")]


def _append_worker(args):
    model_dir, worker, n = args
    with CorrectionsLog.for_model_dir(model_dir) as log:
        return [log.append(make(annotation=worker, frame=i)) for i in range(n)]


def test_concurrent_appends_from_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_append_worker, [(str(tmp_path), w, 50) for w in range(4)])
    ids = [i for r in results for i in r]
    assert len(ids) == 200 and len(set(ids)) == 200
    with CorrectionsLog.for_model_dir(tmp_path) as log:
        assert log.count() == 200
        rows = log.list()
    assert [c.id for c in rows] == sorted(ids)
    for w in range(4):  # each writer's rows are in its own order
        assert [c.frame for c in rows if c.annotation == w] == list(range(50))


def test_list_filters_order_latest_and_append_many(log):
    ids = log.append_many([make(project=1, task=1, frame=0), make(project=1, task=2, frame=0),
                           make(project=2, task=1, frame=0), make(project=1, task=1, frame=0, label="v2"),
                           make(project="ext-7", task="a", frame=3)])
    assert ids == list(range(ids[0], ids[0] + 5))
    assert [c.id for c in log.list(project=1)] == [ids[0], ids[1], ids[3]]
    assert [c.id for c in log.list(project="1", task=1)] == [ids[0], ids[3]]
    assert [c.id for c in log.list(project="ext-7")] == [ids[4]]
    assert [c.id for c in log.list(since_id=ids[1], limit=2)] == [ids[2], ids[3]]
    assert [c.id for c in log.list(limit=0)] == []
    assert [c.id for c in log.iter(batch=2)] == ids
    assert [c.id for c in log.iter(batch=2, limit=3)] == ids[:3]
    assert log.latest(1, 1, 1, 0).label == "v2"
    assert log.latest(1, 1, 1, 5) is None
    assert log.append_many([]) == []
    with pytest.raises(TypeError):
        log.append_many([make(), {"project": 1}])
    assert log.count() == 5  # the failed batch left nothing


def test_open_without_create(tmp_path):
    with pytest.raises(FileNotFoundError, match=DB_FILENAME):
        CorrectionsLog.for_model_dir(tmp_path, create=False)
    assert not (tmp_path / DB_FILENAME).exists()
    with pytest.raises(ValueError, match="SQLite file"):
        CorrectionsLog("sqlite://")


def test_public_url_drops_credentials():
    assert public_url("postgresql://bob:s3cret@db.example:5432/ls") == "postgresql://db.example:5432/ls"
    assert default_url("/x/models") == f"sqlite:///{Path('/x/models').resolve() / DB_FILENAME}"


# --- export ------------------------------------------------------------------------------


def test_export_jsonl(log, tmp_path):
    log.append_many([make(frame=i) for i in range(3)])
    log.append(make(corrected_mask=mask(box=None), predicted_mask=None))
    out = tmp_path / "export" / "nested"
    path = export_jsonl(log, out)
    assert path == out / "corrections.jsonl"
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert [Correction.from_json(r) for r in records] == log.list()
    assert np.array_equal(decode_rle(records[0]["corrected_mask"]), decode_rle(mask()))
    assert records[3]["predicted_mask"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 4 and manifest["file"] == "corrections.jsonl"
    assert manifest["source"] == public_url(log.url) and "@" not in manifest["source"]
    datetime.fromisoformat(manifest["created_at"])
    assert sorted(p.name for p in out.iterdir()) == ["corrections.jsonl", "manifest.json"]  # no temp files
    export_jsonl(log, out)  # a second export replaces the files
    assert len(path.read_text().splitlines()) == 4


# --- CLI ---------------------------------------------------------------------------------


def test_cli_list_and_export(log, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("MODEL_DIR", raising=False)
    log.append(make(project=1, task=2, annotator=9, obj_id=3, label="dog", frame=7))
    log.append(make(project=5, predicted_boxes=None, corrected_boxes=None))
    rc, out, err = run_cli(capfd, "corrections", "list", "--data-dir", tmp_path)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "(UTC)"]
    assert len(lines) == 4 and lines[-1] == "2 correction(s)"
    assert "dog" in lines[1] and "mask+boxes" in lines[1] and "vrshq:vrshq-3b@abc123" in lines[1]
    assert lines[2].split()[3:5] == ["ANNOTATION_UPDATED", "5"] and " mask " in lines[2]

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    rc, out, err = run_cli(capfd, "corrections", "list", "--project", "1", "--json")
    assert rc == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["label"] == "dog" and record["corrected_mask"] == mask()
    rc, out, _ = run_cli(capfd, "corrections", "list", "--db", default_url(tmp_path), "--task", "99")
    assert (rc, out) == (0, "no corrections\n")
    rc, out, _ = run_cli(capfd, "corrections", "list", "--limit", "1", "--json")
    assert rc == 0 and len(out.splitlines()) == 1

    rc, out, err = run_cli(capfd, "corrections", "export", "--out", tmp_path / "exp")
    assert rc == 0, err
    assert out == f"exported 2 correction(s) -> {tmp_path / 'exp' / 'corrections.jsonl'}\n"
    assert len((tmp_path / "exp" / "corrections.jsonl").read_text().splitlines()) == 2


def test_cli_errors(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("MODEL_DIR", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run_cli(capfd, "corrections", "list", "--data-dir", empty)
    assert_one_line_error(rc, err, "no corrections log", str(empty.resolve() / DB_FILENAME))
    assert not (empty / DB_FILENAME).exists()
    rc, _, err = run_cli(capfd, "corrections", "list")
    assert_one_line_error(rc, err, "--data-dir", "MODEL_DIR")
    rc, _, err = run_cli(capfd, "corrections", "export", "--out", tmp_path / "x", "--db", "nope://")
    assert_one_line_error(rc, err, "--db")

    CorrectionsLog.for_model_dir(tmp_path).close()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    rc, _, err = run_cli(capfd, "corrections", "export", "--out", a_file, "--data-dir", tmp_path)
    assert_one_line_error(rc, err, "--out", str(a_file), "not a folder")
    rc, _, err = run_cli(capfd, "corrections", "list", "--data-dir", tmp_path, "--limit", "-1")
    assert_one_line_error(rc, err, "--limit")
    rc, _, err = run_cli(capfd, "corrections", "list", "--data-dir", tmp_path, "--db", "sqlite:///x")
    assert_one_line_error(rc, err, "not allowed with")
