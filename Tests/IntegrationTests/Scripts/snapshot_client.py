#!/usr/bin/python3
"""Concurrent sessions through pgchorus whose statements read rows another session commits at the
same time (psycopg2). Each check prints `ok …` lines and ends with `PASSED <check>`; the Swift test
then looks at the backends directly: all online, identical.

summary  session A inserts into t in a loop (autocommit); session B runs
         INSERT INTO summary SELECT k, count(*) FROM t: every backend must count the same rows.
reads    session W commits one-row transactions; session R runs SELECT count(*) in a loop:
         no backend may be failed for answering a different count.
mixed    3 sessions for a bounded time: transfers in transactions that wait on each other's row locks
         (hot row), and writes that read the transfers' rows without locking them: INSERT … SELECT
         count(*), UPDATE … SET x = (SELECT … WHERE id IN (SELECT …)), UPDATE … SET x = (SELECT max(…)),
         plain reads.

The connection string may name several clustering nodes, separated by " ;; ": the sessions are then
spread over them (the first node for the writers, the last for the sessions that read their rows).
"""
import random
import sys
import time

import psycopg2
import psycopg2.errors

from checks import connect, expect, in_threads, ok, run


def nodes(dsn):
    """The connection strings of the nodes named in `dsn` (one, or several separated by " ;; ")."""
    return dsn.split(" ;; ")


def check_summary(dsn):
    writer_dsn, reader_dsn = nodes(dsn)[0], nodes(dsn)[-1]
    c = connect(writer_dsn).cursor()
    c.execute("create table t (id serial primary key, v int)")
    c.execute("create table summary (k int primary key, n bigint)")

    def inserter(stop):
        cur = connect(writer_dsn).cursor()
        for i in range(100000):
            if stop.is_set():
                return
            cur.execute("insert into t (v) values (%s)", (i,))

    done = {"n": 0}

    def summariser(stop):
        cur = connect(reader_dsn).cursor()
        for k in range(300):
            if stop.is_set():
                return
            cur.execute("insert into summary select %s, count(*) from t", (k,))
            done["n"] = k + 1
        stop.set()

    in_threads([inserter, summariser], 60)
    expect(done["n"] >= 50, "only %d summaries written" % done["n"])
    ok("%d summaries written while rows were inserted" % done["n"])


def check_reads(dsn):
    c = connect(dsn).cursor()
    c.execute("create table w (id serial primary key, v int)")
    reads = {"n": 0}

    def writer(stop):
        conn = connect(dsn, autocommit=False)
        cur = conn.cursor()
        for i in range(100000):
            if stop.is_set():
                return
            cur.execute("insert into w (v) values (%s)", (i,))
            conn.commit()

    def reader(stop):
        cur = connect(dsn).cursor()
        for k in range(2000):
            if stop.is_set():
                return
            cur.execute("select count(*) from w")
            reads["n"] = k + 1
            if k % 3 == 0:
                cur.execute("begin")
                cur.execute("select count(*), coalesce(sum(v), 0) from w")
                cur.execute("commit")
        stop.set()

    in_threads([writer, reader], 30)
    ok("%d reads while commits ran" % reads["n"])


def check_mixed(dsn):
    all_nodes = nodes(dsn)
    c = connect(all_nodes[0]).cursor()
    c.execute("create table acct (id int primary key, bal bigint not null)")
    c.execute("insert into acct select g, 0 from generate_series(1, 20) g")
    c.execute("create table hist (id serial primary key, acct int, delta int)")
    c.execute("create table stat (k serial primary key, n bigint, top bigint)")
    counts = {"tx": 0}

    def transfers(seed):
        def go(stop):
            rnd = random.Random(seed)
            conn = connect(all_nodes[seed % len(all_nodes)], autocommit=False)
            cur = conn.cursor()
            for _ in range(100000):
                if stop.is_set():
                    return
                a, d = rnd.randint(1, 20), rnd.randint(-100, 100)
                try:
                    cur.execute("update acct set bal = bal + %s where id = %s", (d, a))
                    cur.execute("update acct set bal = bal - %s where id = 1", (d,))
                    cur.execute("insert into hist (acct, delta) values (%s, %s)", (a, d))
                    conn.commit()
                    counts["tx"] += 1
                except (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure):
                    conn.rollback()
        return go

    def readers_of_others(stop):
        cur = connect(all_nodes[-1]).cursor()
        for _ in range(100000):
            if stop.is_set():
                return
            cur.execute("insert into stat (n, top) select count(*), max(id) from hist")
            cur.execute("update stat set n = (select count(*) from acct where id in (select acct from hist order by id desc limit 3)) where k = (select max(k) from stat)")
            try:
                # Waits on the transfers' row locks and reads their hist rows without locking them: when a
                # transfer commits meanwhile, the followers cannot reproduce the lead's snapshot, and
                # pgchorus answers 40001 (retry) rather than let the backends differ.
                cur.execute("update acct set bal = bal + 0 where id in (select acct from hist order by id desc limit 3)")
            except (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure) as e:
                counts["retry"] = counts.get("retry", 0) + 1
            cur.execute("update stat set top = (select max(delta) from hist) where k = (select max(k) from stat)")
            cur.execute("select count(*), sum(bal) from acct")

    in_threads([transfers(1), transfers(2), readers_of_others], 20)
    expect(counts["tx"] >= 20, "only %d transfers committed" % counts["tx"])
    ok("%d transfers committed alongside reads of their rows (%d statements to retry)" % (counts["tx"], counts.get("retry", 0)))


if __name__ == "__main__":
    sys.exit(run({"summary": check_summary, "reads": check_reads, "mixed": check_mixed}))
