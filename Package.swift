// swift-tools-version:6.0
import PackageDescription

// The relay's hot path (Wire, Proxy) in release builds: no run-time exclusivity checks. Most of
// them sit in SwiftNIO's ByteBuffer code inlined here; a callgrind profile of `pgbench -S` through
// pgchorusd put swift_beginAccess and its bookkeeping at about 15 % of all instructions. Debug
// builds, which the tests run, keep the checks.
// `make release` and the package (Packaging/build-deb.sh) pass -enforce-exclusivity=unchecked to every
// module, SwiftNIO's own code included, where most of the checks left were (BENCHMARKS.md, "Fewer
// instructions per statement").
let relayHotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "pgchorus",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "pgchorusd", targets: ["pgchorusd"]),
        .executable(name: "pgchorus", targets: ["pgchorus"]),
        // For the fuzz targets (Fuzz/Package.swift), which build it with sanitizers.
        .library(name: "Wire", targets: ["Wire"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // C libraries of the design, through system-library targets.
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        .systemLibrary(name: "CPcap", pkgConfig: "libpcap", providers: [.apt(["libpcap-dev"])]),

        .target(
            name: "Wire",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: relayHotPath
        ),
        .target(
            name: "State",
            dependencies: [
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Proxy",
            dependencies: [
                "Wire", "State",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: relayHotPath
        ),
        .target(
            name: "VIP",
            dependencies: [
                "State", "CMnl", "CPcap",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Recovery",
            dependencies: [
                "Wire", "State",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Admin",
            dependencies: [
                "State", "Recovery",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(name: "LocalCluster", dependencies: [.product(name: "Logging", package: "swift-log")]),
        .target(
            name: "Daemon",
            dependencies: [
                "Proxy", "State", "Admin", "Recovery", "VIP",
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(name: "pgchorusd", dependencies: ["Daemon"]),
        // bench/relay-floor.sh's measuring stick: the least a SwiftNIO relay costs (not shipped).
        .executableTarget(name: "relay-floor", dependencies: [.product(name: "NIOCore", package: "swift-nio"),
                                                               .product(name: "NIOPosix", package: "swift-nio")],
                          path: "bench/relay-floor", swiftSettings: [.swiftLanguageMode(.v5)]),
        .executableTarget(
            name: "pgchorus",
            dependencies: [
                "Daemon", "Proxy", "Admin", "State", "Wire", "LocalCluster", "VIP",
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .target(
            name: "TestSupport",
            dependencies: [
                "Proxy", "Wire", "State", "Admin", "LocalCluster",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(name: "WireTests", dependencies: ["Wire", .product(name: "NIOCore", package: "swift-nio")]),
        .testTarget(name: "ProxyTests", dependencies: ["Proxy", "Wire", "State", "TestSupport", "LocalCluster",
                                                     .product(name: "NIOCore", package: "swift-nio"),
                                                     .product(name: "NIOSSL", package: "swift-nio-ssl")]),
        .testTarget(name: "StateTests", dependencies: ["State", "TestSupport", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(name: "VIPTests", dependencies: ["VIP", "State"]),
        .testTarget(name: "RecoveryTests", dependencies: ["Recovery"]),
        .testTarget(name: "AdminTests", dependencies: ["Admin", "State"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Proxy", "Wire", "State", "Admin", "VIP", "LocalCluster", "TestSupport", "Recovery",
                                                             .product(name: "Crypto", package: "swift-crypto"),
                                                             .product(name: "NIOCore", package: "swift-nio"),
                                                             .product(name: "NIOPosix", package: "swift-nio")], exclude: ["Scripts"]),
        .testTarget(name: "LocalClusterTests", dependencies: ["LocalCluster"]),
    ],
    swiftLanguageModes: [.v6]
)
