import Logging
import NIOCore
import Wire

/// Pipelines forwarded as they arrive. PostgreSQL runs each message as it comes and sends an error
/// at once, so a client may send Parse/Bind/Execute without Sync or Flush and wait for the outcome
/// (psycopg 3's pipeline mode does). When a read of the client's bytes ends in the middle of a
/// group, what has arrived goes to the lead now; the followers get the whole group, lead-first as
/// always, once the lead has answered its Sync, so ordering and comparison still hold per cycle.
///
/// Not forwarded early (held until the Sync, as before): a part that commits or mixes transaction
/// control with other statements (the vote must replace the COMMIT) and a part that draws sequence
/// values (it must wait for its turn) — with several clustering nodes, any group in a database where
/// something may draw them (the turn's cluster-wide lock cannot be asked on the lead once a part runs
/// there: `needsOrderFirst`). A group forwarded early is never wrapped in the vote: its
/// statements already run outside a BEGIN, so as an autocommit write it is answered once every
/// backend has done it.
extension ClientSessionHandler {
    func forwardOpenGroup() {
        guard phase == .relaying, !currentGroup.isEmpty, commit == nil, waitingGroup == nil, epochWaiting == nil, !wrapPending,
              handoverTicket == nil, gateTicket == nil, takingIn == nil else { return }
        if openPartial == nil, !mayForwardEarly() { return }
        // With several clustering nodes, a group that may draw sequence values waits for its Flush or
        // Sync: its turn is taken before anything of it reaches the lead (`needsOrderFirst`).
        if openPartial == nil, liveCount > 1, configuration.cluster.nodes.count > 1, mayDrawSequences() { return }
        prepareTracker()
        var trial = tracker
        let result = trial.process(currentGroup) { transactionTimestampLiteral() }
        if liveCount > 1 && (result.isCommit || result.mixesTransactionControl || needsSequenceOrder(result)) { return }
        // A write on a node without quorum waits for its Sync, where it is refused.
        if liveCount > 1 && result.writes && shared.registry.fencedReason() != nil { return }
        tracker = trial
        currentGroup = []
        currentGroupBytes = 0
        appendToOpenGroup(result)
    }

    /// Sends one part of the open group to the lead (opening the group with its cycle if needed).
    private func appendToOpenGroup(_ result: StatementTracker.Result) {
        if result.writes { openPartialWrites = true }
        if openPartial == nil {
            if liveCount > 1 { decideNotificationHold(result.bytes, containsCommit: result.containsCommit, voted: false) }
            stampTransactionIfNeeded(result)
        }
        noteEffects(of: result, seq: openPartial ?? nextSeq)
        // (After the stamp and the hold, which may send cycles of their own: the group's cycle is the next.)
        noteOpenGroupParses(result, seq: openPartial ?? nextSeq)
        guard let seq = openPartial, leadFirst.update(seq: seq, { $0.bytes.writeImmutableBuffer(result.bytes) }) else {
            let seq = nextSeq
            openPartial = seq
            openExtendedGroup = true
            ProxyMetrics.statements.increment()
            dispatch(result.bytes, kind: .client, waitsForLead: liveCount > 1, complete: false)
            return
        }
        guard handoverTicket == nil else { return }
        backends[lead].write(result.bytes)
    }

    /// The client ended the open group (Sync, or a Flush/COPY message that is one more part).
    func endOpenGroup(cycle: Bool) {
        let frames = currentGroup
        currentGroup = []
        currentGroupBytes = 0
        prepareTracker()
        let result = tracker.process(frames) { transactionTimestampLiteral() }
        guard cycle else {
            appendToOpenGroup(result)
            return
        }
        if result.writes, liveCount > 1, let fenced = shared.registry.fencedReason() {
            fatal(fencedError(fenced, detail: "it takes no writes"))
            return
        }
        if let seq = openPartial { noteOpenGroupParses(result, seq: seq) }
        if result.writes { openPartialWrites = true }
        // (The last part's DDL or temporary table counts as a first part's does.)
        noteEffects(of: result, seq: openPartial ?? nextSeq)
        if liveCount > 1, result.containsCommit, wroteInTransaction {
            logger.warning("COMMIT sent at the end of a pipeline whose first statements already ran: committed without the vote")
        }
        if liveCount > 1, announcesCatalogChange(result) {
            holdForCatalogChange(result.bytes, cycle: true, wrap: false, thenOrder: needsSequenceOrder(result))
            return
        }
        if liveCount > 1, needsSequenceOrder(result) {
            waitForOrder(result.bytes, cycle: true, wrap: false)
            return
        }
        finishOpenGroup(result.bytes)
    }

    /// The named statements a part of the open group (cycle `seq`) makes and drops (`noteParsesSent`).
    private func noteOpenGroupParses(_ result: StatementTracker.Result, seq: Int) {
        let named = result.statementChanges.isEmpty ? ([], []) : replay.apply(result.statementChanges)
        if result.parses > 0 || result.closes > 0 || parsesSent.seq == nil {
            noteParsesSent(seq: seq, parses: result.parses, closes: result.closes, named: named)
        }
    }

    /// Sends the last part of the open group to the lead; the group is complete and is released to
    /// the followers once the lead has answered it.
    func finishOpenGroup(_ bytes: ByteBuffer) {
        guard let seq = openPartial, let startedInTransaction = leadFirst.groups.first(where: { $0.seq == seq })?.startedInTransaction else { return }
        openPartial = nil
        openExtendedGroup = false
        // An autocommit write outside the vote: answered once every backend has it.
        let answerWhenAll = openPartialWrites && liveCount > 1 && !startedInTransaction
        leadFirst.update(seq: seq) {
            $0.bytes.writeImmutableBuffer(bytes)
            $0.complete = true
            if answerWhenAll { $0.answerWhenAll = true }
        }
        if openPartialWrites {
            comparison.noteWrite(seq)
            if answerWhenAll {
                self.answerWhenAll.expect(seq)
                backends[lead].owed.answerWhenAll(seq)
            }
        }
        openPartialWrites = false
        if handoverTicket == nil { backends[lead].write(bytes) }
        releaseGroups()
    }
}
