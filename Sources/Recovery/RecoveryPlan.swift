/// The steps of one online recovery (**pure**: events in, actions out; `RecoveryCoordinator` runs it).
///
/// checking → globals → copying (one database after the other) → catching up → gating → cutting over
/// → online; any error on the way → failed, after the replication objects are cleaned up and the
/// gate is open again. A gate that cannot close in time (a long transaction) sends the recovery back
/// to catching up, up to `maxGateAttempts` times: the clients are never the ones abandoned. DDL on
/// the donor during the copy or the replay (logical replication does not carry it) starts the copy
/// over from the globals, up to `maxSchemaAttempts` attempts in all: a migration run meanwhile
/// costs the recovery time, not the recovery.
public struct RecoveryPlan: Sendable, Equatable {
    public enum Phase: String, Sendable, Codable, Equatable {
        case checking, globals, copying, catchingUp = "catching-up", gating, cuttingOver = "cutting-over", online, failed

        public var isFinal: Bool { self == .online || self == .failed }
    }

    public enum Event: Sendable, Equatable {
        case started
        /// The checks passed; these databases are copied.
        case checked(databases: [String])
        case globalsCopied
        case databaseCopied(String)
        /// The queue's lag fell under the threshold.
        case caughtUp
        /// Every node holds its gate and no transaction is open.
        case gateClosed
        /// The gate could not drain in time.
        case gateTimedOut(String)
        /// DDL ran on the donor since its database's copy began (the reason names it).
        case schemaChanged(String)
        case cutOver
        case failed(String)
        case cancelled
    }

    public enum Action: Sendable, Equatable {
        case runChecks
        case copyGlobals
        case copyDatabase(String)
        case waitForCatchUp
        case closeGate
        case cutOver
        /// The backend is online on every node (before the gate opens: sessions take it in then).
        case markOnline
        case openGate
        /// Drops the replication objects (slots, publications, subscriptions, triggers) wherever they are.
        case cleanUp
        case markFailed(String)
    }

    public static let maxGateAttempts = 3
    public static let maxSchemaAttempts = 3

    public private(set) var phase: Phase = .checking
    public private(set) var databases: [String] = []
    public private(set) var copied: Int = 0
    public private(set) var gateAttempts = 0
    /// Times the copy started over because the donor's schema changed, and the last such reason.
    public private(set) var schemaRestarts = 0
    public private(set) var restartReason: String?
    public private(set) var failure: String?

    public init() {}

    public mutating func handle(_ event: Event) -> [Action] {
        if phase.isFinal { return [] }
        switch (phase, event) {
        case (.checking, .started):
            return [.runChecks]
        case let (.checking, .checked(dbs)):
            databases = dbs
            phase = .globals
            return [.copyGlobals]
        case (.globals, .globalsCopied):
            return nextDatabase()
        case let (.copying, .databaseCopied(db)) where copied < databases.count && databases[copied] == db:
            copied += 1
            return nextDatabase()
        case (.catchingUp, .caughtUp):
            phase = .gating
            gateAttempts += 1
            return [.closeGate]
        case (.gating, .gateClosed):
            phase = .cuttingOver
            return [.cutOver]
        case let (.gating, .gateTimedOut(why)), let (.cuttingOver, .gateTimedOut(why)):
            guard gateAttempts < Self.maxGateAttempts else {
                return fail("the write gate could not close in \(gateAttempts) attempts: \(why)", gateClosed: true)
            }
            phase = .catchingUp
            return [.openGate, .waitForCatchUp]
        case let (.copying, .schemaChanged(why)), let (.catchingUp, .schemaChanged(why)), let (.gating, .schemaChanged(why)),
             let (.cuttingOver, .schemaChanged(why)):
            let gateClosed = phase == .gating || phase == .cuttingOver
            guard schemaRestarts + 1 < Self.maxSchemaAttempts else {
                return fail("\(why) — the schema changed during each of \(Self.maxSchemaAttempts) attempts; recover again once the schema change is done",
                            gateClosed: gateClosed)
            }
            schemaRestarts += 1
            restartReason = why
            copied = 0
            gateAttempts = 0
            phase = .globals
            return (gateClosed ? [.openGate] : []) + [.cleanUp, .copyGlobals]
        case (.cuttingOver, .cutOver):
            phase = .online
            return [.markOnline, .openGate, .cleanUp]
        case let (_, .failed(why)):
            return fail(why, gateClosed: phase == .gating || phase == .cuttingOver)
        case (_, .cancelled):
            return fail("cancelled by an administrator", gateClosed: phase == .gating || phase == .cuttingOver)
        default:
            return fail("internal error: event \(event) in phase \(phase.rawValue)", gateClosed: phase == .gating || phase == .cuttingOver)
        }
    }

    private mutating func nextDatabase() -> [Action] {
        if copied < databases.count {
            phase = .copying
            return [.copyDatabase(databases[copied])]
        }
        phase = .catchingUp
        return [.waitForCatchUp]
    }

    private mutating func fail(_ why: String, gateClosed: Bool) -> [Action] {
        failure = why
        phase = .failed
        return (gateClosed ? [.openGate] : []) + [.cleanUp, .markFailed(why)]
    }
}
