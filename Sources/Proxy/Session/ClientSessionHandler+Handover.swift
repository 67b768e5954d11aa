import Logging
import NIOCore
import Wire

extension ClientSessionHandler {
    /// Counts this session in `LeadHandover` while its lead has statements to answer before they go
    /// to the others: only then can the session still release statements that lead ordered. (An idle
    /// session drops a lead the cluster failed before it sends anything, see `adoptClusterView`.)
    func noteLeadOrdering() {
        let waiting = phase != .closed && handoverTicket == nil && backends.indices.contains(lead)
            && backends[lead].phase == .ready && leadFirst.waitsForLead
        let id = waiting ? backends[lead].backend.id : nil
        guard id != orderingLead else { return }
        shared.leadHandover.leadChanged(from: orderingLead, to: id)
        orderingLead = id
    }

    /// Drops what backend `index` still owes; the lead-ordered cycles among it no longer hold back a new lead.
    func dropExpectations(_ index: Int) {
        let ordered = backends[index].owed.removeAll()
        if ordered > 0 { shared.leadHandover.finished(on: backends[index].backend.id, count: ordered) }
        settleDeferredCancels()
    }

    /// The lead changed from `failed`: groups for the new lead queue up (and client messages wait)
    /// until the statements `failed` had ordered have run on it.
    func awaitHandover(after failed: String) {
        guard let context else { return }
        abandonHandover()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        handoverTimer = loop.scheduleTask(in: Self.handoverTimeout) { bound.value.handoverTimedOut() }
        // Set before the grant can run: it hops to this loop, so it comes after this call returns.
        handoverFrom = failed
        handoverTicket = shared.leadHandover.awaitTurn(lead: backends[lead].backend.id, after: failed) { ticket in
            loop.execute { bound.value.handoverGranted(ticket) }
        }
        noteLeadOrdering()
    }

    func handoverGranted(_ ticket: Int) {
        // A grant of a wait given up meanwhile (the new lead failed too) is not this one.
        guard ticket == handoverTicket else { return }
        handoverTimer?.cancel()
        handoverTimer = nil
        handoverTicket = nil
        guard phase == .relaying else { return }
        for g in leadFirst.groups {
            if let kind = g.kind, let seq = g.seq {
                backends[lead].owed.add(Expectation(seq: seq, kind: kind, holdReady: g.holdReady, answerWhenAll: g.answerWhenAll))
            }
            backends[lead].write(g.bytes)
        }
        flushBackend(lead)
        releaseGroups()
        replayHeldFrames()
    }

    /// Gives up a handover still waited for (session ending, or the new lead failed too).
    func abandonHandover() {
        handoverTimer?.cancel()
        handoverTimer = nil
        if let t = handoverTicket {
            handoverTicket = nil
            shared.leadHandover.cancel(t)
        }
    }

    private func handoverTimedOut() {
        guard handoverTicket != nil else { return }
        var detail: String?
        if let failed = handoverFrom, backends.indices.contains(lead) {
            let newLead = backends[lead].backend.id
            let (leading, following) = shared.leadHandover.outstanding(failed: failed, lead: newLead)
            let outstanding = "\(leading) session(s) still wait on \(failed) as their lead; \(following) statement(s) the lead ordered still run on \(newLead)."
            detail = outstanding
            logger.error("the new lead backend \(backends[lead].backend.description) did not catch up with what \(failed) had ordered within \(Self.handoverTimeout.nanoseconds / 1_000_000_000) s: \(outstanding) The session ends.")
        }
        abandonHandover()
        // Something the old lead ordered cannot finish on the new one: ending this session rolls its
        // transaction back everywhere, which frees whatever it held.
        fatal(ErrorFields(severity: "FATAL", sqlState: "40P01",
                          message: "pgchorus waited \(Self.handoverTimeout.nanoseconds / 1_000_000_000) s for the new lead backend to run what the failed lead had ordered; the transaction was rolled back, retry it",
                          detail: detail))
    }
}
