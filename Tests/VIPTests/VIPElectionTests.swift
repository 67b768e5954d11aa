import State
import Testing
@testable import VIP

/// The election as a pure state machine: simulated nodes exchanging beacons with delays, crashes,
/// shutdowns and partitions. At no instant may two nodes hold the VIP, and one must hold it soon.
@Suite struct VIPElectionTests {
    /// A cluster of elections on one simulated clock (10 ms steps), beacons delivered after `delay`.
    struct Simulation {
        var nodes: [VIPElection]
        var alive: [Bool]
        var eligible: [Bool]
        /// Pairs that cannot talk (both directions).
        var cut: Set<[Int]> = []
        var inFlight: [(at: Double, from: Int, to: Int, beacon: VIPBeacon)] = []
        var now = 0.0
        let delay: Double
        let heartbeat = 0.1
        var nextBeat = 0.0
        var overlaps: [Double] = []
        var holders: [Int] { nodes.indices.filter { alive[$0] && nodes[$0].holding } }

        init(count: Int, priorities: [Int]? = nil, delay: Double = 0.005, settings: VIPElection.Settings = .init()) {
            nodes = (0..<count).map { VIPElection(selfID: "n\($0 + 1)", priority: priorities?[$0] ?? 100, totalNodes: count, settings: settings, now: 0) }
            alive = Array(repeating: true, count: count)
            eligible = Array(repeating: true, count: count)
            self.delay = delay
        }

        func connected(_ a: Int, _ b: Int) -> Bool { !cut.contains([min(a, b), max(a, b)]) }

        mutating func run(seconds: Double) {
            let end = now + seconds
            while now < end {
                now += 0.01
                for m in inFlight where m.at <= now && alive[m.to] && connected(m.from, m.to) {
                    nodes[m.to].receive(from: "n\(m.from + 1)", beacon: m.beacon, now: now)
                }
                inFlight.removeAll { $0.at <= now }
                if now >= nextBeat {
                    nextBeat = now + heartbeat
                    for i in nodes.indices where alive[i] {
                        _ = nodes[i].step(now: now, eligible: eligible[i])
                        broadcast(from: i)
                    }
                }
                if holders.count > 1 { overlaps.append(now) }
            }
        }

        mutating func broadcast(from i: Int) {
            let b = nodes[i].beacon()
            for j in nodes.indices where j != i { inFlight.append((now + delay, i, j, b)) }
        }

        /// Seconds until exactly one node holds (nil if never within `limit`).
        mutating func timeToOwner(limit: Double, excluding: Int? = nil) -> Double? {
            let start = now
            while now - start < limit {
                run(seconds: 0.01)
                if holders.count == 1, holders[0] != excluding { return now - start }
            }
            return nil
        }
    }

    @Test func oneOwnerIsElectedAndItIsTheHighestPriority() {
        var sim = Simulation(count: 3, priorities: [100, 200, 150])
        #expect(sim.timeToOwner(limit: 5) != nil)
        sim.run(seconds: 2)
        #expect(sim.holders == [1])
        #expect(sim.nodes[0].owner(now: sim.now) == "n2")
        #expect(sim.overlaps.isEmpty)
    }

    @Test func aCrashedOwnerIsReplacedWithinASecondAndNeverOverlaps() throws {
        var sim = Simulation(count: 3)
        _ = sim.timeToOwner(limit: 5)
        sim.run(seconds: 1)
        let owner = try #require(sim.holders.first)
        sim.alive[owner] = false
        let measured = sim.timeToOwner(limit: 5, excluding: owner)
        let failover = try #require(measured)
        #expect(failover < 1.2, "took \(failover) s")
        #expect(sim.overlaps.isEmpty)
    }

    @Test func aResigningOwnerHandsOverAtOnce() throws {
        var sim = Simulation(count: 3)
        _ = sim.timeToOwner(limit: 5)
        sim.run(seconds: 1)
        let owner = try #require(sim.holders.first)
        #expect(sim.nodes[owner].resign(now: sim.now) == .release)
        sim.broadcast(from: owner)
        let measured = sim.timeToOwner(limit: 5, excluding: owner)
        let handover = try #require(measured)
        #expect(handover < 0.3, "took \(handover) s")
        #expect(sim.overlaps.isEmpty)
    }

    @Test func aPartitionedOwnerReleasesBeforeTheMajorityClaims() throws {
        for delay in [0.001, 0.02, 0.08] {
            var sim = Simulation(count: 5, delay: delay)
            _ = sim.timeToOwner(limit: 5)
            sim.run(seconds: 1)
            let owner = try #require(sim.holders.first)
            for j in 0..<5 where j != owner { sim.cut.insert([min(owner, j), max(owner, j)]) }
            sim.run(seconds: 3)
            #expect(sim.holders.count == 1, "delay \(delay)")
            #expect(sim.holders.first != owner, "delay \(delay)")
            #expect(!sim.nodes[owner].holding)
            sim.cut = []
            sim.run(seconds: 3)
            #expect(sim.holders.count == 1)
            #expect(sim.overlaps.isEmpty, "delay \(delay): overlaps at \(sim.overlaps.prefix(3))")
        }
    }

    @Test func aMinorityNeverHoldsAndAnIneligibleNodeGivesItUp() throws {
        var sim = Simulation(count: 3)
        sim.alive[1] = false
        sim.alive[2] = false
        sim.run(seconds: 3)
        #expect(sim.holders.isEmpty, "one node of three has no majority")
        sim.alive[1] = true
        #expect(sim.timeToOwner(limit: 5) != nil)
        let owner = try #require(sim.holders.first)
        sim.eligible[owner] = false
        let measured = sim.timeToOwner(limit: 5, excluding: owner)
        let next = try #require(measured)
        #expect(next < 1.5)
        #expect(sim.overlaps.isEmpty)
    }

    @Test func nopreemptKeepsAHealthyOwner() throws {
        var sim = Simulation(count: 3, priorities: [100, 100, 300], settings: .init(nopreempt: true))
        sim.alive[2] = false
        _ = sim.timeToOwner(limit: 5)
        let owner = try #require(sim.holders.first)
        sim.alive[2] = true
        sim.run(seconds: 3)
        #expect(sim.holders == [owner], "the higher-priority node came back but the owner keeps the VIP")

        var preempting = Simulation(count: 3, priorities: [100, 100, 300])
        preempting.alive[2] = false
        _ = preempting.timeToOwner(limit: 5)
        preempting.alive[2] = true
        preempting.run(seconds: 4)
        #expect(preempting.holders == [2])
        #expect(preempting.overlaps.isEmpty)
    }

    @Test func untilTheAddressIsReallyGoneTheBeaconStillSaysHoldingAndTheSelfGrantStays() throws {
        var sim = Simulation(count: 3)
        _ = sim.timeToOwner(limit: 5)
        sim.run(seconds: 1)
        let owner = try #require(sim.holders.first)
        sim.nodes[owner].addressHeld = true
        #expect(sim.nodes[owner].resign(now: sim.now) == .release)
        let b = sim.nodes[owner].beacon()
        #expect(b.holding, "the address may still be on the interface")
        #expect(!b.resigned, "peers must not move their grants yet")
        #expect(!sim.nodes[owner].grantMayMove(from: sim.nodes[owner].selfID, now: sim.now))
        sim.nodes[owner].addressHeld = false
        #expect(sim.nodes[owner].beacon().resigned)
        #expect(!sim.nodes[owner].beacon().holding)
    }

    @Test func aDelayedOrReplayedOlderBeaconChangesNothing() {
        var e = VIPElection(selfID: "n1", priority: 100, totalNodes: 3, settings: .init(), now: 0)
        let fresh = VIPBeacon(term: 3, eligible: true, priority: 100, holding: true, stamp: 50, grant: nil, resigned: false)
        let old = VIPBeacon(term: 2, eligible: false, priority: 100, holding: false, stamp: 40, grant: nil, resigned: true)
        e.receive(from: "n2", beacon: fresh, now: 10)
        e.receive(from: "n2", beacon: old, now: 10.1)
        #expect(e.owner(now: 10.2) == "n2")
        #expect(e.eligibleNodes(now: 10.2).contains("n2"))
    }

    @Test func aRestartedNodeGrantsNothingDuringItsQuietPeriod() {
        var e = VIPElection(selfID: "n1", priority: 100, totalNodes: 3, settings: .init(), now: 10)
        _ = e.step(now: 10.1, eligible: true)
        #expect(e.beacon().grant == nil)
        _ = e.step(now: 10.8, eligible: true)
        #expect(e.beacon().grant?.to == "n1")
    }
}

@Suite struct AnnouncementTests {
    @Test func theScheduleBurstsThenRefreshes() {
        let s = AnnouncementSchedule.standard
        #expect(s.next(after: 0) == 0.3)
        #expect(s.next(after: 0.3) == 0.7)
        #expect(s.next(after: 1) == 2)
        #expect(s.next(after: 2) == 5)
        #expect(s.next(after: 5) == 65)
        #expect(s.next(after: 70) == 125)
        #expect(s.initial.filter { $0 < 1 }.count == 3)
    }

    @Test func garpAndNAHaveTheRightShape() {
        let mac: [UInt8] = [0x02, 0, 0, 0, 0, 1]
        let arp = AnnouncementFrames.gratuitousARP(mac: mac, ip: [198, 18, 0, 100])
        #expect(arp.count == 42)
        #expect(AnnouncementFrames.arpClaim(arp)?.ip == [198, 18, 0, 100])
        #expect(AnnouncementFrames.arpClaim(arp)?.mac == mac)
        let ip6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [0x64]
        let na = AnnouncementFrames.unsolicitedNeighborAdvertisement(mac: mac, ip: ip6)
        #expect(na.count == 86)
        // A correct checksum sums to zero over pseudo-header and message.
        let icmp = Array(na[54...])
        #expect(AnnouncementFrames.checksum(pseudoSource: ip6, destination: Array(na[38..<54]), nextHeader: 58, payload: icmp) == 0)
    }

    @Test func addressesParseAndPrint() {
        #expect(VirtualAddress("198.18.0.100/24")?.description == "198.18.0.100/24")
        #expect(VirtualAddress("2001:db8::100/64")?.description == "2001:db8::100/64")
        #expect(VirtualAddress("2001:db8::100")?.prefixLength == 128)
        #expect(VirtualAddress("198.18.0.100/33") == nil)
        #expect(VirtualAddress("eth0") == nil)
    }
}
