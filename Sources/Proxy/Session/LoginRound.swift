import Wire

/// The logins of one client session to every online backend, and what follows from them once all
/// have ended. Pure: the session records outcomes and runs the decision.
///
/// A session never goes on with fewer than all online backends: a backend that refuses or cannot
/// be reached while others accept is out of step (a database, role or setting it lacks) or dead, so
/// it is failed cluster-wide; a refusal every backend gives is the client's (wrong database, too
/// many connections for the user) and reaches it as PostgreSQL's own error. A TLS failure (the
/// backend's certificate does not verify, or it will not encrypt under `sslmode` `require` or
/// stricter) refuses the client and fails nobody: the node's own configuration or the certificate is
/// at fault, not the backend's data, and the health checks (same settings) report it. So does a
/// backend with no connection slot left for the session (`53300`: `max_connections`, or the role's
/// or database's `CONNECTION LIMIT`, reached there): it is full, not out of step, and the client gets
/// its refusal as from PostgreSQL at capacity.
struct LoginRound: Equatable {
    enum Outcome: Equatable {
        case pending
        case ready
        /// The backend answered the login with an error of its own.
        case refused(ErrorFields)
        /// No connection, a lost one, a timeout, or a login pgchorus itself could not complete.
        case unreachable(String)
        /// TLS could not be set up as `sslmode` asks: why.
        case tlsRefused(String)
    }

    enum Decision: Equatable {
        /// Some logins are still going on.
        case wait
        /// Relay with the ready backends; the others are failed cluster-wide, with why.
        case proceed(fail: [Int])
        /// No backend accepted: the client gets backend `index`'s refusal; `fail` lists backends
        /// that could not be reached while others answered.
        case refuseClient(index: Int, fail: [Int])
        /// No backend answered at all.
        case noBackend
        /// Backend `index` could not be reached over TLS as configured: the client is refused, nobody failed.
        case refuseClientTLS(index: Int)
    }

    var outcomes: [Outcome]

    init(backends: Int) {
        outcomes = Array(repeating: .pending, count: backends)
    }

    /// Records an outcome; the first one of a backend counts (a timeout after a refusal changes nothing).
    mutating func record(_ index: Int, _ outcome: Outcome) {
        guard outcomes.indices.contains(index), outcomes[index] == .pending else { return }
        outcomes[index] = outcome
    }

    var decision: Decision {
        if outcomes.contains(.pending) { return .wait }
        if let tls = outcomes.indices.first(where: { if case .tlsRefused = outcomes[$0] { true } else { false } }) {
            return .refuseClientTLS(index: tls)
        }
        let ready = outcomes.indices.filter { outcomes[$0] == .ready }
        let unreachable = outcomes.indices.filter { if case .unreachable = outcomes[$0] { true } else { false } }
        // (Until 2026-12-06 such a backend was failed: a burst of clients beyond one follower's
        // `max_connections` failed it, and each online recovery that followed.)
        if let full = outcomes.indices.first(where: { if case let .refused(f) = outcomes[$0] { f.sqlState == "53300" } else { false } }) {
            return .refuseClient(index: full, fail: unreachable)
        }
        if !ready.isEmpty {
            return .proceed(fail: outcomes.indices.filter { outcomes[$0] != .ready })
        }
        if let refused = outcomes.indices.first(where: { if case .refused = outcomes[$0] { true } else { false } }) {
            return .refuseClient(index: refused, fail: unreachable)
        }
        return .noBackend
    }

    /// Why backend `index` is failed, for the registry and the log.
    func reason(_ index: Int) -> String {
        switch outcomes[index] {
        case let .refused(fields):
            return "refused a login the other backends accepted: \(fields.sqlState ?? "") \(fields.message ?? "")"
        case let .unreachable(why):
            return "could not open a session the other backends opened: \(why)"
        case let .tlsRefused(why):
            return "TLS: \(why)"
        case .pending, .ready:
            return "login did not finish"
        }
    }
}
