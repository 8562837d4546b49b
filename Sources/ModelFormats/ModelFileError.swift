/// Problems found while opening or validating a model file. Each names the file and what is wrong.
public enum ModelFileError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case notGGUF(path: String)
    case unsupportedVersion(path: String, version: UInt32)
    case truncated(path: String, what: String, offset: Int)
    case absurdCount(path: String, what: String, count: UInt64)
    case invalidValueType(path: String, key: String, type: UInt32)
    case invalidText(path: String, what: String)
    case duplicate(path: String, what: String)
    case unsupportedTensorType(path: String, tensor: String, type: UInt32)
    case invalidTensor(path: String, tensor: String, reason: String)
    case missingMetadata(path: String, key: String)
    case invalidMetadata(path: String, key: String, reason: String)
    case missingTensor(path: String, tensor: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): "cannot open \(path): \(reason)"
        case let .notGGUF(path): "\(path) is not a GGUF file (wrong magic number)"
        case let .unsupportedVersion(path, version): "\(path): GGUF version \(version) is not supported (only 2 and 3)"
        case let .truncated(path, what, offset): "\(path) is truncated or corrupt: \(what) at byte \(offset) runs past the end of the file"
        case let .absurdCount(path, what, count): "\(path) is corrupt: \(what) count \(count) cannot fit in the file"
        case let .invalidValueType(path, key, type): "\(path) is corrupt: metadata '\(key)' has unknown value type \(type)"
        case let .invalidText(path, what): "\(path) is corrupt: \(what) is not valid UTF-8"
        case let .duplicate(path, what): "\(path) is corrupt: \(what) appears twice"
        case let .unsupportedTensorType(path, tensor, type):
            "\(path): tensor '\(tensor)' has type \(ggmlTypeName(type)), which is not supported (supported: \(QuantTypeNames.supported))"
        case let .invalidTensor(path, tensor, reason): "\(path): tensor '\(tensor)' \(reason)"
        case let .missingMetadata(path, key): "\(path): required metadata '\(key)' is missing"
        case let .invalidMetadata(path, key, reason): "\(path): metadata '\(key)' \(reason)"
        case let .missingTensor(path, tensor): "\(path): required tensor '\(tensor)' is missing"
        }
    }
}

import Tensor

enum QuantTypeNames {
    static let supported = QuantType.allCases.map(\.description).joined(separator: ", ")
}

/// Names of GGML tensor types, including ones this project cannot read, for error messages.
func ggmlTypeName(_ id: UInt32) -> String {
    if let known = QuantType(rawValue: id) { return known.description }
    let names: [UInt32: String] = [
        6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 13: "Q5_K", 15: "Q8_K",
        16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
        23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
        34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
    ]
    return names[id].map { "\($0) (\(id))" } ?? "unknown type id \(id)"
}
