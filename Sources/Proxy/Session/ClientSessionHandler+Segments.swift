import NIOCore
import Wire

/// A simple Query with a COMMIT (or ROLLBACK) in the middle — `BEGIN; …; COMMIT; BEGIN; …; COMMIT`
/// from a migration tool or a psql script — runs as its parts, one after the other, each as a Query
/// of its own (`StatementAnalysis.transactionSegments`), so each `BEGIN; …; COMMIT` goes through the
/// vote. The client sees one answer, as from PostgreSQL: the parts' ReadyForQuery messages are kept
/// back but for the last, and after an error the remaining parts are skipped (PostgreSQL skips the
/// rest of a message after an error). Client messages that arrive meanwhile wait, in order.
extension ClientSessionHandler {
    /// Cuts `frame` into parts when it is a simple Query that needs it (several live backends, the
    /// vote on): nil when it goes as it is.
    func transactionSegments(_ frame: PostgresFrame) -> [PostgresFrame]? {
        guard liveCount > 1, configuration.replication.twoPhaseCommit, votedCommitAvailable,
              frame.type == FrontendMessage.Kind.query.rawValue, case let .query(sql)? = try? FrontendMessage(frame: frame),
              let parts = StatementAnalysis.transactionSegments(of: sql) else { return nil }
        return parts.map { part in
            var b = ByteBuffer()
            FrontendMessage.query(part).encode(into: &b)
            return PostgresFrame(bytes: b)
        }
    }

    /// Starts the parts of a cut Query (its first part now, the others as each one is answered).
    func runSegments(_ parts: [PostgresFrame]) {
        logger.debug("a COMMIT or ROLLBACK in the middle of a Query: it runs as \(parts.count) parts, each COMMIT through the vote")
        segmentsLeft = parts
        // Pipelined cycles before it may still be answering: the first part waits for their
        // ReadyForQuery messages, so it is judged in the transaction state they leave.
        segmentEarlierReadies = max(0, readiesOwed - 1)
        if segmentEarlierReadies > 0 {
            segmentReady = true
            return
        }
        admitNextSegment()
    }

    /// Sends the next part as a client Query of its own.
    func admitNextSegment() {
        guard !segmentsLeft.isEmpty else { return }
        let part = segmentsLeft.removeFirst()
        segmentRunning = !segmentsLeft.isEmpty
        segmentFailed = false
        segmentReady = false
        admittingSegment = true
        handleRelayFrame(part)
        admittingSegment = false
    }

    /// Sees each message for the client while a cut Query waits or a part that is not the last runs
    /// (the answers of cycles before the Query pass and are counted): returns false for
    /// the part's ReadyForQuery, which is kept back (the next part is admitted on the next turn of
    /// the event loop, once the session has settled); an ErrorResponse ends the message (the
    /// remaining parts are dropped and that ReadyForQuery is the client's).
    func segmentPassesToClient(_ bytes: ByteBuffer) -> Bool {
        guard let type = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return true }
        if segmentEarlierReadies > 0 {
            if type == BackendMessage.Kind.readyForQuery.rawValue && bytes.readableBytes == 6 {
                segmentEarlierReadies -= 1
                if segmentEarlierReadies == 0 { scheduleHeldReplay() }
            }
            return true
        }
        guard segmentRunning else { return true }
        if type == BackendMessage.Kind.errorResponse.rawValue {
            segmentFailed = true
            return true
        }
        guard type == BackendMessage.Kind.readyForQuery.rawValue, bytes.readableBytes == 6 else { return true }
        segmentRunning = false
        if segmentFailed {
            segmentsLeft = []
        } else {
            segmentReady = true
        }
        scheduleHeldReplay()
        return segmentReady ? false : true
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
