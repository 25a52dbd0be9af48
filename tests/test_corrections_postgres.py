"""The corrections log on a real PostgreSQL server, as the README promises for any SQLAlchemy URL.

The suite starts its own server: Debian's PostgreSQL (installed by scripts/setup_postgres.sh,
which .ci/run calls), a new cluster in a temporary folder, on a free loopback port with its
Unix socket in that folder, stopped at the end. PostgreSQL refuses to run as root: as root
the server runs as the package's ``postgres`` user. The driver is ``vrshq[postgres]``
(psycopg 3), which a plain ``postgresql://`` URL uses.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from vrshq.backend.corrections import CorrectionsLog, export_jsonl, public_url
from tests.cli_helpers import assert_one_line_error, run_cli, run_script
from tests.test_corrections import make, mask
from tests.test_serve import free_port

pytestmark = pytest.mark.timeout(300)
INSTALL = "apt-get install postgresql (scripts/setup_postgres.sh; .ci/run does it)"


def _server_binaries() -> Path:
    """The folder with initdb and postgres (Debian keeps them out of PATH)."""
    for folder in [*sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True),
                   os.path.dirname(shutil.which("initdb") or "")]:
        if folder and all(os.access(Path(folder) / name, os.X_OK) for name in ("initdb", "postgres")):
            return Path(folder)
    pytest.fail(f"PostgreSQL's initdb and postgres are not installed: {INSTALL}")


def _run_as() -> dict:
    """subprocess arguments that drop root to the ``postgres`` user (the server refuses root)."""
    if os.geteuid() != 0:
        return {}
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"running as root and there is no 'postgres' user to run the server as: {INSTALL}")
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@pytest.fixture(scope="module")
def pg_server():
    """A throw-away PostgreSQL server; yields a function that makes a new database's URL."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("the PostgreSQL driver is not installed: pip install -e '.[test,postgres]' "
                    "(scripts/setup.sh does it)")
    binaries, as_user = _server_binaries(), _run_as()
    # Not pytest's tmp_path: as root that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="vrshq-pg-"))
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run([binaries / "initdb", "-D", data, "-U", "vrshq", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, cwd=root, **as_user)
    with open(root / "server.log", "wb") as server_log:
        server = subprocess.Popen(
            [binaries / "postgres", "-D", data, "-p", str(port), "-k", root,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=server_log, cwd=root, **as_user)
    admin = f"postgresql://vrshq@127.0.0.1:{port}/postgres"
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(admin).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("PostgreSQL did not start: " + (root / "server.log").read_text()[-2000:])
            time.sleep(0.1)
    names = iter(range(1000))

    def new_database() -> str:
        name = f"corrections_{next(names)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://vrshq@127.0.0.1:{port}/{name}"  # a plain URL, as users write it

    yield new_database
    server.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    shutil.rmtree(root, ignore_errors=True)


def test_the_log_appends_lists_and_exports_on_postgresql(pg_server, tmp_path):
    url = pg_server()
    with CorrectionsLog(url) as log:
        ids = log.append_many([make(project=1, task=1, frame=0), make(project=1, task=2, frame=0),
                               make(project="ext-7", task="a", frame=3)])
        assert ids == list(range(ids[0], ids[0] + 3))
        first = log.list()[0]
        assert first.corrected_mask == mask() and first.project == 1 and first.fps == 25.0
        assert [c.id for c in log.list(project=1)] == ids[:2]
        assert [c.id for c in log.list(project="ext-7")] == [ids[2]]
        # append_new takes its table lock (LOCK TABLE) and skips what repeats the newest entry.
        assert log.append_new([make(project=1, task=1, frame=0)]) == []
        (new,) = log.append_new([make(project=1, task=1, frame=0, corrected_mask=mask(box=(0, 0, 2, 2)))])
        assert log.latest(1, 1, 1, 0).id == new and log.count() == 4
        path = export_jsonl(log, tmp_path / "export")
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["id"] for r in records] == [*ids, new]
        assert json.loads((path.parent / "manifest.json").read_text())["source"] == public_url(log.url)
    with CorrectionsLog(url, create=False) as again:  # the table persists in the server
        assert again.count() == 4


def test_the_postgresql_log_is_append_only(pg_server):
    import sqlalchemy as sa

    url = pg_server()
    with CorrectionsLog(url) as log:
        (cid,) = log.append_many([make(project=1, task=1, frame=0)])
        for statement in (f"UPDATE corrections SET label = 'x' WHERE id = {cid}",
                          f"DELETE FROM corrections WHERE id = {cid}"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                with log.engine.begin() as conn:
                    conn.exec_driver_sql(statement)
        assert log.count() == 1 and log.list()[0].label == make().label
    with CorrectionsLog(url) as again:  # opening it again re-creates nothing and keeps the rule
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with again.engine.begin() as conn:
                conn.exec_driver_sql("DELETE FROM corrections")


def test_cli_lists_and_exports_a_postgresql_log(pg_server, tmp_path, capfd):
    url = pg_server()
    with CorrectionsLog(url) as log:
        log.append(make(project=1, task=2, obj_id=3, label="dog", frame=7))
        log.append(make(project=5))
    rc, out, err = run_cli(capfd, "corrections", "list", "--db", url)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 4 and lines[-1] == "2 correction(s)" and "dog" in lines[1]
    rc, out, err = run_cli(capfd, "corrections", "export", "--db", url, "--out", tmp_path / "exp")
    assert rc == 0, err
    assert len((tmp_path / "exp" / "corrections.jsonl").read_text().splitlines()) == 2
    proc = run_script("corrections", "list", "--db", url, "--project", "5", "--json")  # the console script
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["project"] for line in proc.stdout.splitlines()] == [5]


def test_cli_on_a_postgresql_database_without_the_log(pg_server, capfd):
    url = pg_server()
    rc, _, err = run_cli(capfd, "corrections", "list", "--db", url)
    assert_one_line_error(rc, err, "no corrections table", url.rsplit("/", 1)[1])


def test_cli_names_the_extra_when_a_postgresql_driver_is_missing(capfd, monkeypatch):
    # The driver is made unimportable (None in sys.modules), so the check runs on every machine,
    # whether or not psycopg2 happens to be installed there.
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    rc, _, err = run_cli(capfd, "corrections", "list", "--db", "postgresql+psycopg2://u@127.0.0.1:1/x")
    assert_one_line_error(rc, err, "psycopg2", "vrshq[postgres]")
