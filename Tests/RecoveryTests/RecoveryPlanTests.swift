import Recovery
import Testing

/// The steps of a recovery as a value: what each event leads to, without servers.
@Suite struct RecoveryPlanTests {
    /// Runs `events` from the start; returns the plan and every action, in order.
    func run(_ events: [RecoveryPlan.Event]) -> (RecoveryPlan, [RecoveryPlan.Action]) {
        var plan = RecoveryPlan()
        var actions = plan.handle(.started)
        for e in events { actions += plan.handle(e) }
        return (plan, actions)
    }

    @Test func theWholeWayCopiesEveryDatabaseThenGatesAndCutsOver() {
        let (plan, actions) = run([.checked(databases: ["postgres", "app"]), .globalsCopied, .databaseCopied("postgres"),
                                   .databaseCopied("app"), .caughtUp, .gateClosed, .cutOver])
        #expect(actions == [.runChecks, .copyGlobals, .copyDatabase("postgres"), .copyDatabase("app"), .waitForCatchUp, .closeGate, .cutOver,
                            .markOnline, .openGate, .cleanUp])
        #expect(plan.phase == .online)
        #expect(plan.copied == 2)
        #expect(plan.failure == nil)
    }

    @Test func theBackendIsOnlineBeforeTheGateOpens() {
        let (_, actions) = run([.checked(databases: ["postgres"]), .globalsCopied, .databaseCopied("postgres"), .caughtUp, .gateClosed, .cutOver])
        let online = actions.firstIndex(of: .markOnline), open = actions.firstIndex(of: .openGate)
        #expect(online != nil && open != nil && online! < open!)
    }

    @Test func aFailureBeforeTheGateCleansUpAndFailsTheBackend() {
        let (plan, actions) = run([.checked(databases: ["postgres"]), .globalsCopied, .failed("pg_restore failed")])
        #expect(actions.suffix(2) == [.cleanUp, .markFailed("pg_restore failed")])
        #expect(!actions.contains(.openGate))
        #expect(plan.phase == .failed)
        #expect(plan.failure == "pg_restore failed")
    }

    @Test func aFailureWhileTheGateIsClosedOpensItFirst() {
        for events: [RecoveryPlan.Event] in [
            [.checked(databases: ["postgres"]), .globalsCopied, .databaseCopied("postgres"), .caughtUp, .failed("donor lost")],
            [.checked(databases: ["postgres"]), .globalsCopied, .databaseCopied("postgres"), .caughtUp, .gateClosed, .failed("apply error")],
        ] {
            let (plan, actions) = run(events)
            let tail = Array(actions.suffix(3))
            #expect(tail.first == .openGate)
            #expect(tail.dropFirst().first == .cleanUp)
            #expect(plan.phase == .failed)
        }
    }

    @Test func aGateThatCannotDrainGoesBackToCatchUpThenGivesUp() {
        var events: [RecoveryPlan.Event] = [.checked(databases: ["postgres"]), .globalsCopied, .databaseCopied("postgres")]
        for _ in 1..<RecoveryPlan.maxGateAttempts { events += [.caughtUp, .gateTimedOut("1 session in a transaction")] }
        var (plan, actions) = run(events)
        #expect(plan.phase == .catchingUp)
        #expect(actions.filter { $0 == .openGate }.count == RecoveryPlan.maxGateAttempts - 1)
        #expect(!actions.contains { if case .markFailed = $0 { true } else { false } })
        actions = plan.handle(.caughtUp) + plan.handle(.gateTimedOut("1 session in a transaction"))
        #expect(plan.phase == .failed)
        #expect(actions.first == .closeGate)
        #expect(actions.dropFirst().first == .openGate)
        #expect(plan.failure?.contains("could not close") == true)
    }

    /// DDL on the donor (a migration during the recovery) starts the copy over from the globals —
    /// cleaned up first, the gate opened first if it was closed — and the recovery can still finish;
    /// the schema changing during every attempt fails it.
    @Test func aSchemaChangeStartsTheCopyOverThenGivesUp() {
        let ddl = "DDL ran in database app during the recovery (CREATE INDEX)"
        var (plan, actions) = run([.checked(databases: ["postgres", "app"]), .globalsCopied, .databaseCopied("postgres"), .schemaChanged(ddl)])
        #expect(plan.phase == .globals && plan.copied == 0 && plan.schemaRestarts == 1 && plan.restartReason == ddl)
        #expect(actions.suffix(2) == [.cleanUp, .copyGlobals])
        #expect(!actions.contains(.openGate))
        // During the cut-over, with the gate closed: it opens first.
        actions = plan.handle(.globalsCopied) + plan.handle(.databaseCopied("postgres")) + plan.handle(.databaseCopied("app"))
            + plan.handle(.caughtUp) + plan.handle(.gateClosed) + plan.handle(.schemaChanged(ddl))
        #expect(actions.suffix(3) == [.openGate, .cleanUp, .copyGlobals])
        #expect(plan.phase == .globals && plan.schemaRestarts == 2)
        // A third attempt that sees no DDL finishes.
        var finishing = plan
        _ = finishing.handle(.globalsCopied) + finishing.handle(.databaseCopied("postgres")) + finishing.handle(.databaseCopied("app"))
        _ = finishing.handle(.caughtUp) + finishing.handle(.gateClosed) + finishing.handle(.cutOver)
        #expect(finishing.phase == .online)
        // One that sees DDL again gives up, naming it.
        actions = plan.handle(.globalsCopied) + plan.handle(.databaseCopied("postgres")) + plan.handle(.schemaChanged(ddl))
        #expect(plan.phase == .failed)
        #expect(actions.suffix(2) == [.cleanUp, .markFailed(plan.failure ?? "")])
        #expect(plan.failure?.hasPrefix(ddl) == true && plan.failure?.contains("each of \(RecoveryPlan.maxSchemaAttempts) attempts") == true)
    }

    @Test func cancellingStopsAtTheNextStep() {
        let (plan, actions) = run([.checked(databases: ["postgres"]), .cancelled])
        #expect(plan.phase == .failed)
        #expect(actions.last == .markFailed("cancelled by an administrator"))
    }

    @Test func aFinishedRecoveryIgnoresLateEvents() {
        var (plan, _) = run([.checked(databases: []), .globalsCopied, .caughtUp, .gateClosed, .cutOver])
        #expect(plan.phase == .online)
        #expect(plan.handle(.failed("late")) == [])
        #expect(plan.phase == .online)
    }

    @Test func anEventOutOfOrderFailsInsteadOfSkippingAStep() {
        let (plan, actions) = run([.checked(databases: ["postgres", "app"]), .globalsCopied, .databaseCopied("app")])
        #expect(plan.phase == .failed)
        #expect(actions.last.map { if case .markFailed = $0 { true } else { false } } == true)
    }
}
