import Adapter
import ArgumentParser
import Decoding
import Foundation
import Llama

/// `--decoder` and the speculative settings, shared by the commands that generate.
struct DecoderOptions: ParsableArguments {
    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case plain, kangaroo, layerskip
    }

    @Option(help: "Decoding method: plain, kangaroo (shallow layers + adapter draft, full model verifies) or layerskip (shallow layers + the model's head draft).")
    var decoder: Kind = .plain

    @Option(help: "Kangaroo/layer-skip: layers 0..<N feed the drafter.")
    var exitLayer = 2

    @Option(help: "Kangaroo/layer-skip: stop drafting once a draft's probability is below this.")
    var threshold: Float = 0.6

    @Option(help: "Kangaroo/layer-skip: drafts per round at most (γ).")
    var maxDraft = 6

    @Option(help: "Kangaroo: adapter folder (adapter.json + adapter.safetensors). Default: the adapter shipped for the default model; otherwise a copy of layer --exit-layer's attention (untrained).")
    var adapter: String?

    func makeDecoder(model: LlamaModel, context: Int?) throws -> Decoder {
        let options = SpeculativeOptions(exitLayer: exitLayer, threshold: threshold, maxDraft: maxDraft)
        switch decoder {
        case .plain:
            return PlainDecoder(model: model, contextCapacity: context)
        case .layerskip:
            return try SpeculativeDecoder(model: model, drafter: .layerSkip, options: options, contextCapacity: context)
        case .kangaroo:
            let weights: KangarooAdapter
            if let adapter {
                weights = try KangarooAdapter.load(from: adapter, for: model)
            } else {
                FileHandle.standardError.write(Data("note: no trained adapter was given; using an untrained copy of layer \(exitLayer)'s attention (pass --adapter DIR)\n".utf8))
                weights = KangarooAdapter.copyingLayer(of: model, exitLayer: exitLayer)
            }
            return try SpeculativeDecoder(model: model, drafter: .adapter(weights),
                                          options: SpeculativeOptions(exitLayer: weights.config.exitLayer, threshold: threshold, maxDraft: maxDraft),
                                          contextCapacity: context)
        }
    }
}
