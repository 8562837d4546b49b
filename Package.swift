// swift-tools-version:6.0
import PackageDescription

// Kernels are compiled with optimisation even in debug builds (`swift test` builds debug, and SIMD
// code at -Onone is hundreds of times slower). `-target-cpu haswell` (Haswell: AVX2, FMA, F16C) is
// chosen on purpose: DESIGN.md measured it as fast as znver4 on these memory-bound loops. This package
// therefore targets x86_64 only for now.
let kernelFlags: [SwiftSetting] = [
    .unsafeFlags(["-O", "-enforce-exclusivity=unchecked", "-target-cpu", "haswell"]),
]

let package = Package(
    name: "Kangaroo",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kangaroo", targets: ["KangarooCLI"]),
        .library(name: "Kangaroo", targets: ["Decoding", "Adapter", "Llama", "Tokenizer", "ModelFormats", "Tensor", "ModelStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.24.0"),
    ],
    targets: [
        // Integer-dot, attention, softmax and SwiGLU kernels (AVX-512 / AVX2 / portable), chosen at run
        // time; each file says why it is C.
        .target(name: "KernelsC", cSettings: [.unsafeFlags(["-O3"])]),
        // Buffers, quantised block formats, kernels, thread pool.
        .target(name: "Tensor", dependencies: ["KernelsC"], swiftSettings: kernelFlags),
        // GGUF parsing on a memory-mapped file.
        .target(name: "ModelFormats", dependencies: ["Tensor"]),
        // BPE and SentencePiece tokenizers built from GGUF metadata; chat templates.
        .target(name: "Tokenizer", dependencies: ["ModelFormats", .product(name: "HeapModule", package: "swift-collections")]),
        // Llama configuration, weights, forward pass by layer range, KV cache.
        .target(name: "Llama", dependencies: ["ModelFormats", "Tensor"], swiftSettings: kernelFlags),
        // Kangaroo's adapter: weights, safetensors storage, forward pass, its drafting model for the core,
        // and the catalogue that builds every decoder.
        .target(name: "Adapter", dependencies: ["Decoding", "Llama", "ModelFormats", "ModelStore", "Tensor", "Tokenizer"], resources: [.copy("Shipped")],
                swiftSettings: kernelFlags),
        // The decoding core (drafter protocol, tree verification), drafters that need no adapter,
        // samplers, stop conditions, streaming text, statistics.
        .target(name: "Decoding", dependencies: ["Llama", "Tokenizer"], swiftSettings: kernelFlags),
        // Training Kangaroo's adapter: loss and hand-written gradients, optimiser.
        .target(name: "Training", dependencies: ["Adapter", "Decoding", "Llama", "Tensor", "Tokenizer", "ModelFormats"], swiftSettings: kernelFlags),
        // Spec-Bench suites, per-turn records, metrics and reports.
        .target(name: "Benchmark"),
        // Locating and downloading the default model (pip fetches it; Python unpacks and checks it).
        .target(name: "ModelStore"),
        // OpenAI-compatible HTTP server (Hummingbird), in its own target so the core builds without it.
        .target(name: "KangarooServer", dependencies: [
            "Decoding", "Adapter", "Llama", "Tokenizer",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
        ], resources: [.copy("Page")]),
        .executableTarget(name: "KangarooCLI", dependencies: [
            "Decoding", "Adapter", "Llama", "Tokenizer", "ModelFormats", "ModelStore", "Benchmark", "KangarooServer", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "KangarooTests", dependencies: [
            "Decoding", "Adapter", "Llama", "Tokenizer", "ModelFormats", "Tensor", "ModelStore", "KernelsC", "Benchmark",
            "Training", "KangarooServer",
            "KangarooCLI",  // built so the server tests can start `kangaroo serve`
        ]),
    ]
)
