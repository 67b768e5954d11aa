#if canImport(Glibc)
import Glibc
#endif

/// A diagnostic trace of the order of statements and commits on each backend, for investigating the
/// cluster-wide order (`bench/order-trace.py` reads it). Off unless `PGCHORUS_ORDER_TRACE` names a
/// file: every node appends one line per event, stamped with the system-wide monotonic clock, so the
/// traces of several nodes on one machine merge into one timeline. Events (after `<ns> <node>`):
/// `W s<session> <seq> <backend>@<pid> <sql>` a client statement written to a backend, `D`/`X` the
/// same finished there / replaced by the lead's outcome, `CP s<session> <gid> <backend>@<pid> <sql>`
/// and `CD` a COMMIT/ROLLBACK PREPARED written and finished, `H <hold>` the cluster-wide hold reached,
/// `CANCEL`/`DOOM s<session> <seq>`, `P <backend> <pid:type:event:blockers …>` what the probe saw;
/// the schedule's turns: `ER s<session> <ticket> <kind> now|waits <sql>` asked, `EG [tickets] …` granted
/// later (with the hold, the wanted hold and whether another node waits), `EE <ticket>` ended, `PK
/// [tickets]` parked, `HW <want> held=<hold>` the order thread moving; the sequence turn: `SW` wanted,
/// `SG` granted, `SL`/`ST`/`SU` its cluster-wide lock asked, taken, released; `KH`/`KA` DDL held for
/// the peers' acknowledgement and acknowledged; the client's side: `CR s<session> held=… <what holds>`
/// a Sync or Query from the client (and whether the session holds it), `RQ` a ReadyForQuery written
/// to the client, `RF` flushed to it.
enum OrderTrace {
    static let fd: Int32 = {
        guard let path = getenv("PGCHORUS_ORDER_TRACE").map({ String(cString: $0) }), !path.isEmpty else { return -1 }
        return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    }()
    static var enabled: Bool { fd >= 0 }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// One event: `<ns> <node> <what> <fields…>`.
    static func note(_ node: String, _ what: String, _ fields: String) {
        guard fd >= 0 else { return }
        // One write(2) per line on an O_APPEND descriptor: lines of several nodes never mix.
        var line = "\(now()) \(node) \(what) \(fields)\n"
        line.withUTF8 { _ = write(fd, $0.baseAddress, $0.count) }
    }

    /// A statement's SQL on one line, at most 60 characters.
    static func clip(_ s: String) -> String {
        let one = s.split(whereSeparator: { $0 == "\n" || $0 == "\t" || $0 == "\r" }).joined(separator: " ")
        return String(one.prefix(60))
    }
}
