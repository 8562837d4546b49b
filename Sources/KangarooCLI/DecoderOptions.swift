import Adapter
import ArgumentParser
import Decoding
import Foundation
import Llama

enum DecoderKind: String, ExpressibleByArgument, CaseIterable {
    case plain, kangaroo, layerskip
}

/// `--decoder` and the speculative settings of `generate`.
struct DecoderOptions: ParsableArguments {
    @Option(help: "Decoding method: plain, kangaroo (shallow layers + adapter draft, full model verifies) or layerskip (shallow layers + the model's head draft).")
    var decoder: DecoderKind = .plain

    @OptionGroup var speculative: SpeculativeSettings

    func makeDecoder(model: LlamaModel, context: Int?) throws -> Decoder {
        try speculative.makeDecoder(decoder, model: model, context: context)
    }
}

/// Settings of the speculative decoders.
struct SpeculativeSettings: ParsableArguments {
    @Option(help: "Kangaroo/layer-skip: layers 0..<N feed the drafter.")
    var exitLayer = 2

    @Option(help: "Kangaroo/layer-skip: stop drafting once a draft's probability is below this (η).")
    var threshold: Float = SpeculativeSettings.defaultThreshold

    @Option(help: "Kangaroo/layer-skip: drafts per round at most (γ).")
    var maxDraft = SpeculativeSettings.defaultMaxDraft

    @Flag(help: "Kangaroo/layer-skip: also verify the draft that fell below --threshold, as the paper does (by default it is dropped, which bench sweep measured faster with the shipped adapter); output unchanged either way.")
    var verifyUncertainDraft = false

    @Option(help: "Kangaroo/layer-skip: after a round whose drafts were all rejected, decode the next 1, 2, 4, … rounds (at most N) without drafting, until drafts are accepted again; 0 drafts every round, as the paper does. Output unchanged either way.")
    var maxBackoff = SpeculativeSettings.defaultMaxBackoff

    @Option(help: "Kangaroo/layer-skip: copy drafts (beyond the paper; 0: off): when the last N tokens occurred earlier in the prompt or output, draft the tokens that followed them there first (as many as matched before the N, at least one; the drafter goes on after them) and instead of the drafter's later in a round (translations, summaries and answers from a text copy much of it). Output unchanged.")
    var copyNgram = SpeculativeSettings.defaultCopyNgram

    /// Defaults chosen by measurement. With copy drafts, three `kangaroo bench sweep --limit 4` runs
    /// (η 0.5/0.6/1.0, γ 3/6, drop/verify, back-off 0/16, --copy-ngrams 0,2; stage-4 adapter; a slow
    /// phase of the machine, plain 121–128 tokens/s): copy drafts 0.93–1.10× plain, without them
    /// 0.85–1.01×; η 0.6 ahead of 0.5 and 1.0; among the best settings the differences are within the
    /// noise (one setting measured 1.10× and 0.98×), so γ 3, drop and back-off 16 stay. Earlier, without
    /// copies: best η 0.5, γ 3, drop, back-off 16 at 1.02× (24 settings 0.85–1.02×); back-off over 8
    /// settings of η, γ and the uncertain-draft policy: mean speedup 0.90× (0), 0.92× (4), 0.95× (16).
    /// With copy chains by match length: two full sweeps gave γ 3 (drop, back-off 16) 1.02× / 0.98×
    /// and γ 6 1.08× / 1.00×, six interleaved runs γ 3 1.00–1.05× and γ 6 0.97–1.05×: γ 3 stays.
    static let defaultThreshold: Float = 0.6
    static let defaultMaxDraft = 3
    static let defaultMaxBackoff = 16
    static let defaultCopyNgram = 2

    /// The settings for a drafter that exits at `exitLayer`.
    func options(exitLayer: Int) -> SpeculativeOptions {
        SpeculativeOptions(exitLayer: exitLayer, threshold: threshold, maxDraft: maxDraft, dropsUncertainDraft: !verifyUncertainDraft,
                           maxBackoff: maxBackoff, copyNgram: copyNgram)
    }

    @Option(help: "Kangaroo: adapter folder (adapter.json + adapter.safetensors). Default: the adapter shipped for the default model; otherwise a copy of layer --exit-layer's attention (untrained).")
    var adapter: String?

    /// A decoder of `kind`; Kangaroo drafts with `trained` when given, else with `resolveAdapter`'s choice.
    func makeDecoder(_ kind: DecoderKind, model: LlamaModel, context: Int?, trained: KangarooAdapter? = nil) throws -> Decoder {
        switch kind {
        case .plain:
            return PlainDecoder(model: model, contextCapacity: context)
        case .layerskip:
            return try SpeculativeDecoder(model: model, drafter: .layerSkip, options: options(exitLayer: exitLayer), contextCapacity: context)
        case .kangaroo:
            let weights = try trained ?? resolveAdapter(for: model)
            return try SpeculativeDecoder(model: model, drafter: .adapter(weights),
                                          options: options(exitLayer: weights.config.exitLayer),
                                          contextCapacity: context)
        }
    }

    /// --adapter if given; otherwise the adapter shipped for this model file; otherwise (with a note) an
    /// untrained copy of layer --exit-layer's attention.
    func resolveAdapter(for model: LlamaModel) throws -> KangarooAdapter {
        try chooseAdapter(path: adapter, model: model, exitLayer: exitLayer)
    }
}

/// The adapter at `path` if given; otherwise the adapter shipped for this model file; otherwise (with a
/// note) an untrained copy of layer `exitLayer`'s attention.
func chooseAdapter(path: String?, model: LlamaModel, exitLayer: Int) throws -> KangarooAdapter {
    if let path { return try KangarooAdapter.load(from: path, for: model) }
    if let shipped = try KangarooAdapter.shipped(for: model) { return shipped }
    FileHandle.standardError.write(Data("note: no adapter ships for this model and none was given; using an untrained copy of layer \(exitLayer)'s attention (pass --adapter DIR)\n".utf8))
    return KangarooAdapter.copyingLayer(of: model, exitLayer: exitLayer)
}
