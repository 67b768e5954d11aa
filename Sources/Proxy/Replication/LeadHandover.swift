import Synchronization

/// Keeps row locks in one order across a change of lead. Followers take locks in the order the
/// lead granted them because they get each statement only once the lead has answered it. When the
/// lead fails, the statements it granted may still be queued on the new lead (which was following
/// them); a session that sends the new lead a statement first — one the old lead had made wait, or
/// a new one — can take a lock there that the old lead had given another session, which still
/// holds it on the remaining followers: each session then waits for the other on a different
/// server, a deadlock none of them can see. So a session that promoted a new lead sends it nothing
/// until no session waits on the failed backend as its lead any more (none can release more
/// statements it ordered) and the new lead has run every statement released to it as a follower.
public final class LeadHandover: Sendable {
    struct Waiter {
        var ticket: Int
        var failed: String
        var lead: String
        var grant: @Sendable (Int) -> Void
    }

    struct State {
        /// Sessions with statements sent to each backend as their lead and not yet released to the others.
        var leading: [String: Int] = [:]
        /// Lead-ordered statements sent to each backend as a follower and not finished there yet.
        var following: [String: Int] = [:]
        var waiters: [Waiter] = []
        var nextTicket = 1

        func isClear(_ w: Waiter) -> Bool {
            leading[w.failed, default: 0] == 0 && following[w.lead, default: 0] == 0
        }

        /// Removes and returns the waiters whose new lead has caught up.
        mutating func takeGranted() -> [Waiter] {
            guard !waiters.isEmpty else { return [] }
            let granted = waiters.filter(isClear)
            if !granted.isEmpty { waiters.removeAll(where: isClear) }
            return granted
        }
    }

    private let state = Mutex(State())

    public init() {}

    /// A session started (`new`) or stopped (`old`) waiting on a lead for statements to release.
    func leadChanged(from old: String?, to new: String?) {
        let granted = state.withLock { s in
            if let old { s.leading[old, default: 0] -= 1 }
            if let new { s.leading[new, default: 0] += 1 }
            return s.takeGranted()
        }
        for w in granted { w.grant(w.ticket) }
    }

    /// A statement the lead answered was sent to `backend` as a follower.
    func released(to backend: String) {
        state.withLock { $0.following[backend, default: 0] += 1 }
    }

    /// `count` lead-ordered statements finished on `backend`, or will never run there.
    func finished(on backend: String, count: Int = 1) {
        let granted = state.withLock { s in
            s.following[backend, default: 0] -= count
            return s.takeGranted()
        }
        for w in granted { w.grant(w.ticket) }
    }

    /// Asks to use `lead` after `failed` lost the lead; `grant` runs once with the ticket (on any
    /// thread: hop to your event loop), at once when nothing is outstanding. Returns the ticket,
    /// to cancel with and to tell a grant from one of an earlier, cancelled wait.
    func awaitTurn(lead: String, after failed: String, _ grant: @escaping @Sendable (Int) -> Void) -> Int {
        let (ticket, now) = state.withLock { s -> (Int, Bool) in
            let w = Waiter(ticket: s.nextTicket, failed: failed, lead: lead, grant: grant)
            s.nextTicket += 1
            if s.isClear(w) { return (w.ticket, true) }
            s.waiters.append(w)
            return (w.ticket, false)
        }
        if now { grant(ticket) }
        return ticket
    }

    /// What a handover from `failed` to `lead` still waits for: sessions that still lead on `failed`,
    /// and lead-ordered statements still running on `lead` as a follower (for the error of a wait
    /// that timed out).
    func outstanding(failed: String, lead: String) -> (leading: Int, following: Int) {
        state.withLock { ($0.leading[failed, default: 0], $0.following[lead, default: 0]) }
    }

    /// Gives up waiting (session ending, or its new lead failed too).
    func cancel(_ ticket: Int) {
        state.withLock { $0.waiters.removeAll { $0.ticket == ticket } }
    }
}
