"""chdb in-process (ClickHouse embedded, no HTTP front) for the ClickHouse path of bench/run.py.

  python bench/chdb_load.py migrate DIR        applies schema/clickhouse/ to the chdb data directory DIR
  python bench/chdb_load.py load DIR FILE      the same, then times
                                               `INSERT INTO otel.otel_traces FROM INFILE 'FILE' FORMAT Native`
                                               and prints one JSON line: {"seconds": wall time of that
                                               statement, "cpu_seconds": this process's CPU during it}

The schema goes in through tests/clickhouse/test_schema.migrate() with its single-node values, the
way the core applies it. bench/run.py then serves DIR with tests/clickhouse/chdb_front.py.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from chdb.session import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/clickhouse"))
from test_schema import SINGLE_NODE, migrate, session_query  # noqa: E402


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process: chdb's too
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["migrate", "load"])
    ap.add_argument("dir", help="chdb data directory")
    ap.add_argument("file", nargs="?", help="load: the Native file")
    a = ap.parse_args()
    if (a.command == "load") != (a.file is not None):
        ap.error("load takes a FILE, migrate none")
    sess = Session(a.dir)
    try:
        migrate(session_query(sess), SINGLE_NODE)
        if a.command == "load":
            path = a.file.replace("\\", "\\\\").replace("'", "\\'")
            t0, cpu0 = time.monotonic(), cpu_seconds()
            sess.query(f"INSERT INTO otel.otel_traces FROM INFILE '{path}' FORMAT Native")
            print(json.dumps({"seconds": time.monotonic() - t0, "cpu_seconds": cpu_seconds() - cpu0}), flush=True)
    finally:
        sess.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
