"""Compatibility script for psycopg 3: runs a fixed workload against a DSN
and prints one JSON document of everything it observed, so that a run
through pgveil can be compared with a run against PostgreSQL directly.

usage: python3 psycopg_compat.py DSN TABLE
"""
import datetime
import decimal
import json
import sys

import psycopg


def plain(value):
    if isinstance(value, (decimal.Decimal, datetime.date, datetime.datetime, datetime.timedelta)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def rows(cur):
    return [plain(list(r)) for r in cur.fetchall()]


def main(dsn, table):
    out = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute(f"drop table if exists {table}")
        cur.execute(f"create table {table} (id int primary key, name text, amount numeric(10,2), born date, blob bytea)")
        # simple protocol (no parameters)
        cur.execute("select 1::int, 'Žirmūnų 王伟'::text, 1.5::numeric, '2020-02-29'::date, null::text")
        out["simple"] = rows(cur)
        # extended protocol, text parameters
        cur.execute("select %s::int + 1, %s::text || '!', %s::numeric * 2", (41, "héllo", decimal.Decimal("1.25")))
        out["params_text"] = rows(cur)
        # binary parameters and results
        bcur = conn.cursor(binary=True)
        bcur.execute("select %b::int8 * 3, %b::text, %b::bytea, %b::date", (7, "bïnary", b"\x00\x01\xff", datetime.date(1999, 12, 31)))
        out["params_binary"] = rows(bcur)
        # named prepared statement after the prepare threshold
        doubled = []
        for i in range(8):
            cur.execute("select %s::int * 2", (i,))
            doubled.append(cur.fetchone()[0])
        out["prepared"] = doubled
        # executemany in pipeline mode
        data = [(i, f"name-{i}-ą", decimal.Decimal(i) / 4, datetime.date(2000, 1, 1) + datetime.timedelta(days=i), bytes([i % 256])) for i in range(1, 201)]
        with conn.pipeline():
            cur.executemany(f"insert into {table} values (%s, %s, %s, %s, %s)", data)
        cur.execute(f"select count(*), sum(amount), min(name), max(born) from {table}")
        out["executemany"] = rows(cur)
        # COPY in and out through cursor.copy()
        with cur.copy(f"copy {table} (id, name, amount, born, blob) from stdin") as copy:
            for i in range(1001, 1051):
                copy.write_row((i, f"copied\t{i}\n", decimal.Decimal("9.99"), datetime.date(2021, 5, i % 28 + 1), b"\\x"))
        copied = []
        with cur.copy(f"copy (select id, name from {table} where id > 1000 order by id) to stdout") as copy:
            for row in copy.rows():
                copied.append(list(row))
        out["copy"] = [len(copied), copied[0], copied[-1]]
        # an error, then the session goes on
        try:
            cur.execute("select 1/0")
        except psycopg.Error as e:
            out["error"] = [e.sqlstate, str(e).splitlines()[0]]
        cur.execute("select 'still here'")
        out["after_error"] = rows(cur)
    # a transaction that is rolled back
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor()
        cur.execute(f"delete from {table}")
        conn.rollback()
        cur.execute(f"select count(*) from {table}")
        out["after_rollback"] = rows(cur)
    print(json.dumps(out, sort_keys=True, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
