import NIOCore
import State

/// DDL through this node, told to the other clustering nodes before it can commit.
///
/// Each node classifies statements by what it loaded of a database's catalog (the tables whose
/// inserts draw sequence values, per-row defaults, routines that notify) and loads it again after
/// its own sessions' DDL. DDL through another node left that catalog stale: a SERIAL table created
/// through node A was, for node B, a table whose inserts draw nothing, so they took no turn and the
/// ids came out in different orders on the backends, every backend online. Now the first DDL of a
/// transaction waits until every live peer has acknowledged the change (`ClusterOrderSignal`); a
/// peer holds that database's catalog for unknown (every insert takes the turn, nothing is loaded)
/// until the transaction has ended here, and loads it afresh then.
extension ClientSessionHandler {
    /// Whether a group with this result must wait for the peers' acks before it goes (DDL not told yet).
    func announcesCatalogChange(_ result: StatementTracker.Result) -> Bool {
        configuration.cluster.nodes.count > 1 && catalogChange == nil && (result.mayChangeCatalog || catalogChangeDue)
    }

    /// Holds the group until the peers have acknowledged the change, then sends it (through the
    /// sequence turn when `thenOrder`), as `waitForOrder` and `sendInTurn` would have.
    func holdForCatalogChange(_ bytes: ByteBuffer, cycle: Bool, wrap: Bool, flags: GroupFlags = GroupFlags(), thenOrder: Bool) {
        waitingGroup = (bytes, cycle, wrap, flags)
        catalogHold = true
        catalogHoldThenOrder = thenOrder
        noteHoldStarted()
        if OrderTrace.enabled { trace("KH", "catalog hold \(traceText(of: bytes))") }
        announceCatalogChange { [self] in
            if OrderTrace.enabled { trace("KA", "catalog acknowledged") }
            guard catalogHold else { return }
            catalogHold = false
            guard phase == .relaying, let (bytes, cycle, wrap, flags) = waitingGroup else { return }
            waitingGroup = nil
            if catalogHoldThenOrder {
                waitForOrder(bytes, cycle: cycle, wrap: wrap, flags: flags)
                return
            }
            if openPartial != nil {
                finishOpenGroup(bytes)
            } else {
                sendInTurn(bytes, cycle: cycle, wrap: wrap, flags: flags)
            }
            flushBackends()
            replayHeldFrames()
        }
    }

    /// Tells the peers of the change (when DDL is due and none is open), then runs `body` on the
    /// session's event loop; at once when there is nothing to tell.
    func announceCatalogChange(then body: @escaping () -> Void) {
        guard let context, configuration.cluster.nodes.count > 1, catalogChange == nil else {
            catalogChangeDue = false
            return body()
        }
        catalogChangeDue = false
        let id = "catalog:\(shared.nextGlobalTransactionID())"
        catalogChange = (id, openPartial ?? nextSeq)
        let lease = max(configuration.cluster.peerTimeout, 10 * configuration.cluster.heartbeatInterval)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let database = database
        logger.debug("DDL in database \(database): telling the other nodes before it commits", metadata: ["change": "\(id)"])
        pendingCatalogBody = (id, body)
        shared.orderSignal.openCatalogChange(PeerMessage.CatalogChange(id: id, databases: [database], lease: lease)) { unacknowledged in
            loop.execute { bound.value.catalogChangeAcknowledged(id: id, unacknowledged) }
        }
    }

    /// The peers acknowledged change `id` (but `unacknowledged`): what waited for it goes. Only for the
    /// change it waits for: a DDL whose client cancelled the wait (`clientCancelled`) ended its change
    /// with its transaction, and a later DDL's must not go on the earlier one's acknowledgement.
    func catalogChangeAcknowledged(id: String, _ unacknowledged: [String]) {
        if !unacknowledged.isEmpty {
            logger.warning("node(s) \(unacknowledged.joined(separator: ", ")) did not acknowledge within cluster.peer_timeout that DDL changes database \(database)'s catalog: the DDL goes on; they learn of it from this node's next heartbeats")
        }
        guard let pending = pendingCatalogBody, pending.id == id else { return }
        pendingCatalogBody = nil
        pending.body()
    }

    /// The session's transaction has ended (cycle `seq` delivered idle) or the session ends: the
    /// peers may load the catalog again. A session gone in the middle of its vote leaves the change
    /// open a while longer: its prepared transaction is finished by the node's resolver.
    func closeCatalogChange(afterCycle seq: Int? = nil) {
        guard let change = catalogChange else { return }
        if let seq, seq < change.from { return }
        catalogChange = nil
        let signal = shared.orderSignal
        if seq == nil, commit != nil, let context {
            context.eventLoop.scheduleTask(in: .seconds(10)) { signal.closeCatalogChange(id: change.id) }
            return
        }
        signal.closeCatalogChange(id: change.id)
    }
}
