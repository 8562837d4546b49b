/// A reusable row-major buffer of `rows × columns` floats with a fixed row capacity: activations of
/// several tokens, one row each. Allocated once and reused so the decode loop does not allocate.
public final class FloatMatrix: @unchecked Sendable {
    public let columns: Int
    public let capacity: Int
    public var rows: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(capacity: Int, columns: Int) {
        precondition(capacity > 0 && columns > 0)
        self.capacity = capacity
        self.columns = columns
        rows = 0
        pointer = .allocate(capacity: capacity * columns)
        pointer.initialize(repeating: 0, count: capacity * columns)
    }

    deinit { pointer.deallocate() }

    public func row(_ index: Int) -> UnsafeMutablePointer<Float> { pointer + index * columns }

    public func rowArray(_ index: Int) -> [Float] { Array(UnsafeBufferPointer(start: row(index), count: columns)) }

    /// Copies row `index` of `source` to row `destination` of this matrix.
    public func copyRow(from source: FloatMatrix, row index: Int, to destination: Int) {
        precondition(source.columns == columns)
        row(destination).update(from: source.row(index), count: columns)
    }
}
