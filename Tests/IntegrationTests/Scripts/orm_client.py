#!/usr/bin/python3
"""An application's schema through pgchorus (psycopg2): uuid keys defaulted by gen_random_uuid(),
created_at/updated_at defaulted by now() and kept by a trigger, a SERIAL table with a foreign key, and
concurrent sessions writing them the ways ORMs do. Prints `ok …` lines and ends with `PASSED <check>`;
the Swift test then compares the backends directly.

schema  creates the schema (CREATE EXTENSION uuid-ossp too, when it is installed).
orm     4 sessions of 25 rounds each: single and multi-row INSERT … RETURNING, upserts, updates that
        fire the trigger, transactions of several statements, COPY into the uuid table, explicit
        gen_random_uuid()/now() in VALUES; then checks every row got its own uuid and a time.
"""
import io
import random
import sys


from checks import connect, expect, in_threads, ok, run

SCHEMA = """
create table accounts (
  id uuid primary key default gen_random_uuid(),
  email text unique not null,
  score float8 not null default random(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default current_timestamp,
  day date not null default current_date
);
create table posts (
  id serial primary key,
  account_id uuid not null references accounts(id),
  ref uuid not null default gen_random_uuid(),
  title text not null,
  created_at timestamptz not null default now()
);
create function touch() returns trigger language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end $$;
create trigger accounts_touch before update on accounts for each row execute function touch();
create view recent_posts as select * from posts where created_at > now() - interval '1 hour';
"""


def check_schema(dsn):
    c = connect(dsn).cursor()
    c.execute(SCHEMA)
    c.execute("select count(*) from pg_available_extensions where name = 'uuid-ossp'")
    if c.fetchone()[0] == 1:
        c.execute('create extension if not exists "uuid-ossp"')
        # (ADD COLUMN … DEFAULT uuid_generate_v4() would fill existing rows in each backend's physical
        # order and is refused; the column first, then its default, is the way.)
        c.execute("alter table posts add column legacy uuid")
        c.execute("alter table posts alter column legacy set default uuid_generate_v4()")
        ok("uuid-ossp default")
    ok("schema with volatile defaults accepted")


def worker(dsn, n, stop):
    conn = connect(dsn)
    c = conn.cursor()
    rng = random.Random(n)
    i = 0
    while not stop.is_set() and i < 25:
        i += 1
        email = "w%d-%d@example.org" % (n, i)
        c.execute("insert into accounts (email) values (%s) returning id, created_at", (email,))
        account, created = c.fetchone()
        expect(created is not None, "no created_at")
        c.execute("insert into posts (account_id, title) values (%s, 'a'), (%s, 'b') returning id, ref", (account, account))
        expect(len(c.fetchall()) == 2, "two posts")
        if i % 3 == 0:
            c.execute("update accounts set email = email || '.x' where id = %s", (account,))
        if i % 5 == 0:
            c.execute("insert into accounts (email) values (%s) on conflict (email) do update set score = excluded.score returning id",
                      (email if i % 2 else email + ".x",))
        if i % 7 == 0:
            conn.autocommit = False
            c.execute("insert into accounts (id, email, created_at) values (gen_random_uuid(), %s, now()) returning id", ("t" + email,))
            other = c.fetchone()[0]
            c.execute("insert into posts (account_id, title) values (%s, 'in a transaction')", (other,))
            c.execute("update accounts set score = score + 1 where id = %s", (other,))
            if rng.random() < 0.2:
                conn.rollback()
            else:
                conn.commit()
            conn.autocommit = True
        if i % 25 == 0:
            data = "".join("c%d-%d-%d@example.org\n" % (n, i, k) for k in range(20))
            c.copy_expert("copy accounts (email) from stdin", io.StringIO(data))
        c.execute("select count(*) from recent_posts where account_id = %s", (account,))
        expect(c.fetchone()[0] >= 2, "recent posts")


def check_orm(dsn):
    # 25 rounds each (bounded in count; 120 s at most in all).
    in_threads([lambda stop, n=n: worker(dsn, n, stop) for n in range(4)], 120)
    c = connect(dsn).cursor()
    c.execute("select count(*), count(distinct id), count(distinct score), count(*) filter (where updated_at > created_at) from accounts")
    rows, ids, scores, touched = c.fetchone()
    expect(rows >= 100 and ids == rows, "every account its own uuid: %d rows, %d ids" % (rows, ids))
    expect(scores > rows * 0.99, "random() gives each row its own value: %d of %d" % (scores, rows))
    expect(touched > 0, "the trigger set updated_at")
    c.execute("select count(*), count(distinct ref) from posts")
    posts, refs = c.fetchone()
    expect(posts == refs, "every post its own ref")
    ok("%d accounts, %d posts, each with its own uuid" % (rows, posts))


def check_cursors(dsn):
    """Named (server-side) cursors over reads whose values differ per backend, as psycopg2's own
    tests declare them: the cursor lives on the lead alone, FETCH/MOVE/CLOSE go there, no backend is
    failed; a named cursor over data still runs everywhere."""
    conn = connect(dsn, autocommit=False)
    cur = conn.cursor("ticks")
    cur.itersize = 3
    cur.execute("select clock_timestamp(), g from generate_series(1, 10) g")
    rows = list(cur)
    expect([r[1] for r in rows] == list(range(1, 11)), "ten rows in three-row fetches: %r" % [r[1] for r in rows])
    cur.close()
    scroll = conn.cursor("Scroll Me", scrollable=True)
    scroll.execute("select random(), g from generate_series(1, 5) g")
    scroll.scroll(3)
    expect(scroll.fetchone()[1] == 4, "MOVE then FETCH on the lead")
    scroll.scroll(0, mode="absolute")
    expect(scroll.fetchone()[1] == 1, "scrolled back")
    scroll.close()
    conn.commit()
    held = conn.cursor("held", withhold=True)
    held.execute("select pg_backend_pid(), g from generate_series(1, 4) g")
    conn.commit()
    expect(len(held.fetchall()) == 4, "a WITH HOLD cursor over pg_backend_pid() reads after COMMIT")
    held.close()
    conn.commit()
    c = conn.cursor()
    c.execute("create table nums (n int primary key)")
    c.execute("insert into nums select generate_series(1, 20)")
    conn.commit()
    data = conn.cursor("data")
    data.execute("select n from nums order by n")
    expect(sum(r[0] for r in data) == 210, "a named cursor over data")
    data.close()
    conn.commit()
    ok("named cursors over clock_timestamp(), random() and pg_backend_pid(), scrolled and held, and over data")


if __name__ == "__main__":
    sys.exit(run({"schema": check_schema, "orm": check_orm, "cursors": check_cursors}))
