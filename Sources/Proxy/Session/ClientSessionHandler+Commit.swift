#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import State
import Wire

extension ClientSessionHandler {
    /// The DDL that creates pgchorus' schema in a database: the in-band commit log and the functions
    /// of `DeterministicValues` (run once per backend and database).
    static let schemaDDL = """
    DO $pgchorus$ BEGIN
      BEGIN
        IF to_regclass('pgchorus.commit_log') IS NULL THEN
          CREATE SCHEMA IF NOT EXISTS pgchorus;
          CREATE TABLE IF NOT EXISTS pgchorus.commit_log (gid text PRIMARY KEY, committed_at timestamptz NOT NULL);
          GRANT USAGE ON SCHEMA pgchorus TO PUBLIC;
          GRANT SELECT, INSERT ON pgchorus.commit_log TO PUBLIC;
        END IF;
      EXCEPTION WHEN unique_violation OR duplicate_table OR duplicate_schema OR duplicate_object THEN NULL;
      END;
      -- The functions come in a block of their own: a schema made by an earlier version and owned by
      -- another user must not cost this session its commit log (the owner's next session adds them).
      IF to_regprocedure('pgchorus.draw()') IS NULL THEN
        BEGIN
    \(DeterministicValues.functionsDDL)
        EXCEPTION WHEN unique_violation OR duplicate_function OR insufficient_privilege THEN NULL;
        END;
      END IF;
    \(ClusterOrderMarks.schemaDDL)
      IF to_regprocedure('pgchorus.release_notifications()') IS NULL THEN
        BEGIN
    \(DeterministicValues.notificationsDDL)
        EXCEPTION WHEN unique_violation OR duplicate_function OR duplicate_table OR insufficient_privilege THEN NULL;
        END;
      END IF;
    END $pgchorus$
    """

    /// Makes sure pgchorus' schema (`schemaDDL`) exists in this database on every backend before the
    /// first statement: with several backends configured, definitions may use its functions even while one is online.
    func ensureCommitLog() {
        guard tracker.deterministic || (liveCount > 1 && configuration.replication.twoPhaseCommit) else { return }
        let missing = shared.commitLogReady.withLock { ready in
            backends.filter(\.isLive).contains { !ready.contains("\($0.backend.id)/\(database)") }
        }
        guard missing else { return }
        var b = ByteBuffer()
        // (Sent while the session is idle: the setting ends with the Query's implicit transaction.)
        FrontendMessage.query("\(Self.noTimeoutInTransaction)\(Self.schemaDDL)").encode(into: &b)
        dispatch(b, kind: .internalQuery, waitsForLead: false)
    }

    func recordInternalMessage(_ index: Int, _ frame: PostgresFrame) {
        guard frame.type == BackendMessage.Kind.errorResponse.rawValue else { return }
        if case let .errorResponse(fields)? = try? BackendMessage(frame: frame) {
            backends[index].cycleError = frame
            logger.warning("pgchorus could not create its schema (pgchorus.commit_log and the functions that make volatile defaults identical) in database \(database) on backend \(backends[index].backend.description): \(fields.sqlState ?? "") \(fields.message ?? ""); commits in this session go without the vote, and definitions using now() or gen_random_uuid() fail, until a user who may create a schema in this database connects once through pgchorus")
        }
    }

    func internalQueryFinished(_ index: Int) {
        if backends[index].cycleError != nil {
            votedCommitAvailable = false
            votedCommitLostToTemporaryTables = false
        } else {
            let key = "\(backends[index].backend.id)/\(database)"
            _ = shared.commitLogReady.withLock { $0.insert(key) }
        }
        backends[index].cycleError = nil
    }

    // MARK: phase one

    /// The lead finished a wrapped autocommit write: vote if it is still in its transaction, else roll back.
    func autocommitStatementDone(status: BackendMessage.TransactionStatus) {
        guard phase == .relaying else { return }
        if trailingCommitPending {
            trailingCommitPending = false
            if status == .inTransaction {
                var q = ByteBuffer()
                FrontendMessage.query("COMMIT").encode(into: &q)
                startCommit([PostgresFrame(bytes: q)])
                return
            }
            // A statement before the COMMIT failed (the client has the error): as in PostgreSQL, the
            // COMMIT is skipped and the transaction stays aborted until the client ends it.
            wrapPending = false
            cycleDelivered(nextSeq - 1, status: status)
            writeClient(.readyForQuery(status))
            flushClient()
            replayHeldFrames()
            return
        }
        if status == .inTransaction {
            startCommit([], autocommit: true)
            return
        }
        // The statement failed on the lead (the client has the error): every backend rolls back.
        var b = ByteBuffer()
        FrontendMessage.query("ROLLBACK").encode(into: &b)
        dispatch(b, kind: .hidden, waitsForLead: false)
        wrapPending = false
        cycleDelivered(nextSeq - 1, status: .idle)
        writeClient(.readyForQuery(.idle))
        flushClient()
        replayHeldFrames()
    }

    /// `changes`: the group's named Parses as the tracker sent them on (rewritten where it rewrote) and
    /// its Closes of statements (`StatementTracker.Result.statementChanges`).
    func startCommit(_ frames: [PostgresFrame], changes: [StatementChange] = [], autocommit: Bool = false) {
        let gid = shared.nextGlobalTransactionID()
        // Named statements created in this group must exist on the backends as the client believes;
        // they go in a cycle of their own, so an error there cannot swallow the PREPARE.
        var named = ByteBuffer()
        var sent: [StatementChange] = []
        var parses = 0
        var closes = 0
        var parsed = changes.compactMap { change -> (name: String, bytes: ByteBuffer)? in
            if case let .parsed(_, name, bytes) = change { return (name, bytes) }
            return nil
        }[...]
        for f in frames {
            if f.type == FrontendMessage.Kind.parse.rawValue, case let .parse(p)? = try? FrontendMessage(frame: f), !p.name.isEmpty {
                let parse = parsed.popFirst() ?? (p.name, f.bytes)
                sent.append(.parsed(parse: parses, name: parse.name, bytes: parse.bytes))
                parses += 1
                named.writeImmutableBuffer(parse.bytes)
            } else if f.type == FrontendMessage.Kind.close.rawValue, case let .close(target, name)? = try? FrontendMessage(frame: f) {
                if target == .statement { sent.append(.closed(close: closes, name: name)) }
                closes += 1
                named.writeImmutableBuffer(f.bytes)
            }
        }
        if named.readableBytes > 0 {
            FrontendMessage.sync.encode(into: &named)
            noteParsesSent(seq: nextSeq, parses: parses, closes: closes, named: replay.apply(sent))
            dispatch(named, kind: .hidden, waitsForLead: false)
        }
        var b = ByteBuffer()
        // The commit-log row makes the decision readable from any backend once one COMMIT PREPARED ran.
        // (Its time is the transaction's, given: a default would differ per backend.)
        // (The setting ends with the transaction, which PREPARE ends.)
        let untimed = ownStatementsMayTimeOut ? Self.noTimeoutInTransaction : ""
        FrontendMessage.query("\(untimed)INSERT INTO pgchorus.commit_log (gid, committed_at) VALUES ('\(gid)', '\(transactionTimestampLiteral())'); PREPARE TRANSACTION '\(gid)'").encode(into: &b)
        shared.votesInFlight.started(gid)
        commit = CommitRound(gid: gid, frames: frames, participants: backends.indices.filter { backends[$0].isLive }, autocommit: autocommit)
        logger.debug("commit vote started", metadata: ["gid": "\(gid)"])
        dispatch(b, kind: .prepare, waitsForLead: false)
    }

    func recordCommitMessage(_ index: Int, _ frame: PostgresFrame) {
        switch frame.type {
        case BackendMessage.Kind.errorResponse.rawValue:
            if backends[index].cycleError == nil { backends[index].cycleError = frame }
        case BackendMessage.Kind.commandComplete.rawValue:
            if case let .commandComplete(tag)? = try? BackendMessage(frame: frame) { backends[index].cycleTag = tag }
        default:
            break
        }
    }

    func commitPrepareFinished(_ index: Int, status: BackendMessage.TransactionStatus) {
        let cycleError = backends[index].cycleError
        let tag = backends[index].cycleTag
        backends[index].cycleError = nil
        backends[index].cycleTag = nil
        guard var c = commit, c.phase == .preparing, c.prepared[index] == nil else { return }
        let ok = cycleError == nil && tag == "PREPARE TRANSACTION"
        var fields: ErrorFields?
        if let cycleError, case let .errorResponse(f)? = try? BackendMessage(frame: cycleError) { fields = f }
        if index == lead, let fields, fields.sqlState == "0A000", fields.message?.contains("NOTIFY") == true {
            // A routine notified that the catalog did not show (dynamic SQL …): this transaction is
            // lost to PostgreSQL's refusal, the next ones in this database go without the vote.
            shared.sequenceOrdering.notifiedAnyway(in: database)
            logger.warning("a routine in database \(database) notified, so PREPARE TRANSACTION was refused: its transactions commit without the vote from now on")
        }
        if !ok {
            let why = fields.map { ": \($0.sqlState ?? "") \($0.message ?? "")" } ?? ""
            if let fields, fields.sqlState == "42P01", fields.message?.contains("pgchorus.commit_log") == true {
                // The database was dropped and created again under its name (through another node, or
                // behind pgchorus' back): this transaction is lost, the schema is made again at once.
                shared.forgetSchemas(backend: backends[index].backend.id, database: database)
                schemaCheckDue = true
            }
            // (A serialization failure or deadlock is the workload's, not the backend's: not a warning.)
            let conflict = fields?.sqlState.map { CommitRound.conflictSQLStates.contains($0) } == true
            logger.log(level: conflict ? .info : .warning, "PREPARE TRANSACTION failed on backend \(backends[index].backend.description)\(why)",
                       metadata: ["gid": "\(c.gid)"])
        }
        // A follower whose transaction a timing outcome aborted earlier (left to the vote by the
        // comparison) fails its PREPARE with 25P02: the outcome that counts is the earlier one.
        var error = cycleError
        var timing = fields?.sqlState.flatMap { OutcomeDigest.timingSQLStates.contains($0) ? $0 : nil }
        if !ok, index != lead, let earlier = comparison.leftToVote[index] {
            timing = earlier
            error = BackendMessage.errorResponse(Self.followerConflict(earlier, on: backends[index].backend.description)).frame
        }
        let ready = c.prepareFinished(index, ok: ok, status: status, error: error, isLead: index == lead, timingSQLState: timing)
        commit = c
        if ready { decide() }
    }

    /// A participant died or was failed during the vote: before the decision it counts as a failure;
    /// while finishing it is no longer waited for.
    func commitParticipantLost(_ index: Int) {
        guard var c = commit else { return }
        let ready = c.participantLost(index)
        commit = c
        if ready {
            decide()
        } else if c.phase == .finishing {
            releaseFollowersAfterLead()
            answerIfFinished()
        }
    }

    /// Every participant's PREPARE outcome is in: the vote decides (`CommitRound.decide`).
    private func decide() {
        guard var c = commit, c.readyToDecide else { return }
        // Every earlier cycle has been compared by now (each backend answers its PREPARE after them).
        for i in c.participants where i != lead && c.prepared[i] == false {
            guard let earlier = comparison.leftToVote[i] else { continue }
            c.followerTimingKnownLate(i, timingSQLState: earlier,
                                      error: BackendMessage.errorResponse(Self.followerConflict(earlier, on: backends[i].backend.description)).frame)
        }
        // A statement of a doomed transaction may have seen a commit on some backends only (`doomForEpochs`).
        let decision = c.decide(doomError: transactionDoomed ? BackendMessage.errorResponse(Self.epochDoomFailure).frame : nil)
        logger.debug("commit vote: \(decision.vote.decision), \(decision.successes.count) prepared of \(c.participants.count)", metadata: ["gid": "\(c.gid)"])
        if shared.testHook == "exit-after-prepare" {
            logger.critical("test hook: exiting between PREPARE TRANSACTION and COMMIT PREPARED", metadata: ["gid": "\(c.gid)"])
            exit(75)
        }
        (decision.vote.decision == .commit ? ProxyMetrics.votesCommitted : ProxyMetrics.votesRolledBack).increment()
        // Stored before failing anyone: failBackend re-enters through commitParticipantLost.
        commit = c
        if decision.vote.decision == .commit {
            for i in decision.failNow {
                failBackend(i, reason: "PREPARE TRANSACTION failed while the majority committed (\(c.gid))")
            }
            // The COMMIT PREPAREDs land in the node's order of commits and statements (`CommitEpochs`).
            if catalogChangeDue && catalogChange == nil {
                // DDL of this transaction the peers were not told of (a path that did not hold its group).
                announceCatalogChange { [self] in awaitCommitTurn { [self] in finishVote() } }
            } else {
                awaitCommitTurn { [self] in finishVote() }
            }
        } else {
            finishVote()
        }
    }

    /// Sends the decision (COMMIT or ROLLBACK PREPARED) to every participant that prepared.
    private func finishVote() {
        guard var c = commit, c.phase == .decided else {
            endCommitTurn()
            return
        }
        // With statements parked at the commit's grant, the followers' COMMIT PREPAREDs wait for the lead's.
        let parked = commitTurn.map { shared.epochs.hasDeferrals($0) } == true
        let live = backends.map(\.isLive)
        guard let finish = c.finish(seq: nextSeq, lead: lead, live: { live[$0] }, followersWaitForLead: parked,
                                    onlyFirst: shared.testHook == "exit-after-first-commit-prepared") else { return }
        nextSeq += 1
        commit = c
        for i in finish.now { sendOwn(finish.command, to: i, kind: .finish, seq: c.finishSeq) }
        // Failed participants still in an (aborted) transaction block are rolled back where they stay.
        for i in finish.rollback { sendOwn("ROLLBACK", to: i, kind: .finish, seq: c.finishSeq) }
        flushBackends()
        answerIfFinished()
    }

    /// The lead's COMMIT PREPARED has finished (or the lead is gone): the followers held back for it go,
    /// each once the node's order lets it land there (`CommitEpochs.applyOnFollower`).
    private func releaseFollowersAfterLead() {
        guard var c = commit else { return }
        let followers = c.followersReleased(leadLive: c.leadFinishing.map { backends[$0].isLive } ?? false)
        guard !followers.isEmpty else { return }
        commit = c
        let (command, seq, gid) = (c.finishCommand, c.finishSeq, c.gid)
        for i in followers where backends[i].isLive {
            var now = true
            if let ticket = commitTurn, let context {
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                let loop = context.eventLoop
                now = shared.epochs.applyOnFollower(ticket, backend: backends[i].backend.id) {
                    loop.execute { bound.value.deferredFollowerCommit(command, to: i, seq: seq, gid: gid) }
                }
            }
            if now { sendOwn(command, to: i, kind: .finish, seq: seq) }
        }
        flushBackends()
    }

    func deferredFollowerCommit(_ command: String, to i: Int, seq: Int, gid: String) {
        guard let c = commit, c.gid == gid, c.awaitsFinish(i), backends[i].isLive else { return }
        sendOwn(command, to: i, kind: .finish, seq: seq)
        flushBackend(i)
    }

    /// pgchorus' own statements on the client's connection (its schema, the vote's PREPARE) must not
    /// end by the client's `statement_timeout`: a timeout there says nothing of the
    /// client's statements and, landing on one backend alone, failed it. Until 2026-12-07 they could
    /// (`bench/cancel-storm.sh` with `STATEMENT_TIMEOUT_MS=20` on a fresh database: the schema's DDL
    /// ended by the timeout, "schema pgchorus does not exist" for the next `DEFAULT now()` table).
    /// In front of statements in one transaction that ends with them (a Query of several statements
    /// outside a block, or a block ended by PREPARE TRANSACTION). Not COMMIT/ROLLBACK PREPARED, which
    /// PostgreSQL refuses in a Query of several statements: putting the setting aside in Queries of
    /// pgchorus' own around it cost sessions with a timeout 14 % of their TPC-B throughput on 2 backends
    /// (`bench/ab.sh`, 2026-12-07), for a statement that rarely takes long; one ended by the timeout
    /// fails that backend, as before.
    static let noTimeoutInTransaction = "SET LOCAL statement_timeout = 0; "

    /// The session may have a `statement_timeout` (the lead's last answer, or a statement since that
    /// may have changed it, or not asked yet).
    var ownStatementsMayTimeOut: Bool {
        statementTimeoutMilliseconds > 0 || statementTimeoutDue
    }

    // MARK: phase two

    func commitFinishFinished(_ index: Int) {
        let cycleError = backends[index].cycleError
        let tag = backends[index].cycleTag
        backends[index].cycleError = nil
        backends[index].cycleTag = nil
        guard var c = commit else { return }
        if OrderTrace.enabled { trace("CD", "\(c.gid) \(backends[index].backend.id)") }
        if let e = cycleError, case let .errorResponse(fields)? = try? BackendMessage(frame: e) {
            logger.error("finishing \(c.gid) failed on backend \(backends[index].backend.description): \(fields.sqlState ?? "") \(fields.message ?? "")")
        }
        c.finishFinished(index, failed: cycleError != nil && tag == nil)
        commit = c
        releaseFollowersAfterLead()
        if shared.testHook == "exit-after-first-commit-prepared" {
            logger.critical("test hook: exiting after the first COMMIT PREPARED", metadata: ["gid": "\(c.gid)"])
            exit(75)
        }
        answerIfFinished()
    }

    /// Once every participant has finished: the round's failures are carried out and the client answered.
    private func answerIfFinished() {
        guard var c = commit, c.answerIfFinished(), let vote = c.vote else { return }
        commit = nil
        shared.votesInFlight.ended(c.gid)
        let notifications = vote.decision == .commit ? heldNotifications : []
        endCommitTurn()
        // Every participant's transaction has ended: all are compared again.
        comparison.transactionVoted()
        endDoom()
        wrapPending = false
        for i in c.failAfterFinish {
            failBackend(i, reason: vote.decision == .commit ? "COMMIT PREPARED failed while the majority committed (\(c.gid))"
                                                            : "PREPARE TRANSACTION succeeded while the majority failed (\(c.gid))")
        }
        guard phase == .relaying else { return }
        for a in c.answer() {
            switch a {
            case let .message(m): writeClient(m)
            case .error: writeClientError(c.error, gid: c.gid)
            }
        }
        cycleDelivered(nextSeq - 1, status: .idle)
        flushClient()
        // Committed on every backend: the notifications it held go now (dropped on a rollback).
        heldNotifications = notifications
        sendHeldNotifications(intoTransaction: false)
        if vote.decision == .commit { releaseNotificationsAfterCommit() }
        replayHeldFrames()
    }

    /// The client's error when a follower alone ended the transaction with a timing outcome before
    /// its PREPARE and the vote rolled it back (always for `CommitRound.conflictSQLStates`).
    static func followerConflict(_ sqlState: String, on backend: String) -> ErrorFields {
        let what = ["40001": "could not serialize access", "40P01": "deadlock detected", "55P03": "lock timeout",
                    "57014": "statement timeout or cancel"][sqlState] ?? "SQLSTATE \(sqlState)"
        return ErrorFields(severity: "ERROR", sqlState: sqlState,
                           message: "\(what) on backend \(backend), not on the lead backend: pgchorus rolled this transaction back on every backend",
                           hint: "Retry the transaction.")
    }

    private func writeClientError(_ frame: PostgresFrame?, gid: String) {
        if let frame, case let .errorResponse(fields)? = try? BackendMessage(frame: frame), fields.severity != "FATAL" {
            writeClientBytes(frame.bytes)
        } else {
            writeClient(.errorResponse(ErrorFields(severity: "ERROR", sqlState: "40000",
                                                   message: "pgchorus rolled back the transaction: PREPARE TRANSACTION failed on most backends (\(gid))")))
        }
    }
}
