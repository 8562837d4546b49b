import Tensor

/// Keys and values of every layer for up to `capacity` positions, preallocated.
///
/// Layout: `keys[layer][position][kvHead × headSize]` (keys after RoPE), values alike.
/// Invariant: layer `l` holds valid entries for positions `0..<lengths[l]`. Layers may have different
/// lengths (a speculative decoder runs shallow layers ahead of deep ones); rolling back is only
/// lowering a length, since entries past it are overwritten before they are read again.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    public let capacity: Int
    public let kvSize: Int
    public private(set) var lengths: [Int]
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>

    public init(config: LlamaConfig, capacity: Int, layerCount: Int? = nil) {
        self.layerCount = layerCount ?? config.layerCount
        self.capacity = capacity
        kvSize = config.kvSize
        lengths = Array(repeating: 0, count: self.layerCount)
        let total = self.layerCount * capacity * kvSize
        // Untouched pages of these large buffers are never read before written, so they stay
        // unmapped until used.
        keys = .allocate(capacity: total)
        values = .allocate(capacity: total)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    public func length(of layer: Int) -> Int { lengths[layer] }

    func keys(layer: Int, position: Int) -> UnsafeMutablePointer<Float> { keys + (layer * capacity + position) * kvSize }
    func values(layer: Int, position: Int) -> UnsafeMutablePointer<Float> { values + (layer * capacity + position) * kvSize }

    func setLength(_ length: Int, layer: Int) { lengths[layer] = length }

    /// Forgets every position from `length` on in `layers` (all layers by default).
    public func truncate(to length: Int, layers: Range<Int>? = nil) {
        for layer in layers ?? 0..<layerCount where lengths[layer] > length {
            lengths[layer] = length
        }
    }

    public func reset() { truncate(to: 0) }
}
