import Daemon

/// The daemon on its own (development builds and the tests); the package ships one binary,
/// `pgchorus`, which is the daemon when started as `pgchorusd`.
@main
enum Entry {
    static func main() async {
        await PGChorusDaemon.main()
    }
}
