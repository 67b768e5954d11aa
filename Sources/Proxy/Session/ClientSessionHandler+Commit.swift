#if canImport(Glibc)
import Glibc
#endif
import Logging
import NIOCore
import State
import Wire

/// A commit vote in progress for one client COMMIT.
struct CommitInProgress {
    var gid: String
    /// The client's COMMIT group, to answer it message by message.
    var frames: [PostgresFrame]
    var participants: [Int]
    var prepared: [Int: Bool] = [:]
    /// Transaction status of each participant after its prepare cycle.
    var statusAfterPrepare: [Int: BackendMessage.TransactionStatus] = [:]
    /// The first error of the prepare phase (the lead's if it has one), byte-exact.
    var error: PostgresFrame?
    var vote: CommitVote?
    var finishing: Set<Int> = []
    /// Successes of a rollback decision, failed once their ROLLBACK PREPARED is done.
    var failAfterFinish: [Int] = []
    /// The vote ends an autocommit write whose replies the client already has: it gets only the ReadyForQuery.
    var autocommit = false
    /// The lead's PREPARE failed with a timing outcome (see `CommitVote.init(prepared:timingFailure:)`).
    var leadTimingFailure = false
    /// The vote committed and waits for its turn to apply the COMMIT PREPAREDs (`CommitEpochs`).
    var awaitingTurn = false
    /// Followers whose COMMIT PREPARED goes once the lead's (`leadFinishing`) has finished: statements
    /// were parked when the commit was granted (see `CommitEpochs.applyOnFollower`).
    var followersAfterLead: [Int] = []
    var leadFinishing: Int?
    var finishCommand = ""
    var finishSeq = 0
}

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
        FrontendMessage.query(Self.schemaDDL).encode(into: &b)
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

    func startCommit(_ frames: [PostgresFrame], autocommit: Bool = false) {
        let gid = shared.nextGlobalTransactionID()
        // Named statements created in this group must exist on the backends as the client believes;
        // they go in a cycle of their own, so an error there cannot swallow the PREPARE.
        var named = ByteBuffer()
        for f in frames {
            if f.type == FrontendMessage.Kind.parse.rawValue, case let .parse(p)? = try? FrontendMessage(frame: f), !p.name.isEmpty {
                named.writeImmutableBuffer(f.bytes)
            } else if f.type == FrontendMessage.Kind.close.rawValue {
                named.writeImmutableBuffer(f.bytes)
            }
        }
        if named.readableBytes > 0 {
            FrontendMessage.sync.encode(into: &named)
            dispatch(named, kind: .hidden, waitsForLead: false)
        }
        var b = ByteBuffer()
        // The commit-log row makes the decision readable from any backend once one COMMIT PREPARED ran.
        // (Its time is the transaction's, given: a default would differ per backend.)
        FrontendMessage.query("INSERT INTO pgchorus.commit_log (gid, committed_at) VALUES ('\(gid)', '\(transactionTimestampLiteral())'); PREPARE TRANSACTION '\(gid)'").encode(into: &b)
        shared.votesInFlight.started(gid)
        commit = CommitInProgress(gid: gid, frames: frames, participants: backends.indices.filter { backends[$0].isLive }, autocommit: autocommit)
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
        guard var c = commit, c.prepared[index] == nil else {
            backends[index].cycleError = nil
            backends[index].cycleTag = nil
            return
        }
        let ok = backends[index].cycleError == nil && backends[index].cycleTag == "PREPARE TRANSACTION"
        c.prepared[index] = ok
        c.statusAfterPrepare[index] = status
        if let e = backends[index].cycleError, c.error == nil || index == lead { c.error = e }
        if index == lead, let e = backends[index].cycleError, case let .errorResponse(fields)? = try? BackendMessage(frame: e),
           let code = fields.sqlState, OutcomeDigest.timingSQLStates.contains(code) {
            c.leadTimingFailure = true
        }
        if index == lead, let e = backends[index].cycleError, case let .errorResponse(fields)? = try? BackendMessage(frame: e),
           fields.sqlState == "0A000", fields.message?.contains("NOTIFY") == true {
            // A routine notified that the catalog did not show (dynamic SQL …): this transaction is
            // lost to PostgreSQL's refusal, the next ones in this database go without the vote.
            shared.sequenceOrdering.notifiedAnyway(in: database)
            logger.warning("a routine in database \(database) notified, so PREPARE TRANSACTION was refused: its transactions commit without the vote from now on")
        }
        if !ok {
            var why = ""
            if let e = backends[index].cycleError, case let .errorResponse(fields)? = try? BackendMessage(frame: e) {
                why = ": \(fields.sqlState ?? "") \(fields.message ?? "")"
                if fields.sqlState == "42P01", fields.message?.contains("pgchorus.commit_log") == true {
                    // The database was dropped and created again under its name (through another node, or
                    // behind pgchorus' back): this transaction is lost, the schema is made again at once.
                    shared.forgetSchemas(backend: backends[index].backend.id, database: database)
                    schemaCheckDue = true
                }
            }
            logger.warning("PREPARE TRANSACTION failed on backend \(backends[index].backend.description)\(why)", metadata: ["gid": "\(c.gid)"])
        }
        backends[index].cycleError = nil
        backends[index].cycleTag = nil
        commit = c
        decideIfReady()
    }

    /// A participant died or was failed during the vote: it counts as a failure.
    func commitParticipantLost(_ index: Int) {
        guard var c = commit, c.participants.contains(index) else { return }
        if c.vote == nil {
            if c.prepared[index] == nil { c.prepared[index] = false }
            commit = c
            decideIfReady()
        } else if c.finishing.contains(index) {
            c.finishing.remove(index)
            c.followersAfterLead.removeAll { $0 == index }
            commit = c
            releaseFollowersAfterLead()
            answerIfFinished()
        }
    }

    private func decideIfReady() {
        guard var c = commit, c.vote == nil, c.participants.allSatisfy({ c.prepared[$0] != nil }) else { return }
        if transactionDoomed {
            // A statement of it may have seen a commit on some backends only (`doomForEpochs`).
            c.error = BackendMessage.errorResponse(Self.epochDoomFailure).frame
        }
        let vote = CommitVote(prepared: c.participants.map { c.prepared[$0]! }, timingFailure: c.leadTimingFailure || transactionDoomed)
        c.vote = vote
        let successes = vote.finishOn.map { c.participants[$0] }
        let toFail = vote.fail.map { c.participants[$0] }
        logger.debug("commit vote: \(vote.decision), \(successes.count) prepared of \(c.participants.count)", metadata: ["gid": "\(c.gid)"])
        if shared.testHook == "exit-after-prepare" {
            logger.critical("test hook: exiting between PREPARE TRANSACTION and COMMIT PREPARED", metadata: ["gid": "\(c.gid)"])
            exit(75)
        }
        (vote.decision == .commit ? ProxyMetrics.votesCommitted : ProxyMetrics.votesRolledBack).increment()
        if vote.decision == .commit { c.awaitingTurn = true }
        // Stored before failing anyone: failBackend re-enters through commitParticipantLost.
        commit = c
        if vote.decision == .commit {
            for i in toFail {
                failBackend(i, reason: "PREPARE TRANSACTION failed while the majority committed (\(c.gid))")
            }
            // The COMMIT PREPAREDs land in the node's order of commits and statements (`CommitEpochs`).
            awaitCommitTurn { [self] in finishVote() }
        } else {
            finishVote()
        }
    }

    /// Sends the decision (COMMIT or ROLLBACK PREPARED) to every participant that prepared.
    private func finishVote() {
        guard var c = commit, let vote = c.vote else {
            endCommitTurn()
            return
        }
        c.awaitingTurn = false
        let successes = vote.finishOn.map { c.participants[$0] }
        let toFail = vote.fail.map { c.participants[$0] }
        let command = vote.decision == .commit ? "COMMIT PREPARED '\(c.gid)'" : "ROLLBACK PREPARED '\(c.gid)'"
        var finishTargets = successes
        if shared.testHook == "exit-after-first-commit-prepared" { finishTargets = Array(successes.prefix(1)) }
        let seq = nextSeq
        nextSeq += 1
        // With statements parked at the commit's grant, the followers' COMMIT PREPAREDs wait for the lead's.
        let afterLead = vote.decision == .commit && finishTargets.contains(lead) && commitTurn.map { shared.epochs.hasDeferrals($0) } == true
        c.finishCommand = command
        c.finishSeq = seq
        for i in finishTargets where backends[i].isLive {
            c.finishing.insert(i)
            if afterLead && i != lead {
                c.followersAfterLead.append(i)
            } else {
                sendOwn(command, to: i, kind: .finish, seq: seq)
            }
        }
        if afterLead { c.leadFinishing = lead }
        // Failed participants still in an (aborted) transaction block are rolled back where they stay.
        for i in c.participants where !successes.contains(i) && backends[i].isLive && !toFail.contains(i) {
            if let s = c.statusAfterPrepare[i], s != .idle {
                sendOwn("ROLLBACK", to: i, kind: .finish, seq: seq)
                c.finishing.insert(i)
            }
        }
        if vote.decision == .rollback { c.failAfterFinish = toFail }
        commit = c
        flushBackends()
        answerIfFinished()
    }

    /// The lead's COMMIT PREPARED has finished (or the lead is gone): the followers held back for it go,
    /// each once the node's order lets it land there (`CommitEpochs.applyOnFollower`).
    private func releaseFollowersAfterLead() {
        guard var c = commit, !c.followersAfterLead.isEmpty, let l = c.leadFinishing, !c.finishing.contains(l) || !backends[l].isLive else { return }
        let followers = c.followersAfterLead
        c.followersAfterLead = []
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
        guard let c = commit, c.gid == gid, c.finishing.contains(i), backends[i].isLive else { return }
        sendOwn(command, to: i, kind: .finish, seq: seq)
        flushBackend(i)
    }

    // MARK: phase two

    func commitFinishFinished(_ index: Int) {
        defer {
            backends[index].cycleError = nil
            backends[index].cycleTag = nil
        }
        guard var c = commit else { return }
        if OrderTrace.enabled { trace("CD", "\(c.gid) \(backends[index].backend.id)") }
        if let e = backends[index].cycleError, case let .errorResponse(fields)? = try? BackendMessage(frame: e) {
            logger.error("finishing \(c.gid) failed on backend \(backends[index].backend.description): \(fields.sqlState ?? "") \(fields.message ?? "")")
            if c.vote?.decision == .commit, backends[index].cycleTag == nil {
                c.failAfterFinish.append(index)
            }
        }
        backends[index].cycleError = nil
        backends[index].cycleTag = nil
        c.finishing.remove(index)
        commit = c
        releaseFollowersAfterLead()
        if shared.testHook == "exit-after-first-commit-prepared" {
            logger.critical("test hook: exiting after the first COMMIT PREPARED", metadata: ["gid": "\(c.gid)"])
            exit(75)
        }
        answerIfFinished()
    }

    private func answerIfFinished() {
        guard let c = commit, let vote = c.vote, c.finishing.isEmpty, !c.awaitingTurn else { return }
        commit = nil
        shared.votesInFlight.ended(c.gid)
        let notifications = vote.decision == .commit ? heldNotifications : []
        endCommitTurn()
        // Every participant's transaction has ended: all are compared again.
        leftToVote.removeAll()
        endDoom()
        wrapPending = false
        for i in c.failAfterFinish {
            failBackend(i, reason: "PREPARE TRANSACTION succeeded while the majority failed (\(c.gid))")
        }
        guard phase == .relaying else { return }
        if c.autocommit && vote.decision == .rollback { writeClientError(c.error, gid: c.gid) }
        var answeredError = false
        for f in c.frames {
            switch f.type {
            case FrontendMessage.Kind.query.rawValue, FrontendMessage.Kind.execute.rawValue:
                if vote.decision == .commit {
                    writeClient(.commandComplete("COMMIT"))
                } else {
                    writeClientError(c.error, gid: c.gid)
                    answeredError = true
                }
            case FrontendMessage.Kind.parse.rawValue where !answeredError:
                writeClient(.parseComplete)
            case FrontendMessage.Kind.bind.rawValue where !answeredError:
                writeClient(.bindComplete)
            case FrontendMessage.Kind.describe.rawValue where !answeredError:
                if case .describe(.statement, _)? = try? FrontendMessage(frame: f) { writeClient(.parameterDescription([])) }
                writeClient(.noData)
            case FrontendMessage.Kind.close.rawValue where !answeredError:
                writeClient(.closeComplete)
            default:
                break
            }
        }
        writeClient(.readyForQuery(.idle))
        cycleDelivered(nextSeq - 1, status: .idle)
        flushClient()
        // Committed on every backend: the notifications it held go now (dropped on a rollback).
        heldNotifications = notifications
        sendHeldNotifications(intoTransaction: false)
        if vote.decision == .commit { releaseNotificationsAfterCommit() }
        replayHeldFrames()
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
