import NIOCore
import Testing

@testable import Wire

/// SplitMix64: tiny, seedable, and the same sequence on every run and platform.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// How often each outcome happened, so a test can prove it exercised the parsers.
struct Tally {
    var frames = 0
    var frontendMessages = 0
    var backendMessages = 0
    var startupMessages = 0
    var wireErrors = 0
    var needMore = 0
}

/// Every decoder is total: any bytes give a message, "need more bytes" or a `WireError` — never a crash
/// or another error — and whatever decodes re-encodes to something that decodes to the same value.
@Suite struct RandomInputTests {
    static let frameLimit = 1024
    static let frontendTypes = Array("BCdcfDEHFPpQSX".utf8)
    static let backendTypes = Array("RK23CdcGHWDIEVvnNAtS1sZT".utf8)

    // MARK: Checks

    /// Runs the frame decoder over `input` until it needs more bytes or fails, parsing each frame both ways.
    static func checkFramePipeline(_ input: [UInt8], _ tally: inout Tally, sourceLocation: SourceLocation = #_sourceLocation) {
        var buffer = ByteBuffer(bytes: input)
        var decoder = PostgresFrameDecoder(maximumMessageSize: frameLimit)
        // Each frame consumes at least 5 bytes, so this bound is never the reason the loop ends.
        for _ in 0...(input.count / 5 + 1) {
            let before = buffer.readableBytes
            let frame: PostgresFrame?
            do {
                frame = try decoder.decode(buffer: &buffer)
            } catch is WireError {
                tally.wireErrors += 1
                return
            } catch {
                Issue.record("frame decoder threw a non-WireError: \(error)", sourceLocation: sourceLocation)
                return
            }
            guard let frame else {
                #expect(buffer.readableBytes == before, "nil must consume nothing", sourceLocation: sourceLocation)
                tally.needMore += 1
                return
            }
            tally.frames += 1
            #expect(frame.bytes.readableBytes == before - buffer.readableBytes, sourceLocation: sourceLocation)
            #expect(frame.body.readableBytes <= frameLimit, sourceLocation: sourceLocation)
            #expect(Int(frame.bytes.getInteger(at: frame.bytes.readerIndex + 1, as: Int32.self)!) == frame.body.readableBytes + 4)
            checkFrontend(frame, &tally, sourceLocation: sourceLocation)
            checkBackend(frame, &tally, sourceLocation: sourceLocation)
        }
        Issue.record("frame decoder did not stop", sourceLocation: sourceLocation)
    }

    static func checkFrontend(_ frame: PostgresFrame, _ tally: inout Tally, sourceLocation: SourceLocation) {
        let message: FrontendMessage
        do { message = try FrontendMessage(frame: frame) } catch { tally.wireErrors += 1; return }
        tally.frontendMessages += 1
        let again = encoded(message)
        checkReencoding(original: frame.bytes, again: again, sourceLocation: sourceLocation)
        do {
            let f = try #require(try decodeOneFrame(again, sourceLocation: sourceLocation), sourceLocation: sourceLocation)
            #expect(try FrontendMessage(frame: f) == message, sourceLocation: sourceLocation)
        } catch {
            Issue.record("re-encoded \(message) failed to decode: \(error)", sourceLocation: sourceLocation)
        }
    }

    static func checkBackend(_ frame: PostgresFrame, _ tally: inout Tally, sourceLocation: SourceLocation) {
        let message: BackendMessage
        do { message = try BackendMessage(frame: frame) } catch { tally.wireErrors += 1; return }
        tally.backendMessages += 1
        let again = encoded(message)
        checkReencoding(original: frame.bytes, again: again, sourceLocation: sourceLocation)
        do {
            let f = try #require(try decodeOneFrame(again, sourceLocation: sourceLocation), sourceLocation: sourceLocation)
            #expect(try BackendMessage(frame: f) == message, sourceLocation: sourceLocation)
        } catch {
            Issue.record("re-encoded \(message) failed to decode: \(error)", sourceLocation: sourceLocation)
        }
    }

    /// A parsed message holds every byte of its frame, so re-encoding gives the same bytes — except
    /// where a string field held invalid UTF-8, which `String` repairs (only possible with bytes >= 0x80).
    static func checkReencoding(original: ByteBuffer, again: ByteBuffer, sourceLocation: SourceLocation) {
        if again != original {
            #expect(original.readableBytesView.contains { $0 >= 0x80 }, "ASCII frame re-encoded differently", sourceLocation: sourceLocation)
        }
    }

    static func checkStartupPhase(_ input: [UInt8], _ tally: inout Tally, sourceLocation: SourceLocation = #_sourceLocation) {
        var buffer = ByteBuffer(bytes: input)
        var decoder = StartupPhaseDecoder()
        let message: StartupPhaseMessage?
        do {
            message = try decoder.decode(buffer: &buffer)
        } catch is WireError {
            tally.wireErrors += 1
            return
        } catch {
            Issue.record("startup decoder threw a non-WireError: \(error)", sourceLocation: sourceLocation)
            return
        }
        guard let message else {
            #expect(buffer.readableBytes == input.count, "nil must consume nothing", sourceLocation: sourceLocation)
            tally.needMore += 1
            return
        }
        tally.startupMessages += 1
        // Re-encode, followed by whatever the client sent after the packet, and decode again.
        var again = encoded(message)
        var rest = buffer
        again.writeBuffer(&rest)
        var decoder2 = StartupPhaseDecoder()
        do {
            let decoded = try decoder2.decode(buffer: &again)
            #expect(decoded == message, sourceLocation: sourceLocation)
            #expect(again.readableBytes == buffer.readableBytes, sourceLocation: sourceLocation)
        } catch {
            Issue.record("re-encoded \(message) failed to decode: \(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: Generators

    static func randomBytes(count: Int, using rng: inout SplitMix64) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
    }

    /// Random bytes; half the time shaped like a frame (known type, length close to the truth)
    /// so the body parsers, not only the length checks, see random data.
    static func randomFrameInput(using rng: inout SplitMix64) -> [UInt8] {
        var bytes = randomBytes(count: Int.random(in: 0...300, using: &rng), using: &rng)
        guard bytes.count >= 5, Bool.random(using: &rng) else { return bytes }
        bytes[0] = (frontendTypes + backendTypes).randomElement(using: &rng)!
        let truth = bytes.count - 1
        let length = Int32(truth + [0, 0, 0, -1, 1, -4, -truth, Int.random(in: -8...8, using: &rng)].randomElement(using: &rng)!)
        bytes.replaceSubrange(1..<5, with: int32Bytes(length))
        // Small counts make the count-prefixed bodies reach their element loops.
        if bytes.count >= 7, Bool.random(using: &rng) {
            bytes.replaceSubrange(5..<7, with: int16Bytes(Int16.random(in: -2...4, using: &rng)))
        }
        return bytes
    }

    /// Random bytes; half the time with a matching length and a known request code or protocol 3.x.
    static func randomStartupInput(using rng: inout SplitMix64) -> [UInt8] {
        var bytes = randomBytes(count: Int.random(in: 0...300, using: &rng), using: &rng)
        guard bytes.count >= 8, Bool.random(using: &rng) else { return bytes }
        let length = Int32(bytes.count - [0, 0, 0, 1, 4].randomElement(using: &rng)!)
        bytes.replaceSubrange(0..<4, with: int32Bytes(length))
        let codes: [Int32] = [
            StartupPhaseMessage.sslRequestCode, StartupPhaseMessage.gssEncryptionRequestCode,
            StartupPhaseMessage.cancelRequestCode, 0x0003_0000, 0x0003_0002, 0x0002_0000,
        ]
        bytes.replaceSubrange(4..<8, with: int32Bytes(codes.randomElement(using: &rng)!))
        return bytes
    }

    /// Flips, truncates, inserts or appends bytes of a valid encoding.
    static func mutate(_ valid: [UInt8], using rng: inout SplitMix64) -> [UInt8] {
        var bytes = valid
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0 where !bytes.isEmpty: // flip bits of one byte
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[i] ^= UInt8.random(in: 1 ... .max, using: &rng)
            case 1 where !bytes.isEmpty: // set one byte to an edge value
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[i] = [0x00, 0x7f, 0x80, 0xff].randomElement(using: &rng)!
            case 2: // truncate
                bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
            case 3: // insert a byte
                bytes.insert(UInt8.random(in: .min ... .max, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
            default: // append random bytes
                bytes += randomBytes(count: Int.random(in: 1...8, using: &rng), using: &rng)
            }
        }
        return bytes
    }

    // MARK: Tests

    @Test func randomBytesThroughTheFrameDecoderAndBothParsers() {
        var rng = SplitMix64(seed: 0x5047_4348_4f52_5553) // "PGCHORUS"
        var tally = Tally()
        for _ in 0..<20_000 {
            Self.checkFramePipeline(Self.randomFrameInput(using: &rng), &tally)
        }
        // The run must have reached the body parsers, not only the length checks.
        #expect(tally.frames > 5_000)
        #expect(tally.frontendMessages > 100)
        #expect(tally.backendMessages > 100)
        #expect(tally.wireErrors > 1_000)
        #expect(tally.needMore > 1_000)
    }

    @Test func randomBytesThroughTheStartupDecoder() {
        var rng = SplitMix64(seed: 42)
        var tally = Tally()
        for _ in 0..<20_000 {
            Self.checkStartupPhase(Self.randomStartupInput(using: &rng), &tally)
        }
        #expect(tally.startupMessages > 100)
        #expect(tally.wireErrors > 1_000)
        #expect(tally.needMore > 100)
    }

    @Test func mutatedValidMessages() {
        var rng = SplitMix64(seed: 7)
        var tally = Tally()
        let frameSamples = WireSamples.frontend.map { Array(encoded($0).readableBytesView) }
            + WireSamples.backend.map { Array(encoded($0).readableBytesView) }
        let startupSamples = WireSamples.startup.map { Array(encoded($0).readableBytesView) }
        for _ in 0..<10_000 {
            let frameInput = Self.mutate(frameSamples.randomElement(using: &rng)!, using: &rng)
            Self.checkFramePipeline(frameInput, &tally)
            Self.checkStartupPhase(frameInput, &tally)
            let startupInput = Self.mutate(startupSamples.randomElement(using: &rng)!, using: &rng)
            Self.checkStartupPhase(startupInput, &tally)
            Self.checkFramePipeline(startupInput, &tally)
        }
        #expect(tally.frontendMessages > 500)
        #expect(tally.backendMessages > 500)
        #expect(tally.startupMessages > 500)
        #expect(tally.wireErrors > 1_000)
    }

    @Test func streamsOfValidMessagesCutAtRandomPoints() throws {
        // A stream delivered in random chunks decodes to the same messages as in one piece.
        var rng = SplitMix64(seed: 99)
        var stream = ByteBuffer()
        for m in WireSamples.frontend { m.encode(into: &stream) }
        let bytes = Array(stream.readableBytesView)
        for _ in 0..<50 {
            var buffer = ByteBuffer()
            var decoder = PostgresFrameDecoder()
            var decoded: [FrontendMessage] = []
            var offset = 0
            while offset < bytes.count {
                let chunk = min(Int.random(in: 1...40, using: &rng), bytes.count - offset)
                buffer.writeBytes(bytes[offset..<(offset + chunk)])
                offset += chunk
                for _ in 0..<WireSamples.frontend.count {
                    guard let f = try decoder.decode(buffer: &buffer) else { break }
                    decoded.append(try FrontendMessage(frame: f))
                }
            }
            #expect(decoded == WireSamples.frontend)
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test func generatorIsDeterministic() {
        var a = SplitMix64(seed: 1)
        var b = SplitMix64(seed: 1)
        let first = (0..<4).map { _ in a.next() }
        #expect(first == (0..<4).map { _ in b.next() })
        // Reference output of SplitMix64 seeded with 0.
        var zero = SplitMix64(seed: 0)
        #expect(zero.next() == 0xE220_A839_7B1D_CDAF)
    }
}
