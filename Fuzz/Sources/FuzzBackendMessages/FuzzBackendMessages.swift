import FuzzDriver
import NIOCore
import Wire

/// What a backend (or anyone between the node and a backend) sends: frames parsed as the node
/// parses them, error and notice fields included.
@_cdecl("FuzzBackendMessages_main")
public func fuzzBackendMessagesMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzBackendMessages)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBackendMessages(_ input: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = input else { return 0 }
    eachDecoded(PostgresFrameDecoder(maximumMessageSize: 1 << 20), from: data, count: size, limit: 10_000) { frame in
        var out = ByteBuffer()
        (try? BackendMessage(frame: frame))?.encode(into: &out)
    }
    return 0
}
