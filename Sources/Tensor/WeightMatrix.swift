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
        if usesIntegerKernel { input.quantize() }
        let job = input.productJob
        job.matrix = self
        job.input = input
        job.output = y
        pool.run(job, count: rows, grain: 16)
    }
}

/// One matrix product, split by rows across the pool. Reused for every product of its batch.
final class MatrixProductJob: ParallelJob {
    var matrix = WeightMatrix(type: .f32, rows: 0, columns: 0, data: UnsafeRawPointer(bitPattern: 1)!)
    unowned(unsafe) var input: ActivationBatch
    var output = UnsafeMutablePointer<Float>(bitPattern: 1)!

    init(input: ActivationBatch) {
        self.input = input
    }

    func run(_ range: Range<Int>, part: Int) {
        let m = matrix, count = Int32(input.count), rows = range
        if m.usesIntegerKernel {
            kq_matmul(Int32(m.type.rawValue), m.data, m.rowBytes, Int32(m.columns), Int32(rows.lowerBound), Int32(rows.upperBound),
                      input.quantized, input.scales, input.scaledSums, count, output, m.rows)
        } else if m.type == .q8_0 {
            kq_matmul_q8_0_float(m.data, m.rowBytes, Int32(m.columns), Int32(rows.lowerBound), Int32(rows.upperBound),
                                 input.floats, count, output, m.rows)
        } else {
            // Formats without a dedicated kernel (none in the default model): dequantise each row,
            // then a float dot product.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: m.columns) { scratch in
                for r in rows {
                    let row = m.row(r)
                    for t in 0..<input.count {
                        output[t * m.rows + r] = dotRow(m.type, row, input.floats + t * m.columns, m.columns, scratch: scratch.baseAddress!)
                    }
                }
            }
        }
    }
}
