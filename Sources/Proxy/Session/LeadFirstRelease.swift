import NIOCore

/// The lead-first release of a session's groups (**pure**: no sockets, no clock). Every group goes to
/// the lead at once; the followers get it only once the lead has answered it, so row locks are taken
/// in the lead's order everywhere, and in the order the client sent the groups: a group still waiting
/// for the lead holds back every later one.
///
/// The session puts each group in (`add`), says when the lead has answered a cycle (`leadAnswered`)
/// and takes what may go out (`next`) one group at a time: carrying out a release can send more
/// groups (a turn granted by it), which must queue behind the ones not yet taken.
struct LeadFirstRelease {
    /// Groups sent to the lead but not yet to the followers, oldest first.
    private(set) var groups: [PendingGroup] = []

    /// What the followers get for the oldest group that may go.
    enum Release {
        /// The group itself. `leadTook` is how long the lead took for it (nil when the group was not
        /// lead-first: the followers' time for it starts when the lead answers).
        case send(PendingGroup, leadTook: TimeAmount?)
        /// The lead ended cycle `seq` with a timing outcome (cancel, timeout, deadlock, serialization
        /// failure) in transaction status `leadStatus`: the followers get that outcome instead of the
        /// statements (see `OutcomeDigest.timingSQLStates`).
        case followLeadOutcome(PendingGroup, seq: Int, leadStatus: UInt8)
    }

    var isEmpty: Bool { groups.isEmpty }

    /// Some group waits for the lead's answer (the session orders statements on its lead).
    var waitsForLead: Bool { groups.contains(where: \.waitsForLead) }

    /// Whether cycle `seq` has not gone to the followers yet.
    func holds(seq: Int) -> Bool { groups.contains { $0.seq == seq } }

    mutating func add(_ group: PendingGroup) { groups.append(group) }

    /// Changes the group of cycle `seq` (a pipeline's later parts, the lead's large-object OID);
    /// false when it has gone out already.
    @discardableResult
    mutating func update(seq: Int, _ change: (inout PendingGroup) -> Void) -> Bool {
        guard let i = groups.firstIndex(where: { $0.seq == seq }) else { return false }
        change(&groups[i])
        return true
    }

    /// The lead answered cycle `seq` after `took`, with a timing outcome left the transaction in
    /// `timingStatus` (nil: an ordinary outcome). False when the cycle is not held here.
    @discardableResult
    mutating func leadAnswered(seq: Int, took: TimeAmount?, timingStatus: UInt8?) -> Bool {
        update(seq: seq) {
            $0.leadDone = true
            $0.leadTook = took
            $0.leadTimingStatus = timingStatus
        }
    }

    /// A new lead took over: it has answered nothing yet, every group waits for it again.
    mutating func leadReplaced() {
        for i in groups.indices { groups[i].leadDone = false }
    }

    /// Takes the oldest group that may go to the followers now, if any: complete (a pipeline's Sync
    /// has come), and answered by the lead when it is lead-first. Nothing goes while a new lead waits
    /// for its handover (`handoverPending`): the followers must not get what the new lead has not had.
    mutating func next(handoverPending: Bool) -> Release? {
        guard !handoverPending, let g = groups.first, g.complete, !g.waitsForLead || g.leadDone else { return nil }
        groups.removeFirst()
        if g.kind == .client, let status = g.leadTimingStatus, let seq = g.seq, !g.mixesTransactionControl {
            return .followLeadOutcome(g, seq: seq, leadStatus: status)
        }
        return .send(g, leadTook: g.leadTook)
    }
}
