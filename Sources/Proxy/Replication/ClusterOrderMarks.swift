/// The numbers the holders of the cluster-wide sequence lock take and give back on the lead backend
/// (two sequences of pgchorus' schema, `pgchorus.order_taken` and `pgchorus.order_released`), so
/// that a holder can tell whether the one before it released the lock or died holding it. The lock
/// is a session-level advisory lock: a node that dies (SIGKILL, a host lost) lets it go when its
/// connections close, perhaps after its statement drew sequence values on the lead and not on a
/// follower. Sequences are not transactional: the numbers stay whatever befalls the transactions
/// around them. Only a holder of the lock touches them.
enum ClusterOrderMarks {
    /// Run right after the lock is taken, in the same Query: this holder's number and the last one
    /// released (NULL when never, or when the sequences are missing: `to_regclass` gives NULL and
    /// both functions are strict). No number in a read-only transaction, where `nextval` is refused
    /// — and where no statement can draw sequence values, so a holder dying there diverges nothing.
    /// (Refused, it would leave the lock, just taken, held for good: the lock's refusal lets nothing go.)
    static let takeSQL = "SELECT CASE WHEN \(writable) THEN pg_catalog.nextval(pg_catalog.to_regclass('pgchorus.order_taken')) END, "
        + "pg_catalog.pg_sequence_last_value(pg_catalog.to_regclass('pgchorus.order_released'))"

    /// The transaction may write (`nextval`/`setval` are refused otherwise; CASE runs only the branch taken).
    static let writable = "pg_catalog.current_setting('transaction_read_only') = 'off'"

    /// Run right before the lock is let go, in the same Query (with the trailing "; "): a number given
    /// back — `nextval`, which writes WAL (and so makes its transaction take an xid and flush at
    /// commit) once in 32 calls; after a holder that did not give its number back (`realign`), this
    /// holder's number set there (`setval`, which always writes WAL), so the next holder finds the
    /// two in step again. Empty when the holder has no number.
    /// (In a read-only transaction — a client's `BEGIN READ ONLY` pipelined ahead of the release —
    /// nothing is given back: the next holder resyncs once, needlessly, and realigns them.)
    static func releaseSQL(_ taken: Int64?, realign: Bool) -> String {
        guard let taken, taken > 0 else { return "" }
        if realign { return "SELECT CASE WHEN \(writable) THEN pg_catalog.setval(pg_catalog.to_regclass('pgchorus.order_released'), \(taken)) END; " }
        return "SELECT CASE WHEN \(writable) THEN pg_catalog.nextval(pg_catalog.to_regclass('pgchorus.order_released')) END; "
    }

    /// The holder before `taken` released its number (or there was none). (Both sequences also jump
    /// ahead alike or not after a crash of the lead's server — values logged ahead are lost: at worst
    /// one needless resync, which realigns them.)
    static func cleanlyReleased(taken: Int64, released: Int64?) -> Bool {
        taken - 1 == (released ?? 0)
    }

    /// The sequences, in `schemaDDL`: anyone may take and give back numbers (every client's session
    /// may hold the lock). Missing privileges leave them out: the lock is then taken without numbers.
    static let schemaDDL = """
      IF to_regclass('pgchorus.order_released') IS NULL THEN
        BEGIN
          CREATE SEQUENCE IF NOT EXISTS pgchorus.order_taken;
          CREATE SEQUENCE IF NOT EXISTS pgchorus.order_released;
          GRANT USAGE, SELECT, UPDATE ON SEQUENCE pgchorus.order_taken, pgchorus.order_released TO PUBLIC;
        EXCEPTION WHEN unique_violation OR duplicate_table OR duplicate_object OR insufficient_privilege OR invalid_schema_name THEN NULL;
        END;
      END IF;
    """
}
