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

    @Flag(help: "Kangaroo/layer-skip: drop the draft that fell below --threshold instead of verifying it (the paper verifies it, and so does the default); saves its verification width where wider verification is dear. Output unchanged either way.")
    var dropUncertainDraft = false

    @Option(help: "Kangaroo/layer-skip: after a round whose drafts were all rejected, decode the next 1, 2, 4, … rounds (at most N) without drafting, until drafts are accepted again; 0 (the default) drafts every round, as the paper does. Output unchanged either way.")
    var maxBackoff = SpeculativeSettings.defaultMaxBackoff

    @Option(help: "Kangaroo/layer-skip: copy drafts (beyond the paper; 0: off): when the last N tokens occurred earlier in the prompt or output, draft the tokens that followed them there first (as many as matched before the N, at least one; the drafter goes on after them) and instead of the drafter's later in a round (translations, summaries and answers from a text copy much of it). Output unchanged.")
    var copyNgram = SpeculativeSettings.defaultCopyNgram

    /// Defaults chosen by measurement (`kangaroo bench sweep`, copy drafts on, plain decoding interleaved,
    /// prefill counted). With the shipped adapter and the current kernels, three sweeps on an AMD EPYC
    /// machine where a forward over 2 / 4 tokens costs 1.02–1.08× / 1.2–1.3× one all put the paper's
    /// policy (every draft verified, no back-off) first among η 0.4/0.6, γ 3/5: on 60 first turns
    /// (`--limit 10`, γ 3, η 0.6) it ran at 1.42× plain, against 1.34× for dropping the uncertain draft
    /// with back-off 16 (the earlier default), 1.34× for either change alone; mean accepted tokens 1.96
    /// against 1.65. Earlier machines, where wider verification cost more (2 / 4 tokens 1.1–1.2× /
    /// 1.35–1.5× one), measured drop and back-off 16 ahead by no more than the noise; so `--max-backoff`
    /// and `--drop-uncertain-draft` stay for such machines. γ 3 over 5 and η 0.6 over 0.4 were within
    /// the noise (η 0.4 / 0.6 at γ 3: 1.41× / 1.37×, then 1.44× / 1.44×).
    static let defaultThreshold: Float = 0.6
    static let defaultMaxDraft = 3
    static let defaultMaxBackoff = 0
    static let defaultCopyNgram = 2

    /// The settings for a drafter that exits at `exitLayer`.
    func options(exitLayer: Int) -> SpeculativeOptions {
        SpeculativeOptions(exitLayer: exitLayer, threshold: threshold, maxDraft: maxDraft, dropsUncertainDraft: dropUncertainDraft,
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
