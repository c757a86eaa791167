"""The baseline for interactive-control latency: RapidFire-style IC ops in SQLite.

RapidFire's evals controller keeps interactive-control operations in a SQLite table and a
controller loop checks it, sleeping 0.5 s between checks. A client inserts a row and polls until
the controller marks it done. This reproduces that loop faithfully, in a thread, so the benchmark
can time it beside Inferno's log-based path in the same run.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
create table if not exists ic_ops (
    ic_id integer primary key autoincrement,
    pipeline_id integer not null,
    operation text not null,
    status text not null default 'pending',
    created_at real not null,
    processed_at real
)
"""


class SqliteController:
    """A controller thread that applies pending IC ops every `poll_interval` seconds."""

    def __init__(self, path: Path, poll_interval: float = 0.5) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sqlite-controller", daemon=True)
        with sqlite3.connect(path) as db:
            db.execute(SCHEMA)

    def __enter__(self) -> SqliteController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        db = sqlite3.connect(self.path)
        while not self._stop.is_set():
            pending = db.execute("select ic_id from ic_ops where status = 'pending'").fetchall()
            now = time.time()
            for (ic_id,) in pending:  # stop/resume flip a flag in the controller's memory
                db.execute(
                    "update ic_ops set status = 'completed', processed_at = ? where ic_id = ?",
                    (now, ic_id),
                )
            db.commit()
            self._stop.wait(self.poll_interval)
        db.close()


def submit_and_wait(path: Path, pipeline_id: int, operation: str, poll: float = 0.001) -> float:
    """Insert one op and poll until the controller completed it; returns seconds taken."""
    db = sqlite3.connect(path)
    start = time.perf_counter()
    cursor = db.execute(
        "insert into ic_ops (pipeline_id, operation, created_at) values (?, ?, ?)",
        (pipeline_id, operation, time.time()),
    )
    db.commit()
    ic_id = cursor.lastrowid
    while (
        db.execute("select status from ic_ops where ic_id = ?", (ic_id,)).fetchone()[0]
        != "completed"
    ):
        time.sleep(poll)
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed
