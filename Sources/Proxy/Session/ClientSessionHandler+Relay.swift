import Logging
import NIOCore
import State
import Wire

/// A group of client messages on its way to the backends.
struct PendingGroup {
    /// The cycle the group's replies belong to; nil for groups without a ReadyForQuery of their own
    /// (Flush, COPY data).
    var seq: Int?
    var kind: CycleKind?
    var bytes: ByteBuffer
    /// Lead-first: the other backends get the group only once the lead has answered it, so row
    /// locks are taken in the lead's order everywhere.
    var waitsForLead: Bool
    var holdReady = false
    var leadDone = false
}

extension ClientSessionHandler {
    /// Replies that only acknowledge a message and are the same from every backend in step.
    /// (A switch: asked for every backend message, where a Set lookup hashes.)
    static func isAcknowledgement(_ type: UInt8) -> Bool {
        switch type {
        case BackendMessage.Kind.parseComplete.rawValue, BackendMessage.Kind.bindComplete.rawValue,
             BackendMessage.Kind.closeComplete.rawValue, BackendMessage.Kind.noData.rawValue,
             BackendMessage.Kind.parameterDescription.rawValue, BackendMessage.Kind.rowDescription.rawValue:
            return true
        default:
            return false
        }
    }

    /// Flushes one backend outside any access to `backends`: a failing flush closes the channel
    /// synchronously, and its callbacks come straight back into this session.
    func flushBackend(_ index: Int) {
        guard backends[index].needsFlush, let channel = backends[index].channel else { return }
        backends[index].needsFlush = false
        channel.flush()
    }

    func flushBackends() {
        for i in backends.indices { flushBackend(i) }
    }

    var liveCount: Int { backends.reduce(0) { $0 + ($1.isLive ? 1 : 0) } }

    // MARK: client → backends

    /// A client message in the relaying phase: collected into groups that end at Sync, Query,
    /// FunctionCall (a reply cycle with a ReadyForQuery) or at Flush and COPY data (sent on at once).
    func handleRelayFrame(_ frame: PostgresFrame) {
        if commit != nil || waitingGroup != nil || wrapPending || handoverTicket != nil {
            heldFrames.append(frame)
            return
        }
        guard let kind = FrontendMessage.Kind(rawValue: frame.type) else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08P01",
                              message: "invalid frontend message type \(frame.type) ('\(WireError.printable(frame.type))')"))
            return
        }
        if kind == .terminate {
            close()
            return
        }
        currentGroup.append(frame)
        currentGroupBytes += frame.bytes.readableBytes
        switch kind {
        case .sync, .query, .functionCall:
            endGroup(cycle: true)
        case .flush, .copyData, .copyDone, .copyFail:
            endGroup(cycle: false)
        default:
            if currentGroupBytes > shared.configuration.proxy.maxMessageSize { endGroup(cycle: false) }
        }
    }

    /// Handles the client messages held while the session waited (vote, sequence turn, new lead);
    /// those that must wait again are held again, in order.
    func replayHeldFrames() {
        let held = heldFrames
        heldFrames = []
        for f in held { handleRelayFrame(f) }
        flushBackends()
    }

    private func endGroup(cycle: Bool) {
        if lastStatus == .idle && !openExtendedGroup { adoptClusterView() }
        guard phase == .relaying else { return }
        if cycle { ProxyMetrics.statements.increment() }
        let frames = currentGroup
        currentGroup = []
        currentGroupBytes = 0
        tracker.rewrite = liveCount > 1
        let result = tracker.process(frames) {
            if let t = transactionTimestamp { return t }
            let t = WallClock.timestampLiteral()
            transactionTimestamp = t
            return t
        }
        if result.writes { wroteInTransaction = true }
        if result.createsTemporaryObject && votedCommitAvailable {
            // PostgreSQL refuses PREPARE TRANSACTION for a transaction that used a temporary table.
            votedCommitAvailable = false
            logger.info("the session created a temporary table: its commits go without the vote from now on")
        }
        let replicated = liveCount > 1
        if cycle, result.isCommit, replicated, lastStatus == .inTransaction, wroteInTransaction,
           votedCommitAvailable, shared.configuration.replication.twoPhaseCommit {
            startCommit(frames)
            return
        }
        if replicated, result.mixesTransactionControl, wroteInTransaction {
            logger.warning("COMMIT sent together with other statements in one message: committed without the vote")
        }
        let routing = shared.configuration.replication.readRouting
        if replicated, cycle, routing != "all", result.isPlainRead, !result.writes, lastStatus == .idle, unreleased.isEmpty, routedRead == nil {
            let live = backends.indices.filter { backends[$0].isLive }
            balanceCursor &+= 1
            route(result.bytes, to: routing == "lead" ? lead : live[balanceCursor % live.count])
            return
        }
        if replicated, result.hasDDL {
            shared.sequenceOrdering.invalidate(database)
            ddlSeqs.insert(nextSeq)
        }
        // An autocommit write runs as BEGIN; statement; PREPARE TRANSACTION and the vote, like COMMIT.
        let wrap = replicated && cycle && result.writes && result.isWrappable && !result.hasDDL && lastStatus == .idle
            && shared.configuration.replication.twoPhaseCommit && votedCommitAvailable
        if replicated, cycle, needsSequenceOrder(result) {
            waitForOrder(result.bytes, cycle: cycle, wrap: wrap)
            return
        }
        send(result.bytes, cycle: cycle, wrap: wrap)
    }

    /// Dispatches a client group, wrapped for the vote when `wrap`; returns the group's cycle.
    @discardableResult
    func send(_ bytes: ByteBuffer, cycle: Bool, wrap: Bool) -> Int {
        if wrap {
            var begin = ByteBuffer()
            FrontendMessage.query("BEGIN").encode(into: &begin)
            dispatch(begin, kind: .hidden, waitsForLead: false)
            wrapPending = true
        }
        let seq = nextSeq
        dispatch(bytes, kind: cycle ? .client : nil, waitsForLead: cycle && liveCount > 1, holdReady: wrap)
        openExtendedGroup = !cycle
        return seq
    }

    /// Sends a group to the lead now and to the others when `releaseGroups` lets it go.
    func dispatch(_ bytes: ByteBuffer, kind: CycleKind?, waitsForLead: Bool, holdReady: Bool = false) {
        var seq: Int?
        if kind != nil {
            seq = nextSeq
            nextSeq += 1
        }
        unreleased.append(PendingGroup(seq: seq, kind: kind, bytes: bytes, waitsForLead: waitsForLead, holdReady: holdReady))
        // A new lead waiting for its handover gets this group with the others once it may.
        guard handoverTicket == nil else { return }
        if let kind, let seq { backends[lead].expected.append(Expectation(seq: seq, kind: kind, holdReady: holdReady)) }
        backends[lead].write(bytes)
        releaseGroups()
    }

    /// Sends a read to one backend; its reply goes to the client as it comes.
    func route(_ bytes: ByteBuffer, to index: Int, seq existing: Int? = nil) {
        let seq = existing ?? nextSeq
        if existing == nil { nextSeq += 1 }
        routedRead = (seq, bytes, index)
        backends[index].expected.append(Expectation(seq: seq, kind: .routedRead))
        backends[index].write(bytes)
    }

    private func routedFrame(_ index: Int, _ exp: Expectation, _ frame: PostgresFrame) {
        guard exp.seq > deliveredThrough else { return }
        // Notifications come from the lead only.
        if index != lead && frame.type == BackendMessage.Kind.notificationResponse.rawValue { return }
        forwardToClient(frame)
        if !Self.isAcknowledgement(frame.type) && frame.type != BackendMessage.Kind.noticeResponse.rawValue
            && frame.type != BackendMessage.Kind.parameterStatus.rawValue {
            deliveringBytes = true
        }
    }

    func releaseGroups() {
        // Nothing goes to the followers that a new lead waiting for its handover has not had.
        guard handoverTicket == nil else { return }
        while let g = unreleased.first, !g.waitsForLead || g.leadDone {
            unreleased.removeFirst()
            for i in backends.indices where i != lead && backends[i].isLive {
                if let kind = g.kind, let seq = g.seq {
                    backends[i].expected.append(Expectation(seq: seq, kind: kind, holdReady: g.holdReady, ordered: g.waitsForLead))
                    if g.waitsForLead { shared.leadHandover.released(to: backends[i].backend.id) }
                }
                backends[i].write(g.bytes)
            }
        }
        // After the releases above: a session waiting for a new lead counts them first.
        noteLeadOrdering()
    }

    func markLeadDone(_ seq: Int) {
        if let i = unreleased.firstIndex(where: { $0.seq == seq }) {
            unreleased[i].leadDone = true
            releaseGroups()
        }
    }

    // MARK: backends → client

    func backendFrame(_ index: Int, _ frame: PostgresFrame) {
        switch backends[index].phase {
        case .loggingIn:
            backendLoginFrame(index, frame)
        case .ready:
            guard phase == .relaying || phase == .draining, !backends[index].dying else { return }
            if frame.type == BackendMessage.Kind.errorResponse.rawValue, liveCount > 1,
               case let .errorResponse(fields)? = try? BackendMessage(frame: frame),
               fields.severity == "FATAL" || fields.severity == "PANIC" {
                // This backend is going away while others can carry on: its last words are logged, not forwarded.
                logger.warning("backend \(backends[index].backend.description) ended the session: \(fields.sqlState ?? "") \(fields.message ?? "")")
                backends[index].dying = true
                return
            }
            if frame.type == BackendMessage.Kind.noticeResponse.rawValue, liveCount > 1,
               case let .noticeResponse(fields)? = try? BackendMessage(frame: frame), fields.sqlState?.hasPrefix("57P") == true {
                // "terminating connection due to immediate shutdown": the session carries on without this backend.
                logger.warning("backend \(backends[index].backend.description) is shutting down: \(fields.message ?? "")")
                return
            }
            if index == lead { leadFrame(frame) } else { followerFrame(index, frame) }
        case .connecting, .closed:
            break
        }
    }

    private func leadFrame(_ frame: PostgresFrame) {
        guard let exp = backends[lead].expected.first else {
            // Between cycles only asynchronous messages arrive: notifications, notices, parameter changes.
            forwardToClient(frame)
            return
        }
        switch exp.kind {
        case .client:
            if liveCount > 1 { backends[lead].digest.add(frame, hashRows: shared.configuration.replication.compareRows) }
            if exp.holdReady && frame.type == BackendMessage.Kind.readyForQuery.rawValue {
                // Kept back until the vote on this autocommit write is carried out.
            } else if exp.seq > deliveredThrough {
                if Self.isAcknowledgement(frame.type), acknowledgementsToSkip > 0 {
                    // A new lead repeats what the old one had already acknowledged in this cycle.
                    acknowledgementsToSkip -= 1
                } else {
                    forwardToClient(frame)
                    // Notices and parameter changes do not tie the client to this backend's reply;
                    // acknowledgements (ParseComplete, BindComplete, NoData …) are the same from any backend.
                    if Self.isAcknowledgement(frame.type) {
                        acknowledgementsDelivered += 1
                    } else if frame.type != BackendMessage.Kind.noticeResponse.rawValue && frame.type != BackendMessage.Kind.parameterStatus.rawValue {
                        deliveringBytes = true
                    }
                }
            }
            if frame.type == BackendMessage.Kind.copyInResponse.rawValue || frame.type == BackendMessage.Kind.copyBothResponse.rawValue {
                // The client now sends COPY data: the others must be in COPY too.
                markLeadDone(exp.seq)
            }
        case .prepare, .finish:
            recordCommitMessage(lead, frame)
        case .internalQuery:
            recordInternalMessage(lead, frame)
        case .catalog:
            recordCatalogRow(frame)
        case .routedRead:
            routedFrame(lead, exp, frame)
        case .hidden:
            break
        }
        if frame.type == BackendMessage.Kind.readyForQuery.rawValue { finishCycle(lead, exp, frame) }
    }

    private func followerFrame(_ index: Int, _ frame: PostgresFrame) {
        guard let exp = backends[index].expected.first else { return }
        switch exp.kind {
        case .client:
            backends[index].digest.add(frame, hashRows: shared.configuration.replication.compareRows)
        case .prepare, .finish:
            recordCommitMessage(index, frame)
        case .internalQuery:
            recordInternalMessage(index, frame)
        case .catalog:
            break
        case .routedRead:
            routedFrame(index, exp, frame)
        case .hidden:
            break
        }
        if frame.type == BackendMessage.Kind.readyForQuery.rawValue { finishCycle(index, exp, frame) }
    }

    private func finishCycle(_ index: Int, _ exp: Expectation, _ frame: PostgresFrame) {
        backends[index].expected.removeFirst()
        if exp.ordered { shared.leadHandover.finished(on: backends[index].backend.id) }
        let status = frame.bytes.getInteger(at: frame.bytes.readerIndex + 5, as: UInt8.self).flatMap(BackendMessage.TransactionStatus.init) ?? .idle
        switch exp.kind {
        case .client:
            if index == lead {
                let fresh = exp.seq > deliveredThrough
                if fresh { cycleDelivered(exp.seq, status: status) }
                markLeadDone(exp.seq)
                if ddlSeqs.remove(exp.seq) != nil { shared.sequenceOrdering.invalidate(database) }
                if exp.holdReady && fresh { autocommitStatementDone(status: status) }
            }
            if exp.seq == orderSeq { orderFinished(on: index) }
            if liveCount > 1 {
                backends[index].completed.append((exp.seq, backends[index].digest))
            }
            backends[index].digest = OutcomeDigest()
            compareCompleted()
        case .prepare:
            commitPrepareFinished(index, status: status)
        case .finish:
            commitFinishFinished(index)
        case .internalQuery:
            internalQueryFinished(index)
        case .catalog:
            catalogLoaded()
        case .routedRead:
            if exp.seq > deliveredThrough { cycleDelivered(exp.seq, status: status) }
            routedRead = nil
        case .hidden:
            break
        }
        finishDrainIfDone()
    }

    /// The client has the whole reply of cycle `seq` (or everything it will get of it).
    func cycleDelivered(_ seq: Int, status: BackendMessage.TransactionStatus) {
        deliveredThrough = seq
        deliveringBytes = false
        acknowledgementsDelivered = 0
        acknowledgementsToSkip = 0
        lastStatus = status
        if status == .idle {
            wroteInTransaction = false
            transactionTimestamp = nil
        }
    }

    /// Forwards one of the lead's messages, with the client's own process id in notifications it caused.
    private func forwardToClient(_ frame: PostgresFrame) {
        switch frame.type {
        case BackendMessage.Kind.notificationResponse.rawValue:
            if case let .notificationResponse(pid, channel, payload)? = try? BackendMessage(frame: frame),
               pid == backends[lead].login.processID {
                writeClient(.notificationResponse(processID: virtualProcessID, channel: channel, payload: payload))
                return
            }
        case BackendMessage.Kind.errorResponse.rawValue:
            if case let .errorResponse(fields)? = try? BackendMessage(frame: frame),
               let severity = fields.severity, severity == "FATAL" || severity == "PANIC" {
                fatalForwarded = true
            }
        default:
            break
        }
        writeClientBytes(frame.bytes)
    }

    // MARK: comparison and failures

    /// Compares the finished cycles of all live backends, oldest first; a backend whose outcome
    /// differs from the majority is failed (a tie goes to the side of the lead).
    func compareCompleted() {
        for _ in 0..<10_000 {
            let live = backends.indices.filter { backends[$0].isLive }
            guard live.count > 1, live.allSatisfy({ !backends[$0].completed.isEmpty }) else {
                if live.count <= 1 { for i in live { backends[i].completed.removeAll() } }
                return
            }
            var entries: [(index: Int, seq: Int, digest: OutcomeDigest)] = []
            entries.reserveCapacity(live.count)
            for i in live {
                let c = backends[i].completed.removeFirst()
                entries.append((i, c.seq, c.digest))
            }
            // The usual case, every backend alike: no grouping needed.
            if entries.allSatisfy({ $0.digest == entries[0].digest }) { continue }
            var groups: [(digest: OutcomeDigest, members: [Int])] = []
            for e in entries {
                if let g = groups.firstIndex(where: { $0.digest == e.digest }) { groups[g].members.append(e.index) } else { groups.append((e.digest, [e.index])) }
            }
            guard groups.count > 1 else { continue }
            let best = groups.map(\.members.count).max()!
            let winner = groups.first(where: { $0.members.count == best && $0.members.contains(lead) })
                ?? groups.first(where: { $0.members.count == best })!
            for g in groups where g.digest != winner.digest {
                for i in g.members {
                    failBackend(i, reason: "statement outcome differs from \(winner.members.count) other backend(s): got [\(g.digest.description)], expected [\(winner.digest.description)]")
                }
            }
        }
    }

    /// Between transactions, drops the backends the cluster took out of service since the session
    /// last looked (a peer failed one, an admin detached one). A backend brought online joins new
    /// sessions only: an open session has state (prepared statements, settings) it would lack.
    func adoptClusterView() {
        let generation = shared.registry.viewGeneration
        guard generation != seenViewGeneration else { return }
        seenViewGeneration = generation
        let online = Set(shared.registry.online().map(\.id))
        let gone = backends.indices.filter { backends[$0].isLive && !online.contains(backends[$0].backend.id) }
        guard !gone.isEmpty else { return }
        if gone.count == liveCount {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08006",
                              message: "every backend of this session was taken out of service; reconnect to use the backends online now"))
            return
        }
        for i in gone {
            failBackend(i, reason: "taken out of service by the cluster (\(shared.registry.entry(backends[i].backend.id)?.reason ?? "status changed"))")
        }
    }

    /// Takes a backend out of this session and out of service.
    func failBackend(_ index: Int, reason: String) {
        guard backends[index].phase != .closed else { return }
        shared.registry.fail(backends[index].backend.id, reason: reason, now: WallClock.unixTime())
        logger.error("backend \(backends[index].backend.description) dropped from the session: \(reason)")
        ProxyMetrics.backendsDropped.increment()
        backends[index].phase = .closed
        dropExpectations(index)
        backends[index].completed.removeAll()
        backends[index].channel?.close(promise: nil)
        if virtualProcessID != 0 { updateCancelTargets() }
        if index == lead { promoteLead() }
        // The failed lead will release nothing more (closed, or the session waits for a new lead).
        noteLeadOrdering()
        if let r = routedRead, r.target == index, phase == .relaying {
            // The backend serving a read failed: another one answers it, unless part of the reply was out.
            if deliveringBytes {
                fatal(ErrorFields(severity: "FATAL", sqlState: "08006",
                                  message: "pgchorus lost the backend answering this query in the middle of its reply; reconnect and retry"))
            } else {
                route(r.bytes, to: lead, seq: r.seq)
                flushBackend(lead)
            }
        }
        commitParticipantLost(index)
        orderFinished(on: index)
        finishDrainIfDone()
    }

    /// The lead is gone: the next live backend becomes the lead and, once its handover allows,
    /// gets every cycle not yet released, unless the client already saw part of the old lead's reply.
    private func promoteLead() {
        guard phase == .relaying else { return }
        guard let next = backends.indices.first(where: { backends[$0].isLive }) else {
            if !fatalForwarded {
                fatal(ErrorFields(severity: "FATAL", sqlState: "08006", message: "pgchorus lost every backend of this session"))
            } else {
                close()
            }
            return
        }
        if deliveringBytes {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08006",
                              message: "pgchorus lost the lead backend in the middle of a reply; reconnect and retry the statement"))
            return
        }
        let old = backends[lead].backend
        lead = next
        catalogLoading = false
        acknowledgementsToSkip = acknowledgementsDelivered
        logger.warning("lead backend of the session changed from \(old.description) to \(backends[lead].backend.description)")
        for i in unreleased.indices { unreleased[i].leadDone = false }
        awaitHandover(after: old.id)
    }

    func backendReadComplete(_ index: Int) {
        flushBackends()
        flushClient()
    }

    func backendWritabilityChanged(_ index: Int, _ writable: Bool) {
        // Backpressure: stop reading the client while a backend cannot take more.
        context?.channel.setOption(ChannelOptions.autoRead, value: writable).whenFailure { _ in }
    }

    func backendClosed(_ index: Int) {
        guard index < backends.count, backends[index].phase != .closed, phase != .closed else { return }
        if phase == .connectingBackends {
            loginFailed(index, ErrorFields(severity: "FATAL", sqlState: "08006",
                                           message: "pgchorus lost the connection to backend \(backends[index].backend.description) while logging in"),
                        forwardBytes: nil, failBackend: true)
            return
        }
        let others = backends.indices.filter { $0 != index && backends[$0].isLive }
        if phase == .draining {
            backends[index].phase = .closed
            dropExpectations(index)
            noteLeadOrdering()
            finishDrainIfDone()
            return
        }
        if others.isEmpty {
            backends[index].phase = .closed
            if fatalForwarded {
                close()
            } else {
                logger.warning("backend \(backends[index].backend.description) closed the connection")
                fatal(ErrorFields(severity: "FATAL", sqlState: "08006",
                                  message: "pgchorus lost the connection to backend \(backends[index].backend.description)"))
            }
            return
        }
        failBackend(index, reason: "connection lost")
    }

    func backendFailed(_ index: Int, _ error: Error) {
        guard phase != .closed, index < backends.count else { return }
        let name = backends[index].backend.description
        if liveCount > 1, backends[index].isLive {
            failBackend(index, reason: "connection error: \(error)")
            return
        }
        if let wire = error as? WireError {
            logger.error("invalid message from backend \(name): \(wire)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "pgchorus received an invalid message from backend \(name): \(wire)"))
        } else {
            logger.warning("backend \(name) connection error: \(error)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08006", message: "pgchorus lost the connection to backend \(name): \(error)"))
        }
    }
}
