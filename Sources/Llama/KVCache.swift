import Tensor

/// Keys and values of every layer for up to `capacity` positions, preallocated.
///
/// Layout:
/// - keys (after RoPE, floats) in tiles of 16 positions, `keys[layer][kvHead][position / 16][headSize][16]`,
///   so attention scores 16 positions at once with vertical multiply-adds (no per-position horizontal
///   sum); lanes past a layer's length hold stale values that attention computes but never reads;
/// - values as IEEE half floats in slices of 32 lanes (`valueSliceWidth`),
///   `values[layer][kvHead][slice][position][32]`: each slice is one contiguous stream, which attention
///   at long contexts gives to a thread of its own (each lane is its own sum). At long contexts
///   decoding is bound by reading the cache, and half values read a quarter less of it; half keys
///   would cost more precision than the golden tests allow (docs/measurements.md).
/// Invariant: layer `l` holds valid entries for positions `0..<lengths[l]`. Layers may have different
/// lengths (a speculative decoder runs shallow layers ahead of deep ones); rolling back is only
/// lowering a length, since entries past it are overwritten before they are read again.
public final class KVCache: @unchecked Sendable {
    public let layerCount: Int
    public let capacity: Int
    public let kvSize: Int
    public private(set) var lengths: [Int]
    let headSize: Int
    let kvHeadCount: Int
    /// Tiles of 16 positions per (layer, kv head): `capacity` rounded up.
    let tileCount: Int
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<UInt16>
    /// Lanes of a value slice (32, or the whole head when its size is not a multiple of 32), and
    /// slices of a head.
    let valueSliceWidth: Int
    let valueSlices: Int

    public init(config: LlamaConfig, capacity: Int, layerCount: Int? = nil) {
        self.layerCount = layerCount ?? config.layerCount
        self.capacity = capacity
        kvSize = config.kvSize
        headSize = config.headSize
        kvHeadCount = config.kvHeadCount
        tileCount = (capacity + 15) / 16
        valueSliceWidth = config.headSize % 32 == 0 ? 32 : config.headSize
        valueSlices = config.headSize / valueSliceWidth
        lengths = Array(repeating: 0, count: self.layerCount)
        // Untouched pages of these large buffers are never read before written, so they stay
        // unmapped until used.
        keys = .allocate(capacity: self.layerCount * kvHeadCount * tileCount * 16 * headSize)
        values = .allocate(capacity: self.layerCount * capacity * kvSize)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    public func length(of layer: Int) -> Int { lengths[layer] }

    /// The key tiles of one kv head of a layer: tile `i` (positions 16i…16i+15) starts `16 · headSize`
    /// floats after tile 0; element `d` of position `16i + j`'s key is at `16 · d + j` in it.
    func keyTiles(layer: Int, kvHead: Int) -> UnsafePointer<Float> {
        UnsafePointer(keys + (layer * kvHeadCount + kvHead) * tileCount * 16 * headSize)
    }

    /// Stores the key of one position (`kvHeads × headSize` floats, after RoPE) into its tiles.
    func storeKey(_ key: UnsafePointer<Float>, layer: Int, position: Int) {
        for head in 0..<kvHeadCount {
            let tile = keys + ((layer * kvHeadCount + head) * tileCount + position / 16) * 16 * headSize + position % 16
            let source = key + head * headSize
            for d in 0..<headSize { tile[16 * d] = source[d] }
        }
    }

    /// Stores the value of one position (`kvHeads × headSize` floats) into its slices.
    func storeValue(_ value: UnsafePointer<Float>, layer: Int, position: Int) {
        for head in 0..<kvHeadCount {
            for slice in 0..<valueSlices {
                let target = valueSlice(layer: layer, kvHead: head, slice: slice) + position * valueSliceWidth
                let source = value + head * headSize + slice * valueSliceWidth
                for i in 0..<valueSliceWidth { target[i] = Float16(source[i]).bitPattern }
            }
        }
    }

    private func valueSlice(layer: Int, kvHead: Int, slice: Int) -> UnsafeMutablePointer<UInt16> {
        values + ((layer * kvHeadCount + kvHead) * valueSlices + slice) * capacity * valueSliceWidth
    }

    /// Value slice `slice` (lanes `slice · valueSliceWidth…`) of one kv head in a layer:
    /// `valueSliceWidth` halves per position.
    func values(layer: Int, kvHead: Int, slice: Int) -> UnsafePointer<UInt16> {
        UnsafePointer(valueSlice(layer: layer, kvHead: kvHead, slice: slice))
    }

    func setLength(_ length: Int, layer: Int) { lengths[layer] = length }

    /// Forgets every position from `length` on in `layers` (all layers by default).
    public func truncate(to length: Int, layers: Range<Int>? = nil) {
        for layer in layers ?? 0..<layerCount where lengths[layer] > length {
            lengths[layer] = length
        }
    }

    public func reset() { truncate(to: 0) }

    /// Keeps a tree's accepted path: the rows `path` (in order, increasing) of a batch stored from
    /// position `base` move to positions `base`, `base + 1`, …, where a linear forward over the path
    /// would have put them (tree rows were rotated for their depth, which is their place in the path),
    /// and each layer then ends after them. Layers that did not reach `base` are left as they are.
    public func keepPath(_ path: [Int], base: Int) {
        for layer in 0..<layerCount where lengths[layer] > base {
            for (k, row) in path.enumerated() where row != k {
                precondition(row > k && base + row < lengths[layer], "a path's rows must increase and be in the cache")
                moveEntry(layer: layer, from: base + row, to: base + k)
            }
            lengths[layer] = min(lengths[layer], base + path.count)
        }
    }

    private func moveEntry(layer: Int, from source: Int, to target: Int) {
        for head in 0..<kvHeadCount {
            let tiles = keys + (layer * kvHeadCount + head) * tileCount * 16 * headSize
            let from = tiles + source / 16 * 16 * headSize + source % 16, to = tiles + target / 16 * 16 * headSize + target % 16
            for d in 0..<headSize { to[16 * d] = from[16 * d] }
            for slice in 0..<valueSlices {
                let values = valueSlice(layer: layer, kvHead: head, slice: slice)
                (values + target * valueSliceWidth).update(from: values + source * valueSliceWidth, count: valueSliceWidth)
            }
        }
    }

    /// The key (after RoPE) and value of one position of a layer, as stored (for tests and checks).
    public func entry(layer: Int, position: Int) -> (key: [Float], value: [UInt16]) {
        precondition(position < lengths[layer])
        var key: [Float] = [], value: [UInt16] = []
        for head in 0..<kvHeadCount {
            let tile = keyTiles(layer: layer, kvHead: head) + position / 16 * 16 * headSize + position % 16
            key += (0..<headSize).map { tile[16 * $0] }
            for slice in 0..<valueSlices {
                value += UnsafeBufferPointer(start: values(layer: layer, kvHead: head, slice: slice) + position * valueSliceWidth,
                                             count: valueSliceWidth)
            }
        }
        return (key, value)
    }
}
