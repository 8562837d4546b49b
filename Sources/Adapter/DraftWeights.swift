import Tensor

/// A draft model's float weights as the products read them, owning their bytes: quantised to Q8_0 (a
/// quarter of the bytes) and multiplied as the output head is (`forLogits`: int16 activations, rows
/// repacked 16 at a time and read with software prefetch), which drafts faster than the
/// row-at-a-time int8 kernel (docs/measurements.md). Drafts only steer speculation (the full model
/// verifies them), so this changes speed, never output.
final class DraftWeights: @unchecked Sendable {
    private var storage: [UnsafeMutableRawPointer] = []

    /// `values` (`rows × columns`, row-major; `columns` a multiple of 32) as a product's weights.
    func matrix(_ values: [Float], rows: Int, columns: Int) -> WeightMatrix {
        let bytes = quantizeQ8_0(values, columns: columns)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
        buffer.copyMemory(from: bytes, byteCount: bytes.count)
        storage.append(buffer)
        return WeightMatrix(type: .q8_0, rows: rows, columns: columns, data: UnsafeRawPointer(buffer)).forLogits()
    }

    deinit { storage.forEach { $0.deallocate() } }
}
