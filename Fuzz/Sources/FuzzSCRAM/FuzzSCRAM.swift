import FuzzDriver
import Wire

/// The SCRAM-SHA-256 exchange from both sides: the node as a server reading a client's first and
/// final messages, and as a client reading a backend's (input split at its first NUL byte).
@_cdecl("FuzzSCRAM_main")
public func fuzzSCRAMMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv, fuzzSCRAM)
}

// Derived once: key derivation is computation, not parsing.
let salt = Array("fuzz-salt-16byte".utf8)
let secret = SCRAMSecret(password: "pencil", salt: salt, iterations: 16)
let keys = SCRAMKeys(password: "pencil", salt: salt, iterations: 16)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSCRAM(_ input: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data = input else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let cut = bytes.firstIndex(of: 0) ?? bytes.count
    let first = String(decoding: bytes[..<cut], as: UTF8.self)
    let final = cut < bytes.count ? String(decoding: bytes[(cut + 1)...], as: UTF8.self) : ""

    var server = SCRAMServer(secret: secret, serverNonce: "server-nonce")
    if (try? server.receiveClientFirst(first)) != nil {
        _ = try? server.receiveClientFinal(final)
    }
    // The client nonce is the start of any nonce the input offers back, so the parse goes deep. The
    // client holds keys (pass-through), not a password: PBKDF2 over the input's iteration count
    // (up to `SCRAM.maximumIterations`) is computation, not parsing, and would only slow the run.
    var client = SCRAMClient(credential: .keys(keys, expectedSalt: salt, expectedIterations: 16), clientNonce: "c")
    _ = client.clientFirst(user: "")
    if (try? client.receiveServerFirst(first)) != nil {
        try? client.receiveServerFinal(final)
    }
    _ = SCRAMSecret(parsing: first)
    return 0
}
