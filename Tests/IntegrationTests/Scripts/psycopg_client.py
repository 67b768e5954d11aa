#!/usr/bin/python3
"""psycopg2 against a pgchorus proxy, one concern per subcommand.

Usage: psycopg_client.py CONNECTION_STRING CHECK
CHECK is one of: parameters, copy, large-object, notify, cancel, errors.

Each check prints "ok <what>" lines as it goes and "PASSED <check>" at the end; on failure it
prints "FAILED <check>: <reason>" to stderr and exits with status 1.
"""

import io
import select
import sys
import threading
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions


from checks import CheckFailed, expect, ok, run


def connect(dsn, autocommit=False):
    conn = psycopg2.connect(dsn)
    conn.autocommit = autocommit
    return conn


def check_parameters(dsn):
    conn = connect(dsn)
    cur = conn.cursor()

    cur.execute("select %s::int + %s, %s::text", (1, 2, "x'y"))
    row = cur.fetchone()
    expect(row == (3, "x'y"), "select with parameters returned %r, expected (3, \"x'y\")" % (row,))
    ok("parameters 3 x'y")

    cur.execute("select %s::int is null, %s", (None, None))
    row = cur.fetchone()
    expect(row == (True, None), "NULL parameters returned %r, expected (True, None)" % (row,))
    ok("null")

    payload = bytes(range(256)) * 64
    cur.execute("select %s::bytea, length(%s::bytea)", (psycopg2.Binary(payload), psycopg2.Binary(payload)))
    value, length = cur.fetchone()
    expect(bytes(value) == payload, "bytea came back different (%d bytes, expected %d)" % (len(bytes(value)), len(payload)))
    expect(length == len(payload), "server saw %d bytea bytes, expected %d" % (length, len(payload)))
    ok("bytea %d bytes" % len(payload))

    named = conn.cursor(name="c")
    named.execute("select g from generate_series(1, 1000) g")
    seen, batches = [], 0
    for _ in range(100):
        batch = named.fetchmany(128)
        if not batch:
            break
        batches += 1
        seen.extend(r[0] for r in batch)
    named.close()
    expect(seen == list(range(1, 1001)), "named cursor gave %d rows (first %r, last %r), expected 1..1000"
           % (len(seen), seen[:1], seen[-1:]))
    expect(batches == 8, "named cursor took %d batches of 128, expected 8" % batches)
    ok("named cursor 1000 rows in %d batches" % batches)

    cur.execute("create table many (i int primary key, s text)")
    cur.executemany("insert into many (i, s) values (%s, %s)", [(i, "row %d" % i) for i in range(1, 101)])
    conn.commit()
    cur.execute("select count(*), sum(i) from many")
    row = cur.fetchone()
    expect(row == (100, 5050), "after executemany: count, sum = %r, expected (100, 5050)" % (row,))
    ok("executemany 100 rows")
    conn.close()


def check_copy(dsn):
    conn = connect(dsn)
    cur = conn.cursor()
    cur.execute("create table copied (i int primary key, s text)")
    rows = "".join("%d\trow %d with a \\\\ backslash\n" % (i, i) if i % 7 else "%d\t\\N\n" % i for i in range(1, 1001))
    cur.copy_expert("COPY copied FROM STDIN", io.StringIO(rows))
    expect(cur.rowcount == 1000, "COPY FROM STDIN reported %d rows, expected 1000" % cur.rowcount)
    conn.commit()
    ok("copy in 1000 rows")

    out = io.StringIO()
    cur.copy_expert("COPY (select i, s from copied order by i) TO STDOUT", out)
    back = out.getvalue()
    expect(back == rows, "COPY TO STDOUT gave %d lines that differ from the %d sent (first difference at line %s)"
           % (back.count("\n"), rows.count("\n"), first_difference(back, rows)))
    ok("copy out 1000 rows identical")

    cur.execute("select count(*), count(s) from copied")
    row = cur.fetchone()
    expect(row == (1000, 1000 - 142), "table holds count, non-null = %r, expected (1000, 858)" % (row,))
    ok("copied rows counted")
    conn.commit()
    conn.close()


def first_difference(a, b):
    for n, (x, y) in enumerate(zip(a.split("\n"), b.split("\n")), 1):
        if x != y:
            return "%d: %r vs %r" % (n, x, y)
    return "end"


def check_large_object(dsn):
    conn = connect(dsn)
    data = bytes((i * 7 + i // 256) % 256 for i in range(1 << 20))
    lo = conn.lobject(0, "wb")
    oid = lo.oid
    written = lo.write(data)
    expect(written == len(data), "lo_write wrote %d bytes, expected %d" % (written, len(data)))
    lo.close()
    conn.commit()
    ok("large object written")
    print("oid %d" % oid, flush=True)

    lo = conn.lobject(oid, "rb")
    back = lo.read()
    lo.close()
    conn.commit()
    expect(back == data, "large object %d read back %d bytes that differ from the %d written" % (oid, len(back), len(data)))
    ok("large object read back 1048576 bytes")
    conn.close()


def wait_for_notifies(conn, count, timeout):
    deadline = time.monotonic() + timeout
    while len(conn.notifies) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        select.select([conn], [], [], remaining)
        conn.poll()
    return list(conn.notifies)


def check_notify(dsn):
    listener = connect(dsn, autocommit=True)
    sender = connect(dsn, autocommit=True)
    listener.cursor().execute("LISTEN ch")
    sender.cursor().execute("NOTIFY ch, 'hello'")

    got = wait_for_notifies(listener, 1, 10)
    expect(len(got) == 1, "listener got %d notifications within 10 s, expected 1: %r" % (len(got), got))
    n = got[0]
    expect(n.channel == "ch" and n.payload == "hello", "notification %r, expected channel ch payload hello" % (n,))
    expect(n.pid != listener.get_backend_pid(),
           "notification from the other session carries the listener's own pid %d" % n.pid)
    print("other session pid %d, its notification pid %d" % (sender.get_backend_pid(), n.pid), flush=True)
    ok("notify from another session: hello")
    listener.notifies.clear()

    listener.cursor().execute("NOTIFY ch, 'self'")
    got = wait_for_notifies(listener, 1, 10)
    expect(len(got) == 1, "self-notification: got %d within 10 s, expected 1: %r" % (len(got), got))
    n = got[0]
    expect(n.payload == "self", "self-notification payload %r, expected 'self'" % n.payload)
    expect(n.pid == listener.get_backend_pid(), "self-notification pid %d, but the connection's backend pid is %d"
           % (n.pid, listener.get_backend_pid()))
    ok("self notification pid equals backend pid")
    sender.close()
    listener.close()


def check_cancel(dsn):
    conn = connect(dsn)
    cur = conn.cursor()
    cancel_error = []

    finished = threading.Event()

    def cancel_soon():
        # A cancel that arrives before the query reaches the server cancels nothing (as with
        # PostgreSQL itself), so on a loaded machine it is repeated until the query ends.
        for _ in range(8):
            if finished.wait(0.5):
                return
            try:
                conn.cancel()
            except Exception as e:  # reported by the main thread
                cancel_error.append(e)
                return

    thread = threading.Thread(target=cancel_soon, daemon=True)
    thread.start()
    try:
        cur.execute("select pg_sleep(10)")
        raise CheckFailed("pg_sleep(10) completed; the cancel request had no effect")
    except psycopg2.errors.QueryCanceled as e:
        finished.set()
        expect(e.pgcode == "57014", "QueryCanceled with pgcode %s, expected 57014" % e.pgcode)
    thread.join(5)
    expect(not cancel_error, "conn.cancel() failed: %r" % cancel_error)
    # (pg_sleep(10) ended with 57014: the cancel took effect. How soon is a timing, left to benchmarks.)
    ok("cancelled with 57014")

    conn.rollback()
    cur.execute("select 42")
    row = cur.fetchone()
    expect(row == (42,), "after the cancel, select 42 returned %r" % (row,))
    ok("connection works after cancel")
    conn.close()


def check_errors(dsn):
    conn = connect(dsn)
    cur = conn.cursor()
    cur.execute("create table e (i int)")
    conn.commit()

    cur.execute("insert into e values (1)")
    try:
        cur.execute("select 1/0")
        raise CheckFailed("select 1/0 did not raise")
    except psycopg2.errors.DivisionByZero as e:
        expect(e.pgcode == "22012", "DivisionByZero with pgcode %s" % e.pgcode)
        expect("division by zero" in e.pgerror, "error message %r" % e.pgerror)
    ok("division by zero 22012")

    try:
        cur.execute("select 1")
        raise CheckFailed("a statement in the failed transaction did not raise")
    except psycopg2.errors.InFailedSqlTransaction as e:
        expect(e.pgcode == "25P02", "InFailedSqlTransaction with pgcode %s" % e.pgcode)
    ok("failed transaction 25P02")

    conn.rollback()
    cur.execute("select count(*) from e")
    row = cur.fetchone()
    expect(row == (0,), "after rollback the table holds %r rows, expected 0" % (row,))
    cur.execute("select 'works'")
    expect(cur.fetchone() == ("works",), "query after rollback failed")
    ok("rollback then query works")
    conn.close()


CHECKS = {
    "parameters": check_parameters,
    "copy": check_copy,
    "large-object": check_large_object,
    "notify": check_notify,
    "cancel": check_cancel,
    "errors": check_errors,
}



if __name__ == "__main__":
    sys.exit(run(CHECKS))
