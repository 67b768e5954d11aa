// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for the protocol decoders (`make fuzz`; docs/security.md). Built with
// `-sanitize=fuzzer,address` and `-parse-as-library`: libFuzzer supplies `main`, each target
// supplies `LLVMFuzzerTestOneInput`.
let package = Package(
    name: "pgchorus-fuzz",
    dependencies: [
        .package(name: "pgchorus", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [.target(name: "FuzzDriver", dependencies: [.product(name: "NIOCore", package: "swift-nio")])] + ["FuzzClientMessages", "FuzzBackendMessages", "FuzzStartupPhase", "FuzzSCRAM"].map { name in
        .executableTarget(name: name, dependencies: [
            "FuzzDriver",
            .product(name: "Wire", package: "pgchorus"),
            .product(name: "NIOCore", package: "swift-nio"),
        ])
    }
)
