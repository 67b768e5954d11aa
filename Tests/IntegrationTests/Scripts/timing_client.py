#!/usr/bin/python3
"""Timing outcomes through pgchorus with psycopg2: cancels, timeouts, lock waits, deadlocks and a
cancelled COPY. Each check prints `ok …` lines and the script ends with `PASSED <check>`; the Swift
test then looks at the backends directly (all online, identical)."""
import io
import sys
import threading
import time

import psycopg2
import psycopg2.errors


from checks import CheckFailed, cancel_while, connect, expect, ok, run


def expect_error(cur, sql, pgcode, args=None):
    try:
        cur.execute(sql, args)
    except psycopg2.Error as e:
        expect(e.pgcode == pgcode, "%s: got %s %s, expected %s" % (sql, e.pgcode, e, pgcode))
        return e
    raise CheckFailed("%s succeeded; expected %s" % (sql, pgcode))


def check_timing(dsn):
    setup = connect(dsn)
    cur = setup.cursor()
    cur.execute("create table acct (id int primary key, v int not null)")
    cur.execute("insert into acct select g, 0 from generate_series(1, 10) g")
    cur.execute("create table log (id serial primary key, note text)")

    # 1. A cancelled autocommit write: the lead rolls it back, nobody else runs it.
    conn = connect(dsn)
    c = conn.cursor()
    finished = threading.Event()
    t = cancel_while(conn, finished)
    expect_error(c, "insert into log (note) select 'cancelled' from pg_sleep(10)", "57014")
    finished.set()
    t.join(10)
    c.execute("insert into log (note) values ('after cancel')")
    ok("cancelled autocommit insert 57014, the session goes on")

    # 2. A cancel inside a transaction block: the transaction is aborted everywhere.
    conn.autocommit = False
    c.execute("update acct set v = v + 1 where id = 1")
    finished = threading.Event()
    t = cancel_while(conn, finished)
    expect_error(c, "select pg_sleep(10)", "57014")
    finished.set()
    t.join(10)
    expect_error(c, "select 1", "25P02")
    conn.rollback()
    c.execute("update acct set v = v + 10 where id = 1")
    conn.commit()
    ok("cancel in a transaction block 57014, then 25P02, rollback, commit")

    # 3. statement_timeout on a write, in autocommit and in a block.
    conn.autocommit = True
    c.execute("set statement_timeout = '300ms'")
    expect_error(c, "update acct set v = v + 100 where id = 2 and pg_sleep(2) is not null", "57014")
    conn.autocommit = False
    c.execute("update acct set v = v + 1 where id = 3")
    expect_error(c, "update acct set v = v + 100 where id = 3 and pg_sleep(2) is not null", "57014")
    conn.rollback()
    c.execute("set statement_timeout = 0")
    conn.commit()
    ok("statement_timeout 57014 in autocommit and in a block")

    # 4. lock_timeout: another session holds the row.
    holder = connect(dsn, autocommit=False)
    h = holder.cursor()
    h.execute("update acct set v = v + 1000 where id = 4")
    conn.autocommit = True
    c.execute("set lock_timeout = '300ms'")
    expect_error(c, "update acct set v = v + 1 where id = 4", "55P03")
    expect_error(c, "select * from acct where id = 4 for update nowait", "55P03")
    c.execute("set lock_timeout = 0")
    holder.commit()
    c.execute("update acct set v = v + 1 where id = 4")
    ok("lock_timeout and NOWAIT 55P03")

    # 5. A deadlock between two sessions: one of them gets 40P01, the other commits.
    a = connect(dsn, autocommit=False)
    b = connect(dsn, autocommit=False)
    ac, bc = a.cursor(), b.cursor()
    ac.execute("update acct set v = v + 1 where id = 5")
    bc.execute("update acct set v = v + 1 where id = 6")
    errors = []

    def b_side():
        try:
            bc.execute("update acct set v = v + 1 where id = 5")
            b.commit()
        except psycopg2.Error as e:
            errors.append(("b", e.pgcode))
            b.rollback()
    t = threading.Thread(target=b_side, daemon=True)
    t.start()
    time.sleep(0.5)
    try:
        ac.execute("update acct set v = v + 1 where id = 6")
        a.commit()
    except psycopg2.Error as e:
        errors.append(("a", e.pgcode))
        a.rollback()
    t.join(30)
    expect(not t.is_alive(), "the deadlock was not resolved within 30 s")
    expect([code for _, code in errors] == ["40P01"], "deadlock outcomes %r, expected one 40P01" % errors)
    ok("deadlock: one 40P01, the other committed")

    # 6. Serialization failure.
    a.set_session(isolation_level="SERIALIZABLE")
    b.set_session(isolation_level="SERIALIZABLE")
    ac.execute("select sum(v) from acct")
    bc.execute("select sum(v) from acct")
    ac.execute("update acct set v = v + 1 where id = 7")
    bc.execute("update acct set v = v + 1 where id = 8")
    a.commit()
    try:
        b.commit()
        serialization = None
    except psycopg2.Error as e:
        serialization = e.pgcode
        b.rollback()
    expect(serialization == "40001", "second serializable commit gave %r, expected 40001" % serialization)
    ok("serialization failure 40001")

    c.execute("insert into log (note) values ('done')")
    for x in (a, b, holder, conn, setup):
        x.close()


class SlowRows(io.RawIOBase):
    """COPY data that keeps coming slowly, so the COPY is still running when it is cancelled."""

    def __init__(self):
        self.n = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.n >= 200:
            return 0
        self.n += 1
        time.sleep(0.05)
        data = b"".join(b"%d\trow %d\n" % (self.n * 100 + i, i) for i in range(100))
        buffer[:len(data)] = data
        return len(data)


def check_copy_cancel(dsn):
    conn = connect(dsn)
    c = conn.cursor()
    c.execute("create table copied (id int primary key, note text)")
    finished = threading.Event()
    t = cancel_while(conn, finished)
    try:
        c.copy_expert("copy copied from stdin", io.BufferedReader(SlowRows(), 1 << 16))
        raise CheckFailed("the COPY finished; the cancel had no effect")
    except psycopg2.errors.QueryCanceled:
        pass
    finished.set()
    t.join(10)
    c.execute("select count(*) from copied")
    n = c.fetchone()[0]
    expect(n == 0, "%d rows after a cancelled COPY" % n)
    c.execute("insert into copied values (1, 'after')")
    ok("cancelled COPY 57014, nothing copied, the session goes on")
    conn.close()


def check_idle_cancel(dsn):
    """A cancel sent while nothing runs cancels nothing, and never the statement sent right after it:
    libpq's cancel returns once the server has taken it, so pgchorus answers only once every backend has."""
    conn = connect(dsn)
    c = conn.cursor()
    for i in range(40):
        c.execute("select 1")
        conn.cancel()
        c.execute("select pg_sleep(0.05)")
    ok("40 cancels while idle, none landed on the next statement")


CHECKS = {"timing": check_timing, "copy-cancel": check_copy_cancel, "idle-cancel": check_idle_cancel}



if __name__ == "__main__":
    sys.exit(run(CHECKS))
