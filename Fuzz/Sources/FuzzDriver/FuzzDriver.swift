import NIOCore

/// libFuzzer's own entry point for a program with a `main` of its own. SwiftPM links an executable
/// target's `main` to `<Target>_main`, so each target defines that (with `@_cdecl`) and hands its
/// test function to libFuzzer here; libFuzzer's `main` is then not linked in.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

public func runFuzzer(
    _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, test)
}

/// Decodes `input` with `decoder` until it needs more bytes, throws (a `WireError`: fine) or `limit`
/// messages have come out, handing each to `body`.
public func eachDecoded<D: NIOSingleStepByteToMessageDecoder>(
    _ decoder: D, from input: UnsafePointer<UInt8>, count: Int, limit: Int, _ body: (D.InboundOut) -> Void
) {
    var decoder = decoder
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: input, count: count))
    for _ in 0..<limit {
        guard let message = try? decoder.decode(buffer: &buffer) else { return }
        body(message)
    }
}
