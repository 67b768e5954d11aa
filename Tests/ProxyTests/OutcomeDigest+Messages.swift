@testable import Proxy
import Wire

extension OutcomeDigest {
    /// The digest of a backend's reply made of `messages`, as the session builds it.
    init(of messages: [BackendMessage], hashRows: Bool = true) {
        self.init()
        for m in messages { add(m.frame, hashRows: hashRows) }
    }
}
