import Foundation
import Glibc

/// The `postgres` system user that owns server files when we run as root.
enum ServerUser {
    static let name = "postgres"

    /// uid and gid of `postgres`, or an error saying how to create the user.
    static func ids() throws -> (uid: uid_t, gid: gid_t) {
        guard let entry = getpwnam(name) else {
            throw LocalClusterError(.binariesNotFound, "running as root, PostgreSQL must run as the \"\(name)\" user, which does not exist; `apt-get install postgresql` creates it (or `useradd --system --home /var/lib/postgresql \(name)`)")
        }
        return (entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    /// Hands `path` (and with `recursive`, everything below it) to `postgres` when we are root;
    /// does nothing otherwise, since then the server runs as us.
    static func giveOwnership(of path: String, recursive: Bool) throws {
        guard CommandRunner.runningAsRoot else { return }
        let (uid, gid) = try ids()
        var paths = [path]
        if recursive, let enumerator = FileManager.default.enumerator(atPath: path) {
            // Bounded by what initdb creates: a few thousand entries.
            while let relative = enumerator.nextObject() as? String {
                paths.append(path + "/" + relative)
            }
        }
        for item in paths where lchown(item, uid, gid) != 0 {
            let reason = String(cString: strerror(errno))
            throw LocalClusterError(.directoryFailed, "could not give \(item) to the \(name) user: \(reason)")
        }
    }
}
