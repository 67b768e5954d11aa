#!/usr/bin/python3
"""Clients' cancels racing their statements through pgchorus (bench/cancel-storm.sh runs it).

WORKERS sessions run short transactions (an UPDATE, a read that sleeps a random 0-4 ms, an insert
into a table with SERIAL, now() and gen_random_uuid() defaults, COMMIT; every fourth one in autocommit)
through pgchorus for SECONDS; a canceller thread cancels a random session every 0-CANCEL_GAP_MS ms (10) (psycopg2's
cancel(): libpq's CancelRequest, landing wherever the session is at that moment: before, inside or
after a statement, during the vote). Cancelled transactions are rolled back and counted. Prints one
line of counts; any error other than a cancel's (57014) or the aborted block after it (25P02) is
printed and counted as unexpected.

    cancel-storm.py DSN[;DSN…] WORKERS SECONDS

With several DSNs (one per clustering node) worker n connects through DSN n mod their count. Every
session runs with statement_timeout = 30 s: a statement stalled that long (a turn or lock never let
go) is printed and counted as unexpected, not as a cancel. STATEMENT_TIMEOUT_MS sets a shorter one
(statements held inside pgchorus, or running, then also end by it: counted as "timed out"); a stall
then shows as the run not ending (cancel-storm.sh stops it after twice its length plus a minute).
"""
import os
import random
import sys
import threading
import time

import psycopg2
import psycopg2.errors

dsns, workers, seconds = sys.argv[1].split(";"), int(sys.argv[2]), float(sys.argv[3])
timeout_ms = int(os.environ.get("STATEMENT_TIMEOUT_MS", "30000"))
setup_dsn = dsns[0] + " options='-c statement_timeout=0'"  # (its DDL may wait for the other nodes' acknowledgement)
dsns = [d + f" options='-c statement_timeout={timeout_ms}'" for d in dsns]
gap = float(os.environ.get("CANCEL_GAP_MS", "10")) / 1000
deadline = time.monotonic() + seconds
lock = threading.Lock()
counts = {"committed": 0, "cancelled": 0, "timed out": 0, "rollbacks cancelled": 0, "cancels": 0, "unexpected": 0}
conns = []

setup = psycopg2.connect(setup_dsn)
setup.autocommit = True
with setup.cursor() as c:
    c.execute("drop table if exists storm_acc, storm_log")
    c.execute("create table storm_acc (id int primary key, v bigint not null default 0)")
    c.execute("insert into storm_acc select g from generate_series(1, 100) g")
    c.execute("create table storm_log (id serial primary key, acc int, at timestamptz default now(), u uuid default gen_random_uuid())")
setup.close()


def worker(n):
    dsn = dsns[n % len(dsns)]
    conn = psycopg2.connect(dsn)
    with lock:
        conns.append(conn)
    rng = random.Random(n)
    for _ in range(10_000_000):
        if time.monotonic() > deadline:
            break
        acc = rng.randint(1, 100)
        auto = rng.random() < 0.25
        try:
            conn.autocommit = auto
            with conn.cursor() as c:
                c.execute("update storm_acc set v = v + 1 where id = %s", (acc,))
                c.execute("select pg_sleep(%s), count(*) from storm_acc where id = %s", (rng.random() * 0.004, acc))
                c.execute("insert into storm_log (acc) values (%s) returning id", (acc,))
                c.fetchone()
            if not auto:
                conn.commit()
            with lock:
                counts["committed"] += 1
        except psycopg2.errors.QueryCanceled as e:
            timed_out = "statement timeout" in str(e)
            stalled = timed_out and timeout_ms >= 30000
            with lock:
                counts["unexpected" if stalled else "timed out" if timed_out else "cancelled"] += 1
            if stalled:
                print(f"unexpected: a statement ran into the 30 s statement_timeout: {e}".strip(), flush=True)
        except psycopg2.Error as e:
            with lock:
                counts["unexpected"] += 1
            print(f"unexpected: {e.pgcode} {e}".strip(), flush=True)
        if conn.closed:
            conn = psycopg2.connect(dsn)
            with lock:
                conns.append(conn)
            continue
        # The ROLLBACK may be cancelled too (as in PostgreSQL): tried again, a few times.
        for _ in range(10):
            try:
                conn.rollback()
                break
            except psycopg2.errors.QueryCanceled:
                with lock:
                    counts["rollbacks cancelled"] += 1
    conn.close()


def canceller():
    rng = random.Random(0)
    for _ in range(10_000_000):
        if time.monotonic() > deadline:
            break
        time.sleep(rng.random() * gap)
        with lock:
            live = [c for c in conns if not c.closed]
        if live:
            try:
                rng.choice(live).cancel()
                with lock:
                    counts["cancels"] += 1
            except psycopg2.Error:
                pass


threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)] + [threading.Thread(target=canceller)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
