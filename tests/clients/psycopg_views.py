"""psycopg 3 probe for the privacy-view tests (tests/views_proxy.rs,
tests/deny_proxy.rs). Every value is printed as text (None stays null), so
the Rust side compares exactly what a Python application would see.

usage:
  python3 psycopg_views.py query DSN SQL
      -> {"rows": [[...], ...]} or {"error": SQLSTATE}
  python3 psycopg_views.py statements DSN  < JSON list of SQL texts
      -> [{"sql": ..., "error": SQLSTATE or null, "rows": ..., "after": [[1]]}, ...]
         each statement runs on the same connection, then `select 1`.
  python3 psycopg_views.py pipeline DSN CUSTOMER_ID
      -> what a pipeline with a refused statement in the middle observed.
"""
import datetime
import decimal
import json
import sys

import psycopg


def text(value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (decimal.Decimal, datetime.date, datetime.datetime, int, float)):
        return str(value)
    return str(value)


def rows(cur):
    if cur.description is None:
        return None
    return [[text(v) for v in row] for row in cur.fetchall()]


def run(cur, sql):
    """Rows of one statement, or its SQLSTATE."""
    try:
        cur.execute(sql)
        return {"error": None, "rows": rows(cur)}
    except psycopg.Error as e:
        return {"error": e.sqlstate, "message": str(e).splitlines()[0] if str(e) else ""}


def query(dsn, sql):
    with psycopg.connect(dsn, autocommit=True) as conn:
        out = run(conn.cursor(), sql)
    print(json.dumps(out))


def statements(dsn):
    texts = json.load(sys.stdin)
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        for sql in texts:
            result = run(cur, sql)
            result["sql"] = sql
            result["after"] = run(cur, "select 1")["rows"]
            out.append(result)
    print(json.dumps(out))


def outcome(cur):
    """What fetching a pipelined cursor gives: rows or the exception class."""
    try:
        return {"rows": rows(cur)}
    except psycopg.Error as e:
        return {"raised": type(e).__name__}


def pipeline(dsn, customer_id):
    """select; select customers; refused CREATE TABLE; UPDATE; select — one Sync."""
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursors = [conn.cursor() for _ in range(5)]
        try:
            with conn.pipeline():
                cursors[0].execute("select 1")
                cursors[1].execute("select city from customers where customer_id = %s", (customer_id,))
                cursors[2].execute("create table pipelined_copy (x int)")
                cursors[3].execute("update customers set city = 'Pipelined' where customer_id = %s", (customer_id,))
                cursors[4].execute("select 2")
        except psycopg.Error as e:
            out["error"] = e.sqlstate
        out["results"] = [outcome(c) for c in cursors]
        after = conn.cursor()
        after.execute("select city from customers where customer_id = %s", (customer_id,))
        out["after"] = rows(after)
    print(json.dumps(out))


def main():
    mode, dsn = sys.argv[1], sys.argv[2]
    if mode == "query":
        query(dsn, sys.argv[3])
    elif mode == "statements":
        statements(dsn)
    elif mode == "pipeline":
        pipeline(dsn, int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
