#!/usr/bin/python3
"""Every kind of COMMIT through pgchorus (psycopg2): transactions PostgreSQL cannot PREPARE (NOTIFY,
pg_notify(), LISTEN, a WITH HOLD cursor) commit; a notification reaches a listener once, on commit
only, with the pid the notifier's connection reports (its lead backend's). Prints `ok …` lines and ends with `PASSED <check>`.
"""
import select
import sys
import time

import psycopg2

from checks import CheckFailed, connect, expect, ok, run


def notifications(conn, seconds, expected=None):
    """What the listener received within `seconds`; with `expected`, once that many have come (and
    half a second more, to see a duplicate), so a loaded machine gets a long bound at no cost."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if expected is not None and len(out) >= expected:
            deadline = min(deadline, time.monotonic() + 0.5)
            expected = None
        if select.select([conn], [], [], max(0.0, deadline - time.monotonic())) == ([], [], []):
            break
        conn.poll()
        while conn.notifies:
            out.append(conn.notifies.pop(0))
    return out


def listening(dsn, create):
    """A session listening on `jobs`, and a notifier (not autocommit) that ran `create`."""
    listener = connect(dsn)
    listener.cursor().execute("listen jobs")
    notifier = connect(dsn, autocommit=False)
    c = notifier.cursor()
    c.execute(create)
    notifier.commit()
    return listener, notifier, c


def check_commits(dsn):
    listener, notifier, c = listening(dsn, "create table jobs (id serial primary key, note text)")

    c.execute("insert into jobs (note) values ('a')")
    c.execute("notify jobs, 'first'")
    notifier.commit()
    got = notifications(listener, 15, expected=1)
    expect([n.payload for n in got] == ["first"], "one notification after COMMIT: %r" % [(n.pid, n.payload) for n in got])
    ok("NOTIFY in a transaction that wrote: committed, delivered once")
    # The pid a client is given is its lead backend's: what pg_backend_pid() and notifications say.
    c.execute("select pg_backend_pid()")
    expect(c.fetchone()[0] == notifier.get_backend_pid(), "pg_backend_pid() is the pid the connection reports")
    notifier.rollback()
    expect(got[0].pid == notifier.get_backend_pid(), "the notification carries the notifier's pid: %d vs %d" % (got[0].pid, notifier.get_backend_pid()))
    ok("the client's pid is the lead backend's")

    c.execute("insert into jobs (note) values ('b')")
    c.execute("select pg_notify('jobs', 'rolled back')")
    notifier.rollback()
    got = notifications(listener, 1)
    expect(got == [], "nothing after ROLLBACK: %r" % [n.payload for n in got])
    ok("pg_notify() then ROLLBACK: nothing delivered")

    notifier.autocommit = True
    c.execute("select pg_notify('jobs', 'autocommit')")
    expect(c.fetchone() == ("",), "pg_notify returns its row")
    got = notifications(listener, 15, expected=1)
    expect([n.payload for n in got] == ["autocommit"], "autocommit pg_notify: %r" % [n.payload for n in got])
    ok("autocommit pg_notify(): one row, no error, delivered once")

    notifier.autocommit = False
    c.execute("listen other")
    c.execute("insert into jobs (note) values ('c')")
    notifier.commit()
    c.execute("unlisten other")
    notifier.commit()
    ok("LISTEN and UNLISTEN in transactions commit")

    c.execute("insert into jobs (note) values ('d')")
    c.execute("declare held cursor with hold for select id, note from jobs order by id")
    notifier.commit()
    c.execute("fetch all from held")
    expect([r[1] for r in c.fetchall()] == ["a", "c", "d"], "the held cursor reads after COMMIT")
    c.execute("close held")
    notifier.commit()
    ok("a WITH HOLD cursor commits and stays readable")

    c.execute("select count(*) from jobs")
    expect(c.fetchone()[0] == 3, "three jobs")
    notifier.commit()


def fails_with(cursor, sql, error, what):
    """Runs `sql`, which must fail with `error` (a psycopg2 exception class)."""
    try:
        cursor.execute(sql)
    except error:
        return
    raise CheckFailed(what)


def commit_log_rows(cursor):
    cursor.execute("select count(*) from pgchorus.commit_log")
    return cursor.fetchone()[0]


def check_trailing(dsn):
    """A COMMIT sent with its statements in one message goes through the vote (a row in the
    commit log), from idle (`BEGIN; …; COMMIT`) and inside a transaction (`…; COMMIT`); a statement
    that fails before it leaves the transaction aborted and commits nothing, as on one server."""
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE, TRANSACTION_STATUS_INERROR
    conn = connect(dsn)
    c = conn.cursor()
    c.execute("create table acct (id int primary key, v int not null)")
    before = commit_log_rows(c)
    c.execute("BEGIN; INSERT INTO acct VALUES (1, 10), (2, 20); UPDATE acct SET v = v + 1 WHERE id = 1; COMMIT")
    expect(c.statusmessage == "COMMIT", "the last answer is COMMIT's: %r" % c.statusmessage)
    expect(conn.get_transaction_status() == TRANSACTION_STATUS_IDLE, "idle after the COMMIT")
    expect(commit_log_rows(c) == before + 1, "BEGIN; …; COMMIT went through the vote")
    ok("BEGIN; INSERT; UPDATE; COMMIT in one message: committed through the vote")
    c.execute("create table serials (id serial primary key, note text)")
    c.execute("BEGIN; INSERT INTO serials (note) VALUES ('x'), ('y'); COMMIT")
    expect(commit_log_rows(c) == before + 2, "a SERIAL insert with its COMMIT went through the vote")
    before += 1

    tx = connect(dsn, autocommit=False)
    t = tx.cursor()
    t.execute("UPDATE acct SET v = v + 5 WHERE id = 2; COMMIT")
    expect(tx.get_transaction_status() == TRANSACTION_STATUS_IDLE, "idle after …; COMMIT")
    expect(commit_log_rows(c) == before + 2, "…; COMMIT inside a transaction went through the vote")
    tx.close()
    ok("UPDATE; COMMIT in one message inside a transaction: committed through the vote")

    fails_with(c, "BEGIN; UPDATE acct SET v = 0 WHERE id = 1; INSERT INTO acct VALUES (1, 0); COMMIT", psycopg2.IntegrityError,
               "a duplicate key before the COMMIT did not fail")
    expect(conn.get_transaction_status() == TRANSACTION_STATUS_INERROR, "the transaction is aborted, not committed")
    c.execute("ROLLBACK")
    c.execute("select id, v from acct order by id")
    rows = c.fetchall()
    expect(rows == [(1, 11), (2, 25)], "nothing of the failed message committed: %r" % rows)
    expect(commit_log_rows(c) == before + 2, "no vote for the failed message")
    ok("a failing statement before the COMMIT: error, transaction aborted, nothing committed")


def check_large_objects(dsn):
    """Large objects created without an OID (libpq's lo_create(0)): the client gets one OID, and
    reads back what it wrote."""
    conn = connect(dsn, autocommit=False)
    oids = []
    for i in range(3):
        lo = conn.lobject(0, "wb")
        lo.write(b"payload %d" % i)
        oids.append(lo.oid)
        lo.close()
    conn.commit()
    for i, oid in enumerate(oids):
        lo = conn.lobject(oid, "rb")
        data = lo.read()
        lo.close()
        expect(data == b"payload %d" % i, "large object %d reads back %r" % (oid, data))
    conn.commit()
    ok("three large objects created and read back: %s" % ",".join(str(o) for o in oids))


def check_notify_vote(dsn):
    """NOTIFY and pg_notify() in a transaction are held by pgchorus until the vote has committed:
    the COMMIT goes through the vote (a commit-log row), listeners get them once, in order, only
    after the commit, never on rollback; a savepoint sends the held ones into the transaction."""
    listener, n, c = listening(dsn, "create table queue (id int primary key)")
    before = commit_log_rows(c)
    n.commit()
    c.execute("insert into queue values (1)")
    c.execute("notify jobs, 'one'")
    expect(c.statusmessage == "NOTIFY", "NOTIFY answers NOTIFY: %r" % c.statusmessage)
    c.execute("select pg_notify('jobs', 'two')")
    expect(c.fetchone() == ("",), "pg_notify() answers one void row")
    expect(notifications(listener, 1) == [], "nothing before the COMMIT")
    n.commit()
    got = notifications(listener, 15, expected=2)
    expect([x.payload for x in got] == ["one", "two"], "both, once, in order, after the COMMIT: %r" % [x.payload for x in got])
    expect(got[0].pid == n.get_backend_pid(), "with the notifier's pid")
    expect(commit_log_rows(c) == before + 1, "the transaction went through the vote")
    n.commit()
    ok("NOTIFY and pg_notify() held until the vote committed, then delivered once, in order")

    c.execute("notify jobs, 'alone'")
    n.commit()
    got = notifications(listener, 15, expected=1)
    expect([x.payload for x in got] == ["alone"], "a transaction that only notifies: %r" % [x.payload for x in got])
    c.execute("notify jobs, 'never'")
    n.rollback()
    expect(notifications(listener, 1) == [], "nothing after ROLLBACK")
    ok("a transaction that only notifies commits and notifies; a rolled-back one does not")

    c.execute("notify jobs, 'before the savepoint'")
    c.execute("savepoint s")
    c.execute("notify jobs, 'rolled back to the savepoint'")
    c.execute("rollback to savepoint s")
    n.commit()
    got = notifications(listener, 15, expected=1)
    expect([x.payload for x in got] == ["before the savepoint"], "savepoints as in PostgreSQL: %r" % [x.payload for x in got])
    ok("a savepoint: the held notification goes into the transaction, ROLLBACK TO drops the later one")


def check_trigger_notify(dsn):
    """A trigger that notifies, as job queues' do: its pg_notify is defined as pgchorus.pg_notify,
    which holds the notification in the transaction while it waits for the vote, so the writes are
    voted; the listener gets each notification once, in order, after the commit, with the notifier's
    pid; none on rollback, none from a rolled-back savepoint; a transaction that cannot be voted (it
    ran LISTEN) notifies at its commit, as PostgreSQL does; an autocommit COPY is voted like the rest."""
    import io
    listener, n, c = listening(dsn, """
        create table tasks (id serial primary key, note text not null);
        create function tasks_notify() returns trigger language plpgsql as $$
        begin perform pg_notify('jobs', new.note); return new; end $$;
        create trigger tasks_notify after insert on tasks for each row execute function tasks_notify()""")
    control = connect(dsn)
    k = control.cursor()
    k.execute("select prosrc from pg_proc where proname = 'tasks_notify'")
    expect("pgchorus.pg_notify(" in k.fetchone()[0], "the trigger's pg_notify is defined as pgchorus.pg_notify")
    votes = commit_log_rows(k)

    def received(expected, what):
        got = notifications(listener, 15, expected=len(expected))
        expect([x.payload for x in got] == expected, "%s: %r" % (what, [x.payload for x in got]))
        expect(all(x.pid == n.get_backend_pid() for x in got), "%s: the notifier's pid" % what)

    c.execute("insert into tasks (note) values ('t1')")
    c.execute("update tasks set note = note where id = 1")
    n.commit()
    received(["t1"], "the trigger's notification after COMMIT")
    expect(commit_log_rows(k) == votes + 1, "the transaction went through the vote")
    ok("a notifying trigger in a transaction: voted, notified once after the commit")

    n.autocommit = True
    c.execute("insert into tasks (note) values ('t2')")
    received(["t2"], "in autocommit")
    expect(commit_log_rows(k) == votes + 2, "the autocommit insert went through the vote")
    n.autocommit = False
    c.execute("insert into tasks (note) values ('t3')")
    n.rollback()
    expect(notifications(listener, 1) == [], "nothing after ROLLBACK")
    ok("autocommit: voted and notified; ROLLBACK: nothing")

    c.execute("insert into tasks (note) values ('t4')")
    c.execute("savepoint s")
    c.execute("insert into tasks (note) values ('t5')")
    c.execute("rollback to savepoint s")
    c.execute("insert into tasks (note) values ('t6')")
    n.commit()
    received(["t4", "t6"], "around a rolled-back savepoint")
    c.execute("insert into tasks (note) select 'bulk ' || g from generate_series(1, 300) g")
    n.commit()
    received(["bulk %d" % g for g in range(1, 301)], "300 rows in one statement")
    expect(commit_log_rows(k) == votes + 4, "both transactions went through the vote")
    ok("a rolled-back savepoint drops its notifications; 300 in one statement arrive in order; voted")

    c.execute("listen other")
    c.execute("insert into tasks (note) values ('t7')")
    n.commit()
    received(["t7"], "a transaction that cannot be voted (LISTEN)")
    c.execute("unlisten other")
    n.commit()
    n.autocommit = True
    expect(commit_log_rows(k) == votes + 4, "the LISTEN transaction did not go through the vote")
    c.copy_expert("copy tasks (note) from stdin", io.StringIO("t8\n"))
    received(["t8"], "an autocommit COPY")
    expect(commit_log_rows(k) == votes + 5, "the autocommit COPY went through the vote")
    ok("without the vote (LISTEN in the transaction), and an autocommit COPY with it: notified at the commit, once")

    k.execute("select count(*) from pgchorus.held_notifications")
    expect(k.fetchone()[0] == 0, "nothing left held")
    c.execute("select string_agg(note, ',' order by id) from tasks where note not like 'bulk%'")
    expect(c.fetchone()[0] == "t1,t2,t4,t6,t7,t8", "the committed rows")


def check_terminate(dsn):
    """pg_terminate_backend() by the pids pgchorus gives: the session ends as on one server."""
    control = connect(dsn)
    c = control.cursor()
    for i in range(3):
        victim = connect(dsn)
        v = victim.cursor()
        v.execute("select pg_backend_pid()")
        pid = v.fetchone()[0]
        expect(pid == victim.get_backend_pid(), "pg_backend_pid() is the connection's pid")
        c.execute("select pg_terminate_backend(%s)", (pid,))
        expect(c.fetchone() == (True,), "the lead terminated the victim's process")
        try:
            for _ in range(50):
                v.execute("select 1")
                time.sleep(0.1)
            raise CheckFailed("the terminated session still answers")
        except psycopg2.OperationalError:
            pass
        expect(victim.closed == 2, "the victim's connection is broken")
    ok("a session terminated by its pid from another session ends")
    own = connect(dsn).cursor()
    try:
        own.execute("select pg_terminate_backend(pg_backend_pid())")
        raise CheckFailed("the session survived terminating itself")
    except psycopg2.OperationalError:
        pass
    expect(own.connection.closed == 2, "closed after terminating itself")
    ok("pg_terminate_backend(pg_backend_pid()) ends the session")
    c.execute("select pg_cancel_backend(0)")
    c.execute("select 42")
    expect(c.fetchone() == (42,), "the control session goes on")


def check_middle(dsn):
    """A COMMIT in the middle of one message (`BEGIN; …; COMMIT; BEGIN; …; COMMIT`, `…; COMMIT; SELECT`):
    each part's COMMIT goes through the vote; the client gets one answer, the last statement's; an
    error skips the rest of the message, as on one server; ROLLBACK in the middle undoes its part."""
    from psycopg2.extensions import TRANSACTION_STATUS_IDLE, TRANSACTION_STATUS_INERROR
    conn = connect(dsn)
    c = conn.cursor()
    c.execute("create table mid (id int primary key, note text)")
    before = commit_log_rows(c)
    c.execute("BEGIN; INSERT INTO mid VALUES (1, 'a'); COMMIT; BEGIN; INSERT INTO mid VALUES (2, 'b'); "
              "UPDATE mid SET note = 'a2' WHERE id = 1; COMMIT")
    expect(c.statusmessage == "COMMIT", "the last answer is the second COMMIT's: %r" % c.statusmessage)
    expect(conn.get_transaction_status() == TRANSACTION_STATUS_IDLE, "idle after the message")
    expect(commit_log_rows(c) == before + 2, "each COMMIT of the message went through the vote")
    ok("BEGIN; …; COMMIT; BEGIN; …; COMMIT in one message: two votes, one answer")

    c.execute("BEGIN; INSERT INTO mid VALUES (3, 'c'); COMMIT; SELECT count(*), string_agg(note, ',' ORDER BY id) FROM mid")
    expect(c.fetchall() == [(3, "a2,b,c")], "the SELECT after the COMMIT sees the part committed before it")
    expect(commit_log_rows(c) == before + 3, "one more vote")
    ok("BEGIN; INSERT; COMMIT; SELECT in one message: voted, the rows of the SELECT returned")

    c.execute("BEGIN; INSERT INTO mid VALUES (4, 'rolled back'); ROLLBACK; BEGIN; INSERT INTO mid VALUES (5, 'e'); COMMIT")
    c.execute("select array_agg(id order by id) from mid")
    expect(c.fetchone()[0] == [1, 2, 3, 5], "the part before ROLLBACK is undone, the one after committed")
    expect(commit_log_rows(c) == before + 4, "the COMMIT after a ROLLBACK went through the vote")
    ok("…; ROLLBACK; BEGIN; …; COMMIT in one message: the first part undone, the second voted")

    fails_with(c, "BEGIN; INSERT INTO mid VALUES (6, 'f'); COMMIT; BEGIN; INSERT INTO mid VALUES (1, 'dup'); COMMIT; "
               "INSERT INTO mid VALUES (7, 'skipped')", psycopg2.IntegrityError,
               "a duplicate key in the second part did not fail")
    expect(conn.get_transaction_status() == TRANSACTION_STATUS_INERROR, "the second part's transaction is aborted")
    c.execute("ROLLBACK")
    c.execute("select array_agg(id order by id) from mid")
    expect(c.fetchone()[0] == [1, 2, 3, 5, 6], "the first part committed, the failed part and the rest of the message not")
    expect(commit_log_rows(c) == before + 5, "one vote: the first part's")
    ok("an error in the second part: the first part committed, the rest of the message skipped")

    fails_with(c, "INSERT INTO mid VALUES (1, 'dup'); COMMIT; INSERT INTO mid VALUES (8, 'skipped')", psycopg2.IntegrityError,
               "a duplicate key in the first part did not fail")
    expect(conn.get_transaction_status() == TRANSACTION_STATUS_IDLE, "idle: the message's implicit transaction rolled back")
    fails_with(c, "COMMIT; VACUUM mid", psycopg2.errors.ActiveSqlTransaction,
               "VACUUM after COMMIT in one message ran (PostgreSQL refuses it in a multi-statement message)")
    c.execute("select array_agg(id order by id) from mid")
    expect(c.fetchone()[0] == [1, 2, 3, 5, 6], "nothing of the failed messages")
    ok("an error in the first part skips the rest; COMMIT; VACUUM fails as on one server")

    for i in range(20):
        c.execute("BEGIN; UPDATE mid SET note = note || '+' WHERE id = 1; COMMIT; BEGIN; UPDATE mid SET note = note || '-' WHERE id = 1; COMMIT")
    c.execute("select note from mid where id = 1")
    expect(c.fetchone()[0] == "a2" + "+-" * 20, "twenty messages of two parts each, in order")
    expect(commit_log_rows(c) == before + 45, "forty more votes")
    ok("twenty two-part messages updating one row: in order, each part voted")


if __name__ == "__main__":
    sys.exit(run({"commits": check_commits, "terminate": check_terminate, "trailing": check_trailing,
                  "largeobjects": check_large_objects, "notify-vote": check_notify_vote,
                  "trigger-notify": check_trigger_notify, "middle": check_middle}))
