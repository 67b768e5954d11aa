import NIOCore
import Wire

/// A simple Query with a COMMIT (or ROLLBACK) in the middle runs as its parts, each through the vote;
/// `QuerySegments` decides what passes and when the next part goes. Client messages that arrive
/// meanwhile wait, in order.
extension ClientSessionHandler {
    /// Cuts a simple Query into parts when it needs it (several live backends, the vote on): nil when
    /// it goes as it is.
    func transactionSegments(_ query: QueryText) -> [PostgresFrame]? {
        guard liveCount > 1, configuration.replication.twoPhaseCommit, votedCommitAvailable,
              let parts = StatementAnalysis.transactionSegments(of: query.sql) else { return nil }
        return parts.map { part in
            var b = ByteBuffer()
            FrontendMessage.query(part).encode(into: &b)
            return PostgresFrame(bytes: b)
        }
    }

    /// Starts the parts of a cut Query (its first part now, the others as each one is answered).
    func runSegments(_ parts: [PostgresFrame]) {
        logger.debug("a COMMIT or ROLLBACK in the middle of a Query: it runs as \(parts.count) parts, each COMMIT through the vote")
        // As from PostgreSQL, the parts' replies reach the client with the last part's ReadyForQuery.
        clientReadyWithheld = true
        if segments.start(parts, readiesOwed: readiesOwed) { admitNextSegment() }
    }

    /// Sends the next part as a client Query of its own.
    func admitNextSegment() {
        guard let part = segments.nextPart() else { return }
        admittingSegment = true
        handleRelayFrame(part)
        admittingSegment = false
    }

    /// Sees each message for the client while a cut Query is in progress (`QuerySegments.clientMessage`):
    /// false for a part's ReadyForQuery, which is kept back. What was held goes on at the next turn of
    /// the event loop, once the session has settled.
    func segmentPassesToClient(_ bytes: ByteBuffer) -> Bool {
        guard let type = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return true }
        switch segments.clientMessage(type: type, length: bytes.readableBytes) {
        case .pass:
            return true
        case .passAndGoOn:
            scheduleHeldReplay()
            return true
        case .keepAndGoOn:
            scheduleHeldReplay()
            return false
        }
    }

    /// Runs `replayHeldFrames` on the next turn of the event loop.
    func scheduleHeldReplay() {
        guard let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let me = bound.value
            if me.phase == .relaying { me.replayHeldFrames() }
        }
    }
}
