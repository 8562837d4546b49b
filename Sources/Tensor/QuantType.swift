/// Element formats of weight tensors, numbered as in GGML/GGUF (`ggml_type`).
///
/// A quantised format stores a row as consecutive blocks; each block holds `blockSize` elements in
/// `bytesPerBlock` bytes. Only the formats listed here can be read; any other type id is rejected by
/// the GGUF reader with an error naming it.
public enum QuantType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case bf16 = 30

    /// Elements per block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: 256
        }
    }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .q4_0: 18   // f16 scale, 16 bytes of 4-bit values
        case .q4_1: 20   // f16 scale, f16 minimum, 16 bytes of 4-bit values
        case .q5_0: 22   // f16 scale, 4 bytes of fifth bits, 16 bytes of 4-bit values
        case .q5_1: 24   // f16 scale, f16 minimum, 4 bytes of fifth bits, 16 bytes of 4-bit values
        case .q8_0: 34   // f16 scale, 32 signed bytes
        case .q2_K: 84   // 16 bytes of 4-bit sub-scales and mins, 64 bytes of 2-bit values, f16 scale, f16 min-scale
        case .q3_K: 110  // 32 bytes of third bits, 64 bytes of 2-bit values, 12 bytes of 6-bit sub-scales, f16 scale
        case .q4_K: 144  // f16 scale, f16 min-scale, 12 bytes of 6-bit sub-scales/mins, 128 bytes of nibbles
        case .q5_K: 176  // as Q4_K, with 32 bytes of fifth bits before the nibbles
        case .q6_K: 210  // 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 sub-scales, f16 scale
        }
    }

    /// Whether the integer kernels (KernelsC's kq_matmul) multiply this format with int8 activations.
    public var hasIntegerKernel: Bool {
        switch self {
        case .f32, .f16, .bf16, .q2_K: false
        default: true
        }
    }

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        }
    }

    /// Bytes taken by `count` elements, or nil when `count` is not a whole number of blocks or overflows.
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: bytesPerBlock)
        return overflow ? nil : bytes
    }
}
