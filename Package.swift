// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "borg-relay",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "relay-agent", targets: ["RelayAgent"]),
        .executable(name: "relayctl", targets: ["RelayCtl"]),
        .library(name: "RelayCore", targets: ["RelayCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibSSH",
            pkgConfig: "libssh",
            providers: [.apt(["libssh-dev"])]
        ),
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        .target(
            name: "RelayCore",
            dependencies: [
                "CLibSSH",
                "CSodium",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        .target(
            name: "RelayCLI",
            dependencies: [
                "RelayCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "RelayAgent",
            dependencies: [
                "RelayCore",
                "RelayCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "RelayCtl",
            dependencies: [
                "RelayCore",
                "RelayCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "RelayCoreTests",
            dependencies: ["RelayCore"]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["RelayCore"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
