"""Seen ids stay on disk: a restart over a full dedupe window neither loads them nor grows.

An hour at 20 000 spans/s is about 70 M ids; schema 1 loaded every one of them at start (10 M
peaked at 2.8 GB). Here 10 M ids are in the window, and a fresh process opens the store,
loads it, counts and looks up ids, and commits more, in well under 300 MB.
"""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import subprocess
import sys

from exporter.store import FILENAME, Batch, Store

ROOT = pathlib.Path(__file__).resolve().parents[1]
IDS = 10_000_000
MAX_RSS_MB = 300
# Filled ids are 24 ASCII digits, i zero-padded: in key order, so SQLite appends them (about
# 15 s for 10 M here, where random ids take over a minute); their shape does not matter to
# what is measured. Times are all within the window: nothing is pruned.
_FILL = (
    "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
    " INSERT INTO seen_ids (bucket, id, at) SELECT CAST((1000.0 + i / 4096) / 60 AS INTEGER),"
    " CAST(printf('%024d', i) AS BLOB), 1000.0 + i / 4096 FROM n"
)


def filled(i: int) -> bytes:
    return b"%024d" % i


# Ids committed through the store, as the service writes them: 16-byte trace + 8-byte span.
COMMITTED = [(bytes([0xA0 + t]) * 16, bytes([s]) * 8) for t in range(3) for s in (1, 2)]
KNOWN = (
    [filled(i) for i in (0, 1, 4095, 4096, IDS // 2, IDS - 2, IDS - 1)]
    + [filled(i) for i in range(17, IDS, IDS // 2_000)]  # about 2000, spread over the index
    + [t + s for t, s in COMMITTED]
)
UNKNOWN = (
    [filled(i) for i in (IDS, IDS + 1, IDS * 9)]
    + [b"%024d" % -i for i in range(1, 1_000)]  # "-000...1": sorts before all the digits
    + [b"\xff" * 24, b"\x00" * 24, b"0" * 23 + b"\x00", bytes([0xA0]) * 16 + bytes([3]) * 8]
    + [bytes([0xB0 + n]) * 24 for n in range(40)]
)

_RESTART = """
import json, os, sys
from exporter.store import Batch, Store


def peak_mb():
    # VmHWM is this process image's peak: ru_maxrss would carry the parent's peak across
    # the fork and exec of a large test runner.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


keys = [bytes.fromhex(k) for k in json.loads(sys.stdin.read())]
store = Store(sys.argv[1])
loaded = store.load()
found = store.seen_before(keys)
count = store.seen_count()
fresh = [(os.urandom(16), os.urandom(8), 5000.0) for _ in range(2_000)]
store.commit(Batch(seen=fresh))
refound = store.seen_before([t + s for t, s, _ in fresh])
after = store.seen_count()
store.close()
print(json.dumps({
    "pending": len(loaded.pending), "totals": repr(loaded.totals),
    "found": sorted(k.hex() for k in found), "count": count,
    "refound": len(refound), "after": after,
    "max_rss_mb": peak_mb(),
}))
"""


def test_a_restart_over_ten_million_seen_ids_stays_small_and_answers_exactly(tmp_path):
    assert not set(KNOWN) & set(UNKNOWN) and len(set(KNOWN)) == len(KNOWN)
    store = Store(tmp_path)
    store.commit(Batch(increments=[("fam", ("a",), 7)],
                       seen=[(t, s, 2000.0) for t, s in COMMITTED]))
    store.close()
    path = tmp_path / FILENAME
    try:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA synchronous = OFF")  # a test fixture: durability is not the point
        db.execute("BEGIN")
        db.execute(_FILL, (IDS,))
        db.execute("COMMIT")
        db.close()  # checkpoints the WAL into the file

        asked = KNOWN + UNKNOWN
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
            str(ROOT), os.environ.get("PYTHONPATH")]))}
        child = subprocess.run(
            [sys.executable, "-c", _RESTART, str(tmp_path)], cwd=ROOT, env=env, timeout=120,
            input=json.dumps([k.hex() for k in asked]), capture_output=True, text=True,
        )
        assert child.returncode == 0, child.stderr
        report = json.loads(child.stdout)

        assert report["found"] == sorted(k.hex() for k in KNOWN)
        assert report["count"] == IDS + len(COMMITTED)
        assert (report["refound"], report["after"]) == (2_000, IDS + len(COMMITTED) + 2_000)
        assert (report["pending"], report["totals"]) == (0, repr({"fam": {("a",): 7}}))
        assert report["max_rss_mb"] < MAX_RSS_MB, report
    finally:
        for leftover in tmp_path.glob(FILENAME + "*"):  # 700 MB: not left for pytest to keep
            leftover.unlink()
