import KernelsC

/// A weight matrix as stored in the model file: `rows` output rows of `columns` input elements each,
/// rows contiguous, in a (possibly quantised) `QuantType`. The bytes are not owned: they live in the
/// memory-mapped model file, which must outlive the matrix.
public struct WeightMatrix: @unchecked Sendable {
    public let type: QuantType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer
    /// How products treat the activations: quantised to int8 (the layers' products), to int16 (the
    /// output head, whose logits decide tokens; see `forLogits()`) or kept as floats.
    public private(set) var activationPrecision: ActivationPrecision = .int8
    /// The rows repacked 16 at a time for the integer kernels (see `repacked()`).
    private(set) var packed: PackedRows?

    public enum ActivationPrecision: Sendable {
        case int8, int16, float
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

    /// Whether products use the integer kernels on int8-quantised activations (every quantised format
    /// but Q2_K) rather than float activations.
    public var usesIntegerKernel: Bool {
        activationPrecision == .int8 && type.hasIntegerKernel
    }

    /// The same matrix with its rows repacked 16 at a time for the integer kernels (KernelsC.h:
    /// kq_pack), when its format has a repacked kernel (Q4_0, Q4_1, Q5_0, Q4_K, Q6_K); otherwise the
    /// matrix itself. Products then do the float work once per 16 rows instead of once per row
    /// (docs/measurements.md has the measured gain). The repacked copy takes about as many bytes as
    /// the original rows.
    public func repacked() -> WeightMatrix {
        guard usesIntegerKernel, kq_has_packed(Int32(type.rawValue)) != 0 else { return self }
        var copy = self
        copy.packed = PackedRows(self, layout: .forInt8)
        return copy
    }

    /// The matrix set up as the output head: logits decide tokens, so a Q8_0 head multiplies int16
    /// activations (repacked rows; int8 ones moved the golden log-probabilities further and swapped a
    /// near-tie top token). Other quantised heads (Q6_K in most K-quant files) multiply int8
    /// activations, as llama.cpp does: the float path would dequantise the whole vocabulary every
    /// token, several times the cost of the rest of a step (docs/measurements.md). Float formats stay float.
    /// Kangaroo's adapter sets up its Q8_0 matrices this way too (`AdapterRunner`: faster drafting).
    public func forLogits() -> WeightMatrix {
        var copy = self
        copy.packed = nil
        if type == .q8_0 {
            copy.activationPrecision = .int16
            copy.packed = PackedRows(self, layout: .q8_0ForInt16)
            return copy
        }
        copy.activationPrecision = type.hasIntegerKernel ? .int8 : .float
        return copy.repacked()
    }

    /// `y[t][r] = Σ_c W[r][c] · x[t][c]` for the `input.count` tokens of `input`;
    /// `y` receives `input.count × rows` floats (token-major).
    /// Each token's row of `y` is bit-identical whatever the number of tokens in the call.
    public func multiply(_ input: ActivationBatch, into y: UnsafeMutablePointer<Float>, pool: ThreadPool = .shared) {
        input.multiply(self, into: y, pool: pool)
    }

    /// Quantises `input` as this matrix's kernel reads it.
    func prepare(_ input: ActivationBatch) {
        precondition(input.columns == columns, "input has \(input.columns) columns, matrix \(columns)")
        switch activationPrecision {
        case .int8: if usesIntegerKernel { input.quantize() }
        case .int16: input.quantize16()  // only set together with the repacked Q8_0 rows
        case .float: break
        }
    }

    /// The product with `input` into `y` as the pool's threads run it (see `MatrixKernel`).
    func kernel(input: ActivationBatch, into y: UnsafeMutablePointer<Float>) -> MatrixKernel {
        let path: MatrixKernel.Path
        if let packed {
            path = activationPrecision == .int16 ? .packedInt16(packed.bytes) : .packedInt8(packed.bytes)
        } else {
            path = usesIntegerKernel ? .rowsInt8 : .rowsFloat
        }
        return MatrixKernel(type: type, rows: rows, columns: columns, data: data, rowBytes: rowBytes, path: path,
                            input: input.view, output: y)
    }
}

/// One matrix product as the pool's threads run it: the matrix's format, shape and bytes, the input's
/// buffers and the output, all as plain values and pointers. The threads never touch a reference
/// count: both cores retaining the same objects bounced the counts' cache lines between them, and
/// swift_retain / swift_release took 3.9% of a decode step's samples
/// (`perf record kangaroo bench speed --sizes 1`).
struct MatrixKernel {
    let type: QuantType
    let rows: Int
    let columns: Int
    let data: UnsafeRawPointer
    let rowBytes: Int
    let path: Path
    let input: ActivationView
    let output: UnsafeMutablePointer<Float>

    /// Which kernel computes the product (see `WeightMatrix.activationPrecision`).
    enum Path {
        case packedInt16(UnsafeRawPointer)  // the output head: repacked Q8_0 rows, int16 activations
        case packedInt8(UnsafeRawPointer)   // repacked rows (kq_has_packed), int8 activations
        case rowsInt8                       // rows as stored, int8 activations
        case rowsFloat                      // any format, float activations
    }

    /// Rows are handed to threads 16 at a time (a group of the repacked layout).
    var units: Int { (rows + 15) / 16 }

    /// Rows `16 · units.lowerBound ..< 16 · units.upperBound` (clamped) of the product into `output`.
    func run(units: Range<Int>) {
        let count = Int32(input.count), y = output
        let rowRange = (units.lowerBound * 16)..<min(units.upperBound * 16, rows)
        switch path {
        case .packedInt16(let packed):
            kq_matmul_q8_0_int16(packed, Int32(rows), Int32(columns), Int32(units.lowerBound), Int32(units.upperBound),
                                 input.quantized16, input.scales16, count, y, rows)
        case .packedInt8(let packed):
            kq_matmul_packed(Int32(type.rawValue), packed, Int32(rows), Int32(columns),
                             Int32(units.lowerBound), Int32(units.upperBound),
                             input.quantized, input.scales, input.scaledSums, input.halfSums, count, y, rows)
        case .rowsInt8:
            kq_matmul(Int32(type.rawValue), data, rowBytes, Int32(columns), Int32(rowRange.lowerBound), Int32(rowRange.upperBound),
                      input.quantized, input.scales, input.scaledSums, count, y, rows)
        case .rowsFloat:
            // Float activations (an output head other than Q8_0, Q2_K): each row dequantised once, then
            // a float dot product per token.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: columns) { scratch in
                for r in rowRange {
                    let row = rowForFloatProducts(type, data + r * rowBytes, columns, scratch: scratch.baseAddress!)
                    for t in 0..<input.count {
                        y[t * rows + r] = dotRow(row.type, row.bytes, input.floats + t * columns, columns)
                    }
                }
            }
        }
    }
}

/// The products of up to three matrices with the same input, split across the pool as one job (one
/// wake-up of the threads for the query, key and value projections, or for gate and up). Reused for
/// every product of its batch, so products allocate nothing.
final class MatrixProductJob: ParallelJob {
    var first, second, third: MatrixKernel?

    var units: Int { (first?.units ?? 0) + (second?.units ?? 0) + (third?.units ?? 0) }

    /// `range` counts units of the first matrix, then the second's, then the third's.
    func run(_ range: Range<Int>, part: Int) {
        var offset = 0
        run(first, range, offset: &offset)
        run(second, range, offset: &offset)
        run(third, range, offset: &offset)
    }

    private func run(_ product: MatrixKernel?, _ range: Range<Int>, offset: inout Int) {
        guard let product else { return }
        let units = product.units
        let low = max(range.lowerBound - offset, 0), high = min(range.upperBound - offset, units)
        if low < high { product.run(units: low..<high) }
        offset += units
    }
}

/// Owns the repacked bytes of a matrix (64-byte aligned for the vector loads).
final class PackedRows: @unchecked Sendable {
    enum Layout {
        case forInt8, q8_0ForInt16
    }

    let bytes: UnsafeMutableRawPointer

    init(_ matrix: WeightMatrix, layout: Layout) {
        let type = Int32(matrix.type.rawValue), rows = Int32(matrix.rows), columns = Int32(matrix.columns)
        switch layout {
        case .forInt8:
            bytes = .allocate(byteCount: max(kq_packed_size(type, rows, columns), 1), alignment: 64)
            kq_pack(type, matrix.data, matrix.rowBytes, rows, columns, bytes)
        case .q8_0ForInt16:
            bytes = .allocate(byteCount: max(kq_packed_q8_0_size(rows, columns), 1), alignment: 64)
            kq_pack_q8_0(matrix.data, matrix.rowBytes, rows, columns, bytes)
        }
    }

    deinit { bytes.deallocate() }
}

/// `ActivationBatch.multiplySwiGLU` as the pool's threads run it. Items are blocks of 32 features (two
/// groups of 16 rows of each matrix): for a range of them, the gate rows, the up rows, then SwiGLU of
/// each token's features and, when `quantized` is set, their int8 blocks (`kq_quantize` per token: the
/// layout of `ActivationBatch`, token-major, a scale, scaled sum and two half sums per block).
final class SwiGLUProductJob: ParallelJob {
    var gate, up: MatrixKernel?
    var quantized: (values: UnsafeMutablePointer<Int8>, scales: UnsafeMutablePointer<Float>,
                    scaledSums: UnsafeMutablePointer<Float>, halfSums: UnsafeMutablePointer<Int32>)?

    func run(_ range: Range<Int>, part: Int) {
        guard let gate, let up else { return }
        let groups = (2 * range.lowerBound)..<min(2 * range.upperBound, gate.units)
        gate.run(units: groups)
        up.run(units: groups)
        let features = gate.rows, first = 32 * range.lowerBound, width = min(32 * range.upperBound, features) - first
        for t in 0..<gate.input.count {
            let offset = t * features + first, activated = gate.output + offset
            VectorOps.swiglu(activated, up: up.output + offset, count: width)
            if let quantized {
                kq_quantize(activated, Int32(width), 1, quantized.values + offset, quantized.scales + offset / 32,
                            quantized.scaledSums + offset / 32, quantized.halfSums + offset / 16)
            }
        }
    }
}
