/// A weight matrix as stored in the model file: `rows` output rows of `columns` input elements each,
/// rows contiguous, in a (possibly quantised) `QuantType`. The bytes are not owned: they live in the
/// memory-mapped model file, which must outlive the matrix.
public struct WeightMatrix: @unchecked Sendable {
    public let type: QuantType
    public let rows: Int
    public let columns: Int
    public let data: UnsafeRawPointer

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

    /// `y[t][r] = Σ_c W[r][c] · x[t][c]` for `count` tokens.
    /// `x` holds `count × columns` floats, `y` receives `count × rows` floats (token-major).
    /// Each token's row of `y` is bit-identical whatever `count` is.
    public func multiply(_ x: UnsafePointer<Float>, count: Int, into y: UnsafeMutablePointer<Float>, pool: ThreadPool = .shared) {
        let rows = rows, columns = columns, type = type, rowBytes = rowBytes, data = data
        let needsScratch = type == .q4_K || type == .q6_K
        pool.parallelFor(rows, grain: 16) { range, _ in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: needsScratch ? columns : 1) { scratch in
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
