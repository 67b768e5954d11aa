import NIOCore
import Wire

/// The client's `statement_timeout` counts the time pgchorus holds its statement.
///
/// PostgreSQL starts a statement's timeout when the statement reaches it; pgchorus may hold a
/// statement before sending it — for its turn in the order of commits and statements (behind another
/// session's autocommit DDL, `CREATE TABLE … AS` or COPY, which runs while nothing else does), for the
/// sequence turn, or DDL for the other nodes' acknowledgement. Until 2026-12-07 a session whose
/// `statement_timeout` was 2 s waited behind a 60 s `CREATE INDEX` of another session for the whole
/// minute. Now a statement held longer than the session's `statement_timeout` is answered as
/// PostgreSQL answers one that ran out of it (`57014` "canceling statement due to statement timeout",
/// not run, the session kept; inside a block the transaction aborted on every backend), as a
/// client's cancel of a held statement is. A statement sent after a hold gets its full timeout on the
/// backends: the bound is the held part plus PostgreSQL's own.
///
/// The value is the lead's: `SHOW statement_timeout` (no snapshot, no lock) on the session's own
/// connection there, asked once the session is logged in (when it uses several backends) and again
/// after a statement that may have changed it (a `SET`, `SET LOCAL` or `RESET` of it, `RESET ALL`,
/// `DISCARD ALL`, any text naming it) — once the client has every answer and the lead is idle outside
/// a transaction block, or at the latest when a statement starts waiting, in which case the wait is
/// timed from its start once the answer is in. So a role's or database's default, the login's
/// `options`, and a `SET` undone by ROLLBACK all count.
extension ClientSessionHandler {
    /// Asks the lead for the session's `statement_timeout` when it is not known or may have changed:
    /// once the client has every answer (`flushClient`, `finishCycle`) — so whatever it sent has run
    /// on the lead — while nothing of the session's runs there, outside a transaction block.
    func askStatementTimeoutIfDue() {
        guard phase == .relaying, liveCount > 1, statementTimeoutDue, readiesOwed == 0,
              heldFrames.isEmpty, currentGroup.isEmpty, waitingGroup == nil, epochWaiting == nil, backends[lead].isLive,
              backends[lead].phase == .ready, backends[lead].owed.isEmpty, lastStatus == .idle, commit == nil,
              !openExtendedGroup, openPartial == nil, !copyInProgress, !segments.inProgress else { return }
        askStatementTimeout()
    }

    /// The lead has not been asked yet, or a statement since may have changed the value.
    var statementTimeoutDue: Bool { !statementTimeoutKnown || replay.timeoutMayHaveChanged }

    private func askStatementTimeout() {
        replay.timeoutMayHaveChanged = false
        statementTimeoutKnown = true
        statementTimeoutSeq = nextSeq
        sendOwn("SHOW statement_timeout", to: lead)
        flushBackend(lead)
    }

    /// A row of the lead's answer to `SHOW statement_timeout`: a statement waiting meanwhile is timed
    /// from the start of its wait.
    func noteStatementTimeout(_ frame: PostgresFrame) {
        guard case let .dataRow(columns)? = try? BackendMessage(frame: frame), columns.count == 1,
              let value = columns[0].map({ String(buffer: $0) }) else { return }
        statementTimeoutMilliseconds = Self.milliseconds(ofSetting: value) ?? 0
        if let since = heldSince, statementHeld { armHeldTimeout(since: since) }
    }

    /// A time setting as `SHOW` prints it (`0`, `500ms`, `5s`, `1min`, `2h`, `1d`; no unit: ms), in
    /// milliseconds; nil when not so.
    static func milliseconds(ofSetting value: String) -> Int? {
        let digits = value.prefix { $0.isASCII && $0.isNumber }
        guard let n = Int(digits), n >= 0 else { return nil }
        let scale: Int
        switch value.dropFirst(digits.count) {
        case "", "ms": scale = 1
        case "s": scale = 1000
        case "min": scale = 60_000
        case "h": scale = 3_600_000
        case "d": scale = 86_400_000
        default: return nil
        }
        return n.multipliedReportingOverflow(by: scale).overflow ? nil : n * scale
    }

    /// A client statement starts waiting inside pgchorus (`sendInTurn`, `waitForOrder`,
    /// `holdForCatalogChange`): its timeout runs from now. One timer per session at most: a timer armed
    /// for an earlier hold finds the current one's deadline when it fires.
    func noteHoldStarted() {
        let since = NIODeadline.now()
        heldSince = since
        if statementTimeoutDue {
            // Not known (the session has not been idle since it may have changed): asked now, behind
            // what runs on the lead; the wait is timed once the answer is in. (A SET of it waiting
            // here itself is seen only at the next statement that names it.)
            guard liveCount > 1, backends[lead].isLive, backends[lead].phase == .ready, !(statementTimeoutSeq.map { backends[lead].owed.owes($0) } ?? false),
                  lastStatus != .failed, !openExtendedGroup, openPartial == nil, !copyInProgress, !segments.inProgress else { return }
            askStatementTimeout()
            return
        }
        armHeldTimeout(since: since)
    }

    private func armHeldTimeout(since: NIODeadline) {
        guard statementTimeoutMilliseconds > 0, let context else { return }
        let deadline = since + .milliseconds(Int64(statementTimeoutMilliseconds))
        heldDeadline = deadline
        if let armed = heldTimer, armed.deadline <= deadline { return }
        heldTimer?.task.cancel()
        armHeldTimer(deadline, context)
    }

    private func armHeldTimer(_ deadline: NIODeadline, _ context: ChannelHandlerContext) {
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        heldTimer = (context.eventLoop.scheduleTask(deadline: deadline) { bound.value.heldTimerFired() }, deadline)
    }

    private func heldTimerFired() {
        heldTimer = nil
        guard phase == .relaying, let deadline = heldDeadline, let context, statementHeld else {
            heldDeadline = nil
            return
        }
        if deadline > .now() {
            armHeldTimer(deadline, context)
            return
        }
        heldDeadline = nil
        if catalogWait {
            // Answered once the load has ended (`catalogLoaded`), as a cancel is: the load runs on the
            // lead under the same timeout.
            catalogTimedOut = true
            return
        }
        answerHeldStatement(Self.heldStatementTimedOut, because: "ran out of its statement_timeout")
    }

    /// A client statement waits inside pgchorus where no backend runs it: for the catalog load after
    /// DDL, for its turn in the order of commits and statements, for the sequence turn (not for the
    /// cluster-wide lock, which the lead times), for the other nodes' acknowledgement of DDL.
    var statementHeld: Bool {
        catalogWait || epochWaiting != nil || (waitingGroup != nil && (catalogHold || (waitingTicket != nil && clusterOrderLockSeq == nil)))
    }

    /// PostgreSQL's answer to a statement that ran out of its `statement_timeout`, for one pgchorus held
    /// and never sent (`detail` says where it waited).
    static func heldStatementTimedOut(_ detail: String) -> ErrorFields {
        ErrorFields(severity: "ERROR", sqlState: "57014", message: "canceling statement due to statement timeout", detail: detail)
    }
}
