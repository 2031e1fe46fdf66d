"""New publications stamped in the change log a group at a time (ground/changes.py, issue 18):
the log ends exactly as the row-by-row trigger leaves it — the same (kind, key) rows in the same
order, after whatever was there before, whatever publications were already there."""

from __future__ import annotations

import functools
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from durable.sqlitedb import transaction
from ground import changes, db

ACCOUNTS = ("archive:alice", "archive:bob")
STATES = ("pending", "publishing", "published", "failed", "rejected")
# Few values, so that a statement often writes exactly what a row holds (no stamp) or one
# field alone differs (a stamp): the cases where a wrong condition would show.
maybe_text = st.sampled_from([None, "file:///a#1", "x"])
row = st.tuples(st.sampled_from(STATES), maybe_text, maybe_text, maybe_text, maybe_text, maybe_text)
# (item number, account number): some name no row at all.
key = st.tuples(st.integers(0, 7), st.integers(0, 1))

INSERT = (
    "INSERT INTO publications (item_id, account, state, updated_ms, next_attempt_ms, last_error, "
    "retryable) VALUES (?, ?, 'pending', 5, NULL, NULL, NULL)"
)


def _item(n: int) -> str:
    return f"{n:026d}"


@functools.cache
def _template() -> Path:
    """An empty ground database made once (its schema costs ~40 commits); examples copy it."""
    path = Path(tempfile.mkdtemp(prefix="changes-")) / "ground.db"
    db.connect(path).close()
    return path


def _ground(existing: dict[tuple[int, int], tuple[str | None, ...]]) -> sqlite3.Connection:
    path = Path(tempfile.mkdtemp(prefix="changes-")) / "ground.db"
    shutil.copyfile(_template(), path)
    conn = db.connect(path)
    conn.execute("PRAGMA synchronous=OFF")  # a test's throwaway copy
    conn.execute("PRAGMA foreign_keys=OFF")  # publications alone; items are not the point
    with transaction(conn):
        for (i, a), (state, url, remote, error, fid, note) in sorted(existing.items()):
            conn.execute(
                "INSERT INTO publications (item_id, account, state, url, remote_id, last_error, "
                "fidelity, fidelity_note, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (_item(i), ACCOUNTS[a], state, url, remote, error, fid, note),
            )
    return conn


def _log(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in conn.execute("SELECT kind, k1, k2 FROM changes ORDER BY seq")]


def _compare(
    existing: dict[tuple[int, int], tuple[str | None, ...]],
    run: Callable[[sqlite3.Connection, bool], None],
) -> None:
    by_row, by_group = _ground(existing), _ground(existing)
    before = [
        c.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0] for c in (by_row, by_group)
    ]
    with transaction(by_row):
        run(by_row, False)
    with transaction(by_group):
        run(by_group, True)
    assert _log(by_group) == _log(by_row)
    # What was stamped anew (a reader at the old end gets it), the same rows in the same order.
    fresh = [
        c.execute("SELECT kind, k1, k2 FROM changes WHERE seq > ? ORDER BY seq", (b,)).fetchall()
        for c, b in zip((by_row, by_group), before, strict=True)
    ]
    assert fresh[0] == fresh[1]
    assert (
        by_group.execute("SELECT * FROM publications ORDER BY rowid").fetchall()
        == by_row.execute("SELECT * FROM publications ORDER BY rowid").fetchall()
    )
    assert by_group.execute("SELECT count(*) FROM changes_by_group").fetchone()[0] == 0
    for conn in (by_row, by_group):
        path = Path(conn.execute("PRAGMA database_list").fetchone()[2])
        conn.close()
        shutil.rmtree(path.parent, ignore_errors=True)


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(key, row, max_size=6),
    st.lists(st.tuples(st.integers(8, 15), st.integers(0, 1)), max_size=10, unique=True),
)
def test_an_accepted_group_is_stamped_as_row_by_row(
    existing: dict[tuple[int, int], tuple[str | None, ...]], new: list[tuple[int, int]]
) -> None:
    def run(conn: sqlite3.Connection, grouped: bool) -> None:
        args = [(_item(i), ACCOUNTS[a]) for i, a in new]
        if grouped:
            with changes.stamping_inserts_by_group(conn, args):
                conn.executemany(INSERT, args)
        else:
            conn.executemany(INSERT, args)

    _compare(existing, run)


def test_an_earlier_releases_row_by_row_triggers_are_replaced(tmp_path: Path) -> None:
    """A database whose publications triggers predate group stamping gets the new ones, and a
    publication changed one by one afterwards is still stamped by its trigger."""
    conn = db.connect(tmp_path / "ground.db")
    name = "changes_publications_0"
    conn.execute(f"DROP TRIGGER {name}")
    conn.execute(
        f"CREATE TRIGGER {name} AFTER INSERT ON publications BEGIN "
        "DELETE FROM changes WHERE kind = 'pub' AND k1 = NEW.item_id AND k2 = NEW.account; "
        "INSERT INTO changes (kind, k1, k2) VALUES ('pub', NEW.item_id, NEW.account); END;"
    )
    conn.close()
    conn = db.connect(tmp_path / "ground.db")
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    assert "changes_by_group" in sql
    conn.execute("PRAGMA foreign_keys=OFF")
    with transaction(conn):
        conn.execute(INSERT, (_item(1), ACCOUNTS[0]))
    assert _log(conn)[-1] == ("pub", _item(1), ACCOUNTS[0])
    conn.close()


def test_stamping_a_group_needs_the_callers_transaction(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "ground.db")
    try:
        with changes.stamping_inserts_by_group(conn, []):
            raise AssertionError("entered outside a transaction")
    except RuntimeError as exc:
        assert "transaction" in str(exc)
    conn.close()
