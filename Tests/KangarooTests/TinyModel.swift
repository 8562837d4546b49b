import Foundation
import Llama
import ModelFormats

/// A tiny random Llama model (vocabulary 8, hidden 32, 4 layers, F32 weights) written as a real GGUF
/// file, for mechanisms whose exact distributions must be enumerated; or its Qwen2 twin (projection
/// biases, RoPE over head halves).
enum TinyModel {
    static let vocabulary = 8, hidden = 32, layers = 4, heads = 2, kvHeads = 1, feedForward = 64, context = 64

    static func make(seed: UInt64 = 1, gain: Float = 2.5, architecture: String = "llama") throws -> LlamaModel {
        try LlamaModel(path: write(seed: seed, gain: gain, architecture: architecture))
    }

    /// Writes the model's GGUF file, with `overrides` replacing (or adding) metadata, and returns its path.
    static func write(seed: UInt64 = 1, gain: Float = 2.5, architecture: String = "llama",
                      overrides: [(String, GGUFBuilder.Value)] = []) throws -> String {
        var random = SeededRandom(seed)
        var b = GGUFBuilder()
        let a = architecture
        b.add("general.architecture", .string(a))
        b.add("general.name", .string("tiny test model"))
        b.add("\(a).block_count", .u32(UInt32(layers)))
        b.add("\(a).context_length", .u32(UInt32(context)))
        b.add("\(a).embedding_length", .u32(UInt32(hidden)))
        b.add("\(a).feed_forward_length", .u32(UInt32(feedForward)))
        b.add("\(a).attention.head_count", .u32(UInt32(heads)))
        b.add("\(a).attention.head_count_kv", .u32(UInt32(kvHeads)))
        b.add("\(a).rope.freq_base", .f32(10000))
        b.add("\(a).attention.layer_norm_rms_epsilon", .f32(1e-5))
        b.add("\(a).vocab_size", .u32(UInt32(vocabulary)))
        func tensor(_ name: String, _ columns: Int, _ rows: Int? = nil, scale: Float? = nil) {
            let count = columns * (rows ?? 1)
            let s = scale ?? gain / Float(columns).squareRoot()
            b.addFloatTensor(name, shape: rows.map { [columns, $0] } ?? [columns], values: (0..<count).map { _ in random.float() * s })
        }
        func ones(_ name: String) { b.addFloatTensor(name, shape: [hidden], values: Array(repeating: 1, count: hidden)) }
        let headSize = hidden / heads
        tensor("token_embd.weight", hidden, vocabulary, scale: 1)
        ones("output_norm.weight")
        for l in 0..<layers {
            ones("blk.\(l).attn_norm.weight")
            tensor("blk.\(l).attn_q.weight", hidden, hidden)
            tensor("blk.\(l).attn_k.weight", hidden, kvHeads * headSize)
            tensor("blk.\(l).attn_v.weight", hidden, kvHeads * headSize)
            tensor("blk.\(l).attn_output.weight", hidden, hidden)
            if a == "qwen2" {
                tensor("blk.\(l).attn_q.bias", hidden, scale: 0.5)
                tensor("blk.\(l).attn_k.bias", kvHeads * headSize, scale: 0.5)
                tensor("blk.\(l).attn_v.bias", kvHeads * headSize, scale: 0.5)
            }
            ones("blk.\(l).ffn_norm.weight")
            tensor("blk.\(l).ffn_gate.weight", hidden, feedForward)
            tensor("blk.\(l).ffn_up.weight", hidden, feedForward)
            tensor("blk.\(l).ffn_down.weight", feedForward, hidden)
        }
        for (key, value) in overrides {
            b.metadata.removeAll { $0.0 == key }
            b.add(key, value)
        }
        return try b.write()
    }
}
