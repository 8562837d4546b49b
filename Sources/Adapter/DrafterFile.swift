import ModelFormats

/// Reading a trained drafter's safetensors file (an adapter's, a block drafter's, a ReDrafter head's),
/// with the errors its loaders give.
extension SafeTensors.File {
    /// Tensor `name`, which must have `shape`, as floats.
    func drafterTensor(_ name: String, _ shape: [Int]) throws -> [Float] {
        guard let t = tensors[name] else { throw AdapterError.missingTensor(name) }
        guard t.shape == shape, let floats = t.floats() else { throw AdapterError.badShape(name, t.shape, expected: shape) }
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
