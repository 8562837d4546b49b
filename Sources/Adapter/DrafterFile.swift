import ModelFormats

/// Reading a trained drafter's safetensors file (an adapter's, a block drafter's, a ReDrafter head's),
/// with the errors its loaders give.
extension SafeTensors.File {
    /// Tensor `name`, which must have `shape`, as floats. Besides float types, a matrix may be stored
    /// as I8 with a float scale per row in `NAME_scale` (value = int8 × its row's scale): a quarter of
    /// F32's bytes for shipping a larger model's drafter, and rounding a drafter's weights changes only
    /// its drafts, never an output.
    func drafterTensor(_ name: String, _ shape: [Int]) throws -> [Float] {
        guard let t = tensors[name] else { throw AdapterError.missingTensor(name) }
        guard t.shape == shape else { throw AdapterError.badShape(name, t.shape, expected: shape) }
        if let values = t.int8s() {
            guard shape.count == 2 else { throw AdapterError.mismatch("\(name): only matrices may be stored as I8") }
            let scaleName = name + "_scale"
            guard let s = tensors[scaleName] else { throw AdapterError.missingTensor(scaleName) }
            guard s.shape == [shape[0]], let scales = s.floats() else { throw AdapterError.badShape(scaleName, s.shape, expected: [shape[0]]) }
            let columns = shape[1]
            return values.indices.map { Float(values[$0]) * scales[$0 / columns] }
        }
        guard let floats = t.floats() else { throw AdapterError.badShape(name, t.shape, expected: shape) }
        return floats
    }

    /// The `draft_vocab` tensor, token ids of a model with `vocabularySize` tokens; nil when the file has none.
    func draftVocabulary(vocabularySize: Int) throws -> [Int32]? {
        guard let t = tensors["draft_vocab"] else { return nil }
        guard let ids = t.ints(), !ids.isEmpty, ids.allSatisfy({ $0 >= 0 && Int($0) < vocabularySize }) else {
            throw AdapterError.mismatch("draft_vocab must hold token ids of this model")
        }
        return ids
    }
}
