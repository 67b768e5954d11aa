import NIOCore

/// Every wait on a backend has a deadline (**pure**: the time comes in as `now`). A follower has, for
/// each cycle, half as long again as the lead took plus `replication.follower_timeout`, counted from
/// when it reached the cycle or last sent something; one that misses it is failed, so a frozen or hung
/// follower costs the cluster at most about the follower timeout. A silent lead is not failed by a
/// session (it is the reference): it is probed (`BackendProber`) half a follower timeout after the
/// cycle reached it and every half timeout after that, and the probe decides.
struct FollowerDeadlines {
    let followerTimeout: TimeAmount

    /// What a deadline check decides.
    struct Check: Equatable {
        /// Followers to fail, in order.
        var fail: [Int] = []
        /// Ask the node to probe the lead, which has been silent this long on its oldest cycle.
        var probeLead: TimeAmount?
        /// Followers past their deadline that the node itself held back lately get the timeout from
        /// then: look again at this time.
        var recheckAt: NIODeadline?
    }

    /// A check that runs this much later than it was due found the node's event loop busy (a message
    /// of many megabytes lexed or digested): replies that came meanwhile may still be unread.
    static let lateCheck = TimeAmount.milliseconds(250)

    /// When a check that was due at `due` and runs at `now` should look again instead of deciding:
    /// it ran late, so the backends' replies are read first (their time counts from what they sent).
    /// Not for longer than the follower timeout since the first such deferral (`deferringSince`), so
    /// a node that is busy all the time still fails a frozen follower. Nil: decide now.
    func recheck(due: NIODeadline, now: NIODeadline, deferringSince: NIODeadline?) -> NIODeadline? {
        guard now - due > Self.lateCheck else { return nil }
        if let since = deferringSince, now - since > followerTimeout { return nil }
        return now + .milliseconds(20)
    }

    /// The follower timeout in seconds, as failure reasons give it.
    var timeoutSeconds: Double { Double(followerTimeout.nanoseconds) / 1e9 }

    /// A follower's time for a cycle the lead took `leadTook` for.
    func allowance(leadTook: TimeAmount) -> TimeAmount {
        .nanoseconds(leadTook.nanoseconds * 3 / 2) + followerTimeout
    }

    /// When the lead, silent on its oldest cycle, is to be probed next; nil when it owes nothing or
    /// is the only live backend (nobody to go on with).
    func leadProbe(_ backends: [BackendSession], lead: Int, probedAt: NIODeadline?) -> NIODeadline? {
        guard backends.indices.contains(lead), backends[lead].isLive, backends.liveCount > 1,
              let sent = backends[lead].owed.head?.sentAt else { return nil }
        let base = max(sent, backends[lead].owed.headSince, probedAt ?? sent)
        return base + .nanoseconds(followerTimeout.nanoseconds / 2)
    }

    /// The earliest moment a check has something to do (a follower's deadline or the lead's probe);
    /// nil when nothing is pending or only one backend is live.
    func nextCheck(_ backends: [BackendSession], lead: Int, probedAt: NIODeadline?) -> NIODeadline? {
        guard backends.liveCount > 1 else { return nil }
        var earliest = leadProbe(backends, lead: lead, probedAt: probedAt)
        for i in backends.indices where i != lead && backends[i].isLive {
            if let d = backends[i].owed.effectiveDeadline, earliest.map({ d < $0 }) ?? true { earliest = d }
        }
        return earliest
    }

    /// At `now`: the followers past their deadline (never the last live backend) and whether the
    /// lead is due for a probe. `heldBack`: when the node last held a COMMIT PREPARED back on a
    /// follower (`CommitEpochs.heldBack`) — its statements may have waited on that commit's locks,
    /// a wait of the node's making: such a follower has the timeout from then before it is failed.
    func check(_ backends: [BackendSession], lead: Int, probedAt: NIODeadline?, now: NIODeadline,
               heldBack: (Int) -> NIODeadline? = { _ in nil }) -> Check {
        var result = Check()
        var live = backends.liveCount
        for i in backends.indices where i != lead && backends[i].isLive && live > 1 {
            if let d = backends[i].owed.effectiveDeadline, d <= now {
                if let held = heldBack(i), held + followerTimeout > now {
                    result.recheckAt = min(result.recheckAt ?? held + followerTimeout, held + followerTimeout)
                    continue
                }
                result.fail.append(i)
                live -= 1
            }
        }
        if live > 1, let probe = leadProbe(backends, lead: lead, probedAt: probedAt), probe <= now,
           let waitingSince = backends[lead].owed.head?.sentAt {
            result.probeLead = now - waitingSince
        }
        return result
    }
}
