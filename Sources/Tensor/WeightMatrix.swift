import KernelsC

/// A weight matrix as stored in the model file: `rows` output rows of `columns` input elements each,
/// rows contiguous, in a (possibly quantised) `QuantType`. The bytes are not owned: they live in the
/// memory-mapped model file, which must outlive the matrix.
public struct WeightMatrix: @unchecked Sendable {
    public let type: QuantType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    /// Whether products may quantise the activations to int8 (faster) or must keep them as floats
    /// (for the output head, whose logits need the precision).
    public var activationPrecision: ActivationPrecision = .int8

    public enum ActivationPrecision: Sendable {
        case int8, float
    }

    public init(type: QuantType, rows: Int, columns: Int, data: UnsafeRawPointer) {
        precondition(columns % type.blockSize == 0, "\(type) rows must hold whole blocks")
        self.type = type
        self.rows = rows
        self.columns = columns
        self.data = data
    }

    public var rowBytes: Int { columns / type.blockSize * type.bytesPerBlock }

    public func row(_ index: Int) -> UnsafeRawPointer { data + index * rowBytes }

    /// Writes row `index` as floats into `destination` (`columns` floats).
    public func dequantizeRow(_ index: Int, into destination: UnsafeMutablePointer<Float>) {
        dequantize(type, row(index), into: destination, count: columns)
    }

    /// Whether products use the integer kernels on int8-quantised activations (Q4_0, Q4_1, Q8_0)
    /// rather than float activations.
    public var usesIntegerKernel: Bool {
        activationPrecision == .int8 && (type == .q4_0 || type == .q4_1 || type == .q8_0)
    }

    /// `y[t][r] = Σ_c W[r][c] · x[t][c]` for the `input.count` tokens of `input`;
    /// `y` receives `input.count × rows` floats (token-major).
    /// Each token's row of `y` is bit-identical whatever the number of tokens in the call.
    public func multiply(_ input: ActivationBatch, into y: UnsafeMutablePointer<Float>, pool: ThreadPool = .shared) {
        precondition(input.columns == columns, "input has \(input.columns) columns, matrix \(columns)")
        let count = input.count
        if usesIntegerKernel {
            input.quantize()
            let type = Int32(type.rawValue), data = data, rowBytes = rowBytes, columns = Int32(columns)
            let q = input.quantized, d = input.scales, ds = input.scaledSums, ldy = rows
            pool.parallelFor(rows, grain: 16) { range, _ in
                kq_matmul(type, data, rowBytes, columns, Int32(range.lowerBound), Int32(range.upperBound),
                          q, d, ds, Int32(count), y, ldy)
            }
        } else if type == .q8_0 {
            let data = data, rowBytes = rowBytes, columns = Int32(columns), x = input.floats, ldy = rows
            pool.parallelFor(rows, grain: 16) { range, _ in
                kq_matmul_q8_0_float(data, rowBytes, columns, Int32(range.lowerBound), Int32(range.upperBound), x, Int32(count), y, ldy)
            }
        } else {
            multiplyFloat(input.floats, count: count, into: y, pool: pool)
        }
    }

    /// Float-activation product for formats without an integer kernel.
    private func multiplyFloat(_ x: UnsafePointer<Float>, count: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool) {
        let rows = rows, columns = columns, type = type, rowBytes = rowBytes, data = data
        pool.parallelFor(rows, grain: 16) { range, _ in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: columns) { scratch in
                for r in range {
                    let row = data + r * rowBytes
                    for t in 0..<count {
                        y[t * rows + r] = dotRow(type, row, x + t * columns, columns, scratch: scratch.baseAddress!)
                    }
                }
            }
        }
    }
}
