import Wire

/// What losing a backend means for a session once it relays (**pure**): one path whatever the phase
/// and the cause (a clean close, a FATAL, a reset, a read/write/TLS error, a missed deadline, the
/// cluster taking it out of service). While another backend is live the lost one is failed
/// cluster-wide and the session goes on; the client notices nothing unless it had already received
/// part of a lost lead's reply. Only the last backend's loss ends the session.
enum BackendLoss {
    /// The session's side of a loss.
    struct Situation {
        /// The lost backend is the session's lead.
        var isLead: Bool
        /// Live backends besides the lost one.
        var othersLive: Int
        /// The client has gone and the backends finish what they were sent (`Phase.draining`).
        var draining: Bool
        /// A FATAL already went to the client (the session is ending anyway).
        var fatalForwarded: Bool
        /// What the backend said in its FATAL, if it did ("57P01 terminating connection …").
        var lastWords: String?
        /// The node is asking whether this backend's server still serves (see `Step.checkServing`).
        var checkingTermination: Bool
        /// The node is asking that about another backend of the session (one check at a time).
        var checkingAnother = false
        /// Nothing of the client's is in flight, nor a vote, and the lost backend had finished all it
        /// was sent: the session is idle, in a transaction block or not (other backends may still be
        /// finishing cycles whose answers the client has).
        var sessionIdle = false
    }

    enum Step: Equatable {
        /// Nothing now: the answer of the running termination check decides.
        case awaitTerminationCheck
        /// The last backend is gone: the session ends, with this error for the client (nil: quietly,
        /// while draining or after a FATAL was forwarded).
        case endSession(ErrorFields?)
        /// The backend ended the session with 57P01 ("terminating connection due to administrator
        /// command"): `pg_terminate_backend()` of this session — on the lead, the client's pid is the
        /// lead's; on a follower, an operator's script ending sessions on that server — or a fast
        /// shutdown. The node asks whether the server still takes sessions; meanwhile the session
        /// waits (client messages are held).
        case checkServing
        /// Failed cluster-wide with this reason; the session goes on.
        case fail(reason: String)
    }

    /// What to do about backend `name` lost for `cause`.
    static func lost(_ s: Situation, name: String, cause: String) -> Step {
        if s.checkingTermination { return .awaitTerminationCheck }
        if let timeout = sessionTimeout(s.lastWords) {
            // Every backend ends the idle session at once: once the client has its FATAL (another
            // backend's, forwarded) or the session is ending, the others' ends fail nobody either
            // (until 2026-12-06 a backend whose close came after the last one's forwarded FATAL was failed).
            if s.draining || s.fatalForwarded { return .endSession(nil) }
            if s.sessionIdle { return .endSession(timeout) }
        }
        if s.othersLive == 0 {
            if s.draining || s.fatalForwarded { return .endSession(nil) }
            return .endSession(ErrorFields(severity: "FATAL", sqlState: "08006",
                                           message: "pgchorus lost the connection to backend \(name): \(cause)"))
        }
        // (Until 2026-12-06 only the lead's: a follower whose session an operator's script ended there
        // — `pg_terminate_backend` of every session of a role, on each server — was failed.)
        if !s.draining, !s.checkingAnother, s.lastWords?.hasPrefix("57P01") == true { return .checkServing }
        return .fail(reason: reason(lastWords: s.lastWords, cause: cause))
    }

    /// The answer for a backend that ended the session with 57P01: a server that still serves ended
    /// this session alone, which then ends as PostgreSQL's would and fails no backend; otherwise the
    /// backend is failed like any lost backend.
    static func terminationChecked(serving: Bool, lastWords: String?, cause: String) -> Step {
        if serving {
            return .endSession(ErrorFields(severity: "FATAL", sqlState: "57P01", message: "terminating connection due to administrator command"))
        }
        return .fail(reason: reason(lastWords: lastWords, cause: cause))
    }

    /// The FATALs of the session timeouts a client sets — `idle_in_transaction_session_timeout`
    /// (25P03), `idle_session_timeout` (57P05), PostgreSQL 17's `transaction_timeout` (25P04): every
    /// backend applies the session's settings alike, so the first backend to end the idle session
    /// ends it for the client, as PostgreSQL would, and nobody is failed. Until 2026-12-06 the follower
    /// whose timer fired first was failed (a role with `idle_in_transaction_session_timeout` set failed
    /// a backend each time a client idled that long in a transaction).
    static let sessionTimeoutStates: Set<String> = ["25P03", "25P04", "57P05"]

    /// The FATAL for the client when `lastWords` ("SQLSTATE message") are a session timeout's.
    static func sessionTimeout(_ lastWords: String?) -> ErrorFields? {
        guard let words = lastWords, words.count > 6, sessionTimeoutStates.contains(String(words.prefix(5))) else { return nil }
        return ErrorFields(severity: "FATAL", sqlState: String(words.prefix(5)), message: String(words.dropFirst(6)))
    }

    static func reason(lastWords: String?, cause: String) -> String {
        lastWords.map { "ended the session: \($0) (\(cause))" } ?? cause
    }

    /// Who leads once the lead was failed.
    enum Promotion: Equatable {
        /// This backend leads from now; it gets every cycle not yet released once its handover allows.
        case promote(Int)
        /// The session cannot go on: with this error for the client (nil: quietly, a FATAL went already).
        case endSession(ErrorFields?)
    }

    /// The first live backend leads, unless the client already has part of the old lead's reply
    /// (another backend's reply cannot be spliced onto it) or no backend is left.
    static func promotion(nextLive: Int?, deliveringBytes: Bool, fatalForwarded: Bool) -> Promotion {
        guard let next = nextLive else {
            return .endSession(fatalForwarded ? nil : ErrorFields(severity: "FATAL", sqlState: "08006",
                                                                 message: "pgchorus lost every backend of this session"))
        }
        if deliveringBytes {
            return .endSession(ErrorFields(severity: "FATAL", sqlState: "08006",
                                           message: "pgchorus lost the lead backend in the middle of a reply; reconnect and retry the statement"))
        }
        return .promote(next)
    }

    /// Where a read sent to one backend alone goes when that backend is failed: to the lead again,
    /// unless part of its reply already went to the client.
    static func routedReadLost(deliveringBytes: Bool) -> ErrorFields? {
        deliveringBytes ? ErrorFields(severity: "FATAL", sqlState: "08006",
                                      message: "pgchorus lost the backend answering this query in the middle of its reply; reconnect and retry") : nil
    }

    /// The cluster took backends out of service (`gone`, of `live` live in the session): each is
    /// failed in the session, or, when that would leave none, the session ends with this error.
    static func clusterTookOut(gone: Int, live: Int) -> ErrorFields? {
        guard gone > 0, gone >= live else { return nil }
        return ErrorFields(severity: "FATAL", sqlState: "08006",
                           message: "every backend of this session was taken out of service; reconnect to use the backends online now")
    }
}
