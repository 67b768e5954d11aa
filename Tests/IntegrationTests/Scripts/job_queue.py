"""A job queue through pgchorusd, as job-queue libraries run one: workers take their next job with
SELECT … FOR UPDATE SKIP LOCKED and mark it by key in the same transaction; the one-statement form
(UPDATE … WHERE id = (SELECT … SKIP LOCKED)) must be refused. Then leader election with
pg_try_advisory_lock(); a try-lock inside a write must be refused. Prints PASSED and exits 0 when
every job was taken exactly once, every round counted once, and both refusals came."""
import sys
import threading
import time

import psycopg2

dsn, workers, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 60
setup = psycopg2.connect(dsn)
setup.autocommit = True
cur = setup.cursor()
cur.execute("create table jobs (id int primary key, taken bool not null default false, worker int, taken_at timestamptz)")
cur.execute("insert into jobs (id) select g from generate_series(1, %s) g", (workers * per,))
errors = []
taken = []


def run_all(target):
    """Runs `target(w)` in one thread per worker, each joined within the deadline."""
    threads = [threading.Thread(target=target, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, deadline + 10 - time.monotonic()))


def refused_naming(sql, what):
    """Whether pgchorusd refuses `sql` (0A000) naming `what`."""
    try:
        cur.execute(sql)
    except psycopg2.Error as e:
        return e.pgcode == "0A000" and what in str(e)
    return False


def work(w):
    try:
        conn = psycopg2.connect(dsn)
        for _ in range(per):
            if time.monotonic() > deadline:
                errors.append(f"worker {w}: out of time")
                return
            with conn:
                with conn.cursor() as k:
                    k.execute("select id from jobs where not taken order by id limit 1 for update skip locked")
                    row = k.fetchone()
                    if row is None:
                        errors.append(f"worker {w}: no job left")
                        return
                    k.execute("update jobs set taken = true, worker = %s, taken_at = now() where id = %s and not taken", (w, row[0]))
                    if k.rowcount != 1:
                        errors.append(f"worker {w}: job {row[0]} was taken twice")
                    taken.append(row[0])
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        errors.append(f"worker {w}: {e}")


run_all(work)
cur.execute("select count(*) filter (where taken), count(distinct worker) from jobs")
done, by = cur.fetchone()
refused = refused_naming("update jobs set worker = 0 where id = (select id from jobs order by id limit 1 for update skip locked)", "SKIP LOCKED")

# Leader election with a session advisory lock, as schedulers run it: whoever gets the lock does the
# round's work, then lets go. Each backend would answer the try-lock by its own sessions' locks.
cur.execute("create table rounds (id int primary key, n int not null)")
cur.execute("insert into rounds values (1, 0)")
led = []


def elect(w):
    try:
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        k = conn.cursor()
        for _ in range(per):
            if time.monotonic() > deadline:
                errors.append(f"elector {w}: out of time")
                return
            k.execute("select pg_try_advisory_lock(7451)")
            if k.fetchone()[0]:
                k.execute("update rounds set n = n + 1 where id = 1")
                led.append(w)
                k.execute("select pg_advisory_unlock(7451)")
                if not k.fetchone()[0]:
                    errors.append(f"elector {w}: the lock it held was not its own")
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        errors.append(f"elector {w}: {e}")


run_all(elect)
cur.execute("select n from rounds where id = 1")
rounds = cur.fetchone()[0]
claim_refused = refused_naming("update rounds set n = 0 where id = 1 and pg_try_advisory_lock(id)", "pg_try_advisory_lock()")
print("errors", errors[:3])
print("taken", done, "distinct", len(set(taken)), "workers", by, "refused", refused)
print("rounds", rounds, "led", len(led), "claim refused", claim_refused)
ok = (not errors and done == workers * per and len(set(taken)) == workers * per and refused
      and rounds == len(led) and len(led) > 0 and claim_refused)
print("PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
