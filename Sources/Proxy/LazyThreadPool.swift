import NIOPosix
import Synchronization

/// Threads of the node's own for occasional blocking work (libpq calls) that must not wait behind
/// other work on the process-wide pool: started at their first use (most nodes never need them),
/// stopped when the server closes. The commit order's probe, the backend prober and the sequence
/// turn's resync each keep one.
final class LazyThreadPool: Sendable {
    private let count: Int
    private let pool = Mutex<NIOThreadPool?>(nil)

    init(threads count: Int) {
        self.count = max(1, count)
    }

    /// The pool, started now if it was not.
    var started: NIOThreadPool {
        pool.withLock { pool in
            if let pool { return pool }
            let started = NIOThreadPool(numberOfThreads: count)
            started.start()
            pool = started
            return started
        }
    }

    /// The pool if it was started (nil: nothing has run on it).
    var ifStarted: NIOThreadPool? { pool.withLock { $0 } }

    /// Stops the threads once what they run has finished.
    func shutdown() {
        pool.withLock { $0?.shutdownGracefully { _ in }; $0 = nil }
    }
}
