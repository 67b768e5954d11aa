import FuzzDriver
import NIOCore
import Wire

/// What a client sends after its StartupMessage: typed frames, each parsed as the node parses it.
/// Any input must end in messages or a `WireError`, never a crash, a hang or unbounded memory.
@_cdecl("FuzzClientMessages_main")
public func fuzzClientMessagesMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzClientMessages)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzClientMessages(_ input: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = input else { return 0 }
    eachDecoded(PostgresFrameDecoder(maximumMessageSize: 1 << 20), from: data, count: size, limit: 10_000) { frame in
        // Re-encoding what was decoded must not trap either.
        var out = ByteBuffer()
        (try? FrontendMessage(frame: frame))?.encode(into: &out)
    }
    return 0
}
