import FuzzDriver
import NIOCore
import Wire

/// A new connection's first bytes: SSLRequest, GSSENCRequest, CancelRequest, StartupMessage (with
/// the small start-up size limit), in any order and any number.
@_cdecl("FuzzStartupPhase_main")
public func fuzzStartupPhaseMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzStartupPhase)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStartupPhase(_ input: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = input else { return 0 }
    eachDecoded(StartupPhaseDecoder(), from: data, count: size, limit: 1_000) { message in
        var out = ByteBuffer()
        message.encode(into: &out)
    }
    return 0
}
