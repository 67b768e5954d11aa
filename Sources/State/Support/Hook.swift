/// A closure kept behind a reference. Keep closures in a `Mutex` inside a `Hook` (or a struct field),
/// never as the `Mutex`'s whole value or in a tuple: reading such a value with `withLock { $0 }`
/// stores it back wrapped in one more reabstraction thunk, so every read makes the next call slower
/// (found in `BackendRegistry`'s fence, read on every write statement: a node's throughput fell by
/// four within a minute).
public final class Hook<F: Sendable>: Sendable {
    public let call: F
    public init(_ call: F) { self.call = call }
}
