#!/usr/bin/python3
"""psycopg 3 (Debian's python3-psycopg) through pgchorus: what it sends that psycopg2 never does —
server-side parameters (Parse/Bind/Execute for every query with parameters), libpq's pipeline mode
(`executemany`, `Connection.pipeline()`: many statements and Syncs in flight), automatic prepared
statements, binary COPY, COPY … TO STDOUT with parameters (an extended-protocol COPY) — alone and from
several sessions at once. Prints `ok …` lines and ends with `PASSED <check>`; the Swift test then
compares the backends directly.

pipeline  everything above, then 4 sessions for 6 s writing in pipelines beside sessions counting the
          rows they commit (`INSERT … SELECT count(*)`).
two-nodes (CONNECTION_STRING is node 1's, a third argument node 2's) three rounds: the tables made
          again through node 1, then for 8 s two sessions per node writing pipelined transactions of
          five rows into a SERIAL table (psycopg prepares the INSERT in the middle of a pipeline) and
          one per node counting them.
"""
import sys
import threading

import psycopg

from checks import CheckFailed, cancel_while, expect, in_threads, ok


def one(conn, sql, params=None):
    return conn.execute(sql, params).fetchone()[0]


def pipelined_writer(dsn, v):
    """A worker writing transactions of five rows `(v, round)` into `items`, each sent as one pipeline."""
    def run(stop):
        with psycopg.connect(dsn, autocommit=True) as c:
            for round in range(100_000):
                if stop.is_set():
                    return
                with c.pipeline():
                    with c.transaction():
                        for i in range(5):
                            c.execute("insert into items (v, n) values (%s, %s)", (v, round))
    return run


def row_counter(dsn, v, retries=False):
    """A worker inserting into `counts` how many rows of `items` have `v`; with `retries`, a 40001
    (the order's: the client retries) only skips that round."""
    def run(stop):
        with psycopg.connect(dsn, autocommit=True) as c:
            for _ in range(100_000):
                if stop.is_set():
                    return
                try:
                    c.execute("insert into counts (n) select count(*) from items where v = %s", (v,))
                except psycopg.errors.SerializationFailure:
                    if not retries:
                        raise
    return run


def pipeline(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("create table items (id serial primary key, v text not null, n int not null)")
        c.execute("create table counts (id serial primary key, n bigint not null)")
    ok("schema")

    with psycopg.connect(dsn) as c:
        c.execute("insert into items (v, n) values (%s, %s)", ("tx", 1))
        expect(one(c, "select count(*) from items where v = %s", ("tx",)) == 1, "a parameterised insert in a transaction")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("insert into items (v, n) values (%s, %s)", ("auto", 2))
        expect(one(c, "select count(*) from items where v = %s", ("auto",)) == 1, "a parameterised autocommit insert")
    ok("server-side parameters")

    with psycopg.connect(dsn) as c:
        with c.cursor() as cur:
            cur.executemany("insert into items (v, n) values (%s, %s)", [("many", i) for i in range(200)])
        c.commit()
    with psycopg.connect(dsn, autocommit=True) as c:
        with c.cursor() as cur:
            cur.executemany("insert into items (v, n) values (%s, %s) returning id", [("many-auto", i) for i in range(100)], returning=True)
            ids = []
            while True:
                ids.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
        expect(len(set(ids)) == 100, "executemany … RETURNING gave %d distinct ids" % len(set(ids)))
        expect(one(c, "select count(*) from items where v like %s", ("many%",)) == 300, "executemany's rows")
    ok("executemany in pipeline mode")

    with psycopg.connect(dsn) as c:
        with c.pipeline():
            for i in range(50):
                c.execute("insert into items (v, n) values (%s, %s)", ("pipe", i))
            cur = c.execute("select count(*) from items where v = %s", ("pipe",))
        expect(cur.fetchone()[0] == 50, "a pipeline sees its own rows")
        c.commit()
    with psycopg.connect(dsn, autocommit=True) as c:
        with c.pipeline() as p:
            for i in range(50):
                c.execute("insert into items (v, n) values (%s, %s)", ("pipe-auto", i))
            p.sync()
            cur = c.execute("select count(*) from items where v = %s", ("pipe-auto",))
        expect(cur.fetchone()[0] == 50, "an autocommit pipeline's rows")
        # An error in a pipeline: PostgreSQL skips everything up to the Sync, and the implicit
        # transaction of the statements before it rolls back with it.
        try:
            with c.pipeline():
                c.execute("insert into items (v, n) values (%s, %s)", ("pipe-error", 1))
                c.execute("select 1 / 0")
                c.execute("insert into items (v, n) values (%s, %s)", ("pipe-error", 2))
            raise CheckFailed("the pipeline with a division by zero succeeded")
        except psycopg.errors.DivisionByZero:
            pass
        expect(one(c, "select count(*) from items where v = %s", ("pipe-error",)) == 0, "a failed pipeline's rows are gone")
        expect(one(c, "select 42") == 42, "the session goes on after a failed pipeline")
    ok("explicit pipelines, with an error")

    with psycopg.connect(dsn, autocommit=True) as c:
        with c.cursor() as cur:
            with cur.copy("copy items (v, n) from stdin") as cp:
                for i in range(1000):
                    cp.write_row(("copy", i))
            with cur.copy("copy items (v, n) from stdin (format binary)") as cp:
                cp.set_types(["text", "int4"])
                for i in range(500):
                    cp.write_row(("copy-binary", i))
            with cur.copy("copy (select v, n from items where v = %s order by n) to stdout", ("copy",)) as cp:
                rows = list(cp.rows())
        expect(len(rows) == 1000 and rows[999] == ("copy", "999"), "COPY TO STDOUT with a parameter: %d rows" % len(rows))
        expect(one(c, "select count(*) from items where v = %s", ("copy-binary",)) == 500, "binary COPY's rows")
    ok("COPY text and binary in, COPY out with a parameter")

    with psycopg.connect(dsn, prepare_threshold=0) as c:
        for i in range(20):
            c.execute("insert into items (v, n) values (%s, %s)", ("prepared", i))
        for i in range(5):
            expect(one(c, "select count(*) from items where v = %s and n = %s", ("prepared", i)) == 1, "a prepared read")
        c.commit()
        c.execute("deallocate all")
        expect(one(c, "select count(*) from items where v = %s", ("prepared",)) == 20, "prepared statements after DEALLOCATE ALL")
        c.commit()
    ok("automatic prepared statements")

    with psycopg.connect(dsn) as c:
        with c.cursor(name="big") as cur:
            cur.itersize = 7
            cur.execute("select id, v from items order by id")
            seen = sum(1 for _ in cur)
        expect(seen == one(c, "select count(*) from items"), "a server-side cursor read %d rows" % seen)
        c.commit()
    ok("server-side cursor")

    with psycopg.connect(dsn) as c:
        # (Cancelled until it ends: on a saturated machine a single cancel after 0.5 s once came before
        # the statement ran anywhere, and cancelled nothing — as it would have with PostgreSQL itself.)
        finished = threading.Event()
        t = cancel_while(c, finished)
        try:
            c.execute("select pg_sleep(10)")
            raise CheckFailed("the cancelled statement finished")
        except psycopg.errors.QueryCanceled:
            pass
        finally:
            finished.set()
            t.join(10)
        c.rollback()
        expect(one(c, "select 1") == 1, "the session goes on after a cancel")
        c.commit()
    ok("cancel")

    writer, counter = pipelined_writer(dsn, "concurrent"), row_counter(dsn, "concurrent", retries=True)
    in_threads([writer, writer, counter, counter], 6)
    with psycopg.connect(dsn, autocommit=True) as c:
        written = one(c, "select count(*) from items where v = %s", ("concurrent",))
        counted = one(c, "select count(distinct n) from counts")
    expect(written > 0 and written % 5 == 0, "pipelined transactions of 5 rows wrote %d rows" % written)
    expect(counted > 1, "the counts saw the writes at %d points only" % counted)
    ok("pipelines beside counting sessions: %d rows, %d distinct counts" % (written, counted))


def two_nodes(dsn, other):
    for round in range(3):
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("drop table if exists items, counts")
            c.execute("create table items (id serial primary key, v text not null, n int not null)")
            c.execute("create table counts (id serial primary key, n bigint not null)")

        workers = [pipelined_writer(node, "w") for node in (dsn, dsn, other, other)]
        in_threads(workers + [row_counter(dsn, "w"), row_counter(other, "w")], 8)
        with psycopg.connect(dsn, autocommit=True) as c:
            written = one(c, "select count(*) from items")
            counted = one(c, "select count(distinct n) from counts")
        expect(written > 0 and written % 5 == 0, "round %d: pipelined transactions of 5 rows wrote %d rows" % (round, written))
        expect(counted > 1, "round %d: the counts saw the writes at %d points only" % (round, counted))
        ok("round %d through two nodes: %d rows, %d distinct counts" % (round, written, counted))


CHECKS = {"pipeline": pipeline, "two-nodes": two_nodes}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] not in CHECKS:
        print("usage: %s CONNECTION_STRING {%s} [CONNECTION_STRING]" % (sys.argv[0], "|".join(CHECKS)), file=sys.stderr)
        sys.exit(2)
    try:
        CHECKS[sys.argv[2]](sys.argv[1], *sys.argv[3:])
    except CheckFailed as e:
        print("FAILED %s: %s" % (sys.argv[2], e), file=sys.stderr)
        sys.exit(1)
    except psycopg.Error as e:
        print("FAILED %s: %s (SQLSTATE %s): %s" % (sys.argv[2], type(e).__name__, e.sqlstate, e), file=sys.stderr)
        sys.exit(1)
    print("PASSED " + sys.argv[2], flush=True)
