import Adapter
import ArgumentParser
import Benchmark
import Decoding
import Foundation
import Llama
import Tokenizer

/// Runs decoders on Spec-Bench questions, interleaved question by question, and reports per task.
struct BenchSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suite",
        abstract: "Spec-Bench evaluation: tokens/s, speedup and mean accepted tokens per task, with a losslessness check.",
        discussion: """
        Reads Spec-Bench's question.jsonl, builds prompts with the model's chat template (a second turn \
        continues the conversation with the decoder's own first answer), and runs every decoder greedily \
        on the same prompts, interleaved question by question so that drift of a shared machine hits \
        all alike. Each turn is timed including prefill, as Spec-Bench times it; the report also gives the \
        speedup with each turn's prefill left out of both decoders' times. Every speculative output is \
        compared with plain decoding's; any difference is reported and the command exits with status 1.
        Writes results.json (every per-turn record), report.md and SVG charts (speedup per task, \
        accepted-length histogram, CTAR curves) into --output.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var speculative: SpeculativeSettings

    @Option(help: "Spec-Bench question file (JSON lines with question_id, category, turns).")
    var suite: String

    @Option(help: "Comma-separated decoders to run; the first is the baseline for speedups. A decoder may carry its own settings after colons, over the flags': tree=N (--tree-budget), width=N, threshold=X, draft=N (--max-draft), copy=N (--copy-ngram), backoff=N (--max-backoff), drop=1 (--drop-uncertain-draft), beams=N and length=N (ReDrafter), beta=N and tau=X (relaxed verification, lossy), adapter=DIR (Kangaroo: another adapter folder, to compare adapters in one run); e.g. plain,kangaroo:tree=0,kangaroo:tree=10,kangaroo:adapter=/tmp/run.")
    var decoders = "plain,kangaroo"

    @Option(help: "At most N questions per task group (mixing the group's categories).")
    var limit: Int?

    @Option(help: "Comma-separated categories or task groups (mt_bench, translation, summarization, qa, math_reasoning, rag).")
    var categories: String?

    @Option(help: "Tokens generated per turn at most.")
    var maxTokens = 256

    @Option(help: "Folder for results.json and report.md.")
    var output = "bench-results"

    @Option(help: "Sampling temperature (0: greedy, the Spec-Bench setting). Above 0, outputs differ between decoders by design and the losslessness check is skipped; the exactness of the distribution is what the tests check.")
    var temperature: Float = 0

    @Option(help: "Seed for sampling.")
    var seed: UInt64 = 0

    func validate() throws {
        guard maxTokens > 0 else { throw ValidationError("--max-tokens must be positive") }
        if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
        _ = try decoderVariants()
    }

    func decoderVariants() throws -> [DecoderVariant] {
        try decoders.split(separator: ",").map { try DecoderVariant(String($0).trimmingCharacters(in: .whitespaces), base: speculative) }
    }

    func run() throws {
        let questions = SpecBench.select(try SpecBench.load(path: suite), limit: limit,
                                         categories: categories?.split(separator: ",").map { String($0) })
        guard !questions.isEmpty else { throw ValidationError("no questions selected from \(suite)") }
        let (model, tokenizer) = try modelOptions.load()
        let template = try modelOptions.template(for: model.gguf)
        let variants = try decoderVariants()
        let adapter = variants.contains { $0.kind == .kangaroo } ? try speculative.resolveAdapter(for: model) : nil
        let head = try speculative.loadRedrafterHead(for: model)
        let blockDrafter = try speculative.loadBlockDrafter(for: model)
        let decoders = try variants.map { variant in
            let ownAdapter = try variant.adapterFolder.map { try KangarooAdapter.load(from: $0, for: model) }
            return try variant.make(model: model, context: 4096, adapter: ownAdapter ?? adapter, redrafterHead: head, blockDrafter: blockDrafter)
        }
        let generator = Generator(tokenizer: tokenizer)
        let options = GenerationOptions(maxTokens: maxTokens, sampling: SamplingOptions(temperature: temperature, seed: seed))

        // Warm-up: caches and page faults out of the way for every decoder.
        let warmPrompt = tokenizer.encodePrompt(template.render([ChatMessage(role: .user, content: "Hello!")]))
        for decoder in decoders { _ = try generator.generate(prompt: warmPrompt, decoder: decoder, options: GenerationOptions(maxTokens: 16)) }

        let records = try runSuite(questions, decoders: decoders, generator: generator, template: template, options: options,
                                   relaxed: variants.map(\.relaxed))

        let o = speculative.options(for: .kangaroo)
        let threshold = o.threshold.map { String($0) } ?? "by shape"
        let treeBudget = o.treeBudget.map { String($0) } ?? "by mode"
        let settings = [
            "suite": suite, "max_tokens": String(maxTokens), "exit_layer": String(adapter?.config.exitLayer ?? o.exitLayer),
            "threshold": threshold, "tree_budget": treeBudget, "max_draft": String(o.maxDraft),
            "uncertain_draft": o.dropsUncertainDraft ? "dropped" : "verified",
            "max_backoff": String(o.maxBackoff), "copy_ngram": String(o.copyNgram),
            "adapter": adapter?.config.origin ?? "",
            "threads": String(modelOptions.threads ?? 0), "model": model.gguf.path,
            "temperature": String(temperature), "seed": String(seed),
        ]
        let run = BenchmarkRun(settings: settings, decoders: decoders.map(\.name), records: records,
                               lossyDecoders: variants.filter { !($0.relaxed?.isLossless ?? true) }.map(\.name))
        try BenchReport.write(run, to: output)
        let mismatches = temperature > 0 ? [] : BenchmarkMetrics.mismatches(run, baseline: decoders[0].name)
        if !mismatches.isEmpty {
            FileHandle.standardError.write(Data(("LOSSLESSNESS CHECK FAILED:\n" + mismatches.map { "  \($0)" }.joined(separator: "\n") + "\n").utf8))
            throw ExitCode(1)
        }
    }
}

/// Runs every decoder on every turn of every question, interleaved question by question (a second turn
/// continues the conversation with the decoder's own first answer); each turn is timed with its prefill.
/// `relaxed[i]`, when given, is decoder i's relaxed verification.
func runSuite(_ questions: [SpecBenchQuestion], decoders: [Decoder], generator: Generator, template: ChatTemplate,
              options: GenerationOptions, relaxed: [RelaxedVerification?] = []) throws -> [TurnRecord] {
    var records: [TurnRecord] = []
    let progress = ProgressBar(total: questions.count)
    for question in questions {
        for (index, decoder) in decoders.enumerated() {
            var options = options
            if index < relaxed.count { options.sampling.relaxed = relaxed[index] }
            var messages: [ChatMessage] = []
            for (turn, text) in question.turns.enumerated() {
                messages.append(ChatMessage(role: .user, content: text))
                let prompt = generator.tokenizer.encodePrompt(template.render(messages))
                let result = try generator.generate(prompt: prompt, decoder: decoder, options: options)
                messages.append(ChatMessage(role: .assistant, content: result.text))
                let stats = result.speculative
                records.append(TurnRecord(
                    questionID: question.questionID, category: question.category, taskGroup: question.taskGroup,
                    turn: turn, decoder: decoder.name, promptTokens: prompt.count, tokenIDs: result.tokens,
                    seconds: result.prefillSeconds + result.decodeSeconds, rounds: stats?.rounds ?? 0,
                    acceptedDrafts: stats?.acceptedDrafts ?? [], draftSeconds: stats?.draftSeconds ?? 0,
                    verifySeconds: stats?.verifySeconds ?? 0, prefillSeconds: result.prefillSeconds))
            }
        }
        progress.advance()
    }
    progress.finish()
    return records
}

/// Re-renders the report of a results.json.
struct BenchReport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Recompute the report from a results.json written by `kangaroo bench`.")

    @Argument(help: "The results.json file.")
    var results: String

    @Option(help: "Folder for report.md (default: the folder of results.json).")
    var output: String?

    func run() throws {
        guard let data = FileManager.default.contents(atPath: results) else { throw ValidationError("cannot read \(results)") }
        let run = try JSONDecoder().decode(BenchmarkRun.self, from: data)
        try Self.write(run, to: output ?? URL(fileURLWithPath: results).deletingLastPathComponent().path, writeResults: false)
    }

    /// Writes results.json (unless re-rendering) and report.md, and prints the table.
    static func write(_ run: BenchmarkRun, to folder: String, writeResults: Bool = true) throws {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        if writeResults {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try encoder.encode(run).write(to: URL(fileURLWithPath: folder + "/results.json"))
        }
        let baseline = run.decoders.first ?? "plain"
        let table = BenchmarkMetrics.markdown(run, baseline: baseline)
        let sampled = (Float(run.settings["temperature"] ?? "0") ?? 0) > 0
        let mismatches = sampled ? [] : BenchmarkMetrics.mismatches(run, baseline: baseline)
        var report = "# Spec-Bench results\n\n"
        report += run.settings.sorted { $0.key < $1.key }.map { "- \($0.key): \($0.value)" }.joined(separator: "\n") + "\n\n"
        report += table + "\n"
        report += sampled
            ? "Sampled outputs differ between decoders by design; the distribution's exactness is checked by the test suite.\n"
            : mismatches.isEmpty
            ? "Losslessness: every speculative output equals the \(baseline) output" + (run.lossyDecoders == nil ? ".\n" : ", except the lossy ones below.\n")
            : "**Losslessness check failed:**\n" + mismatches.map { "- \($0)" }.joined(separator: "\n") + "\n"
        let lossy = (run.lossyDecoders ?? []).map { decoder in
            let (identical, turns) = BenchmarkMetrics.identicalTurns(run, decoder: decoder, baseline: baseline)
            return "Lossy (relaxed verification): \(decoder): \(identical) of \(turns) turns identical to \(baseline) decoding.\n"
        }.joined()
        report += lossy
        let charts = BenchmarkMetrics.charts(run, baseline: baseline)
        for (name, svg) in charts { try svg.write(toFile: folder + "/" + name, atomically: true, encoding: .utf8) }
        report += "\n" + charts.keys.sorted().map { "![\($0)](\($0))" }.joined(separator: "\n") + "\n"
        try report.write(toFile: folder + "/report.md", atomically: true, encoding: .utf8)
        writeOut(table + lossy)
        writeOut("report: \(folder)/report.md\n")
    }
}

/// A one-line progress bar with an ETA on standard error.
final class ProgressBar {
    let total: Int
    private var done = 0
    private let started = ContinuousClock.now

    init(total: Int) {
        self.total = total
        draw()
    }

    func advance() {
        done += 1
        draw()
    }

    func finish() { FileHandle.standardError.write(Data("\n".utf8)) }

    private func draw() {
        let width = 30
        let filled = total > 0 ? width * done / total : width
        let elapsed = (ContinuousClock.now - started).seconds
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let line = "\r[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(done)/\(total)  elapsed \(Int(elapsed))s  ETA \(Int(eta))s "
        FileHandle.standardError.write(Data(line.utf8))
    }
}

/// A decoder with settings of its own, as `bench suite --decoders` names it: `kind[:key=value…]`.
struct DecoderVariant {
    let name: String
    let kind: DecoderKind
    let options: SpeculativeOptions
    /// SpecDec's lossy relaxed verification (`beta=`, `tau=`), nil: exact.
    let relaxed: RelaxedVerification?
    /// Kangaroo's adapter folder (`adapter=`), to compare adapters in one run; nil: the run's adapter.
    let adapterFolder: String?

    init(_ spec: String, base: SpeculativeSettings) throws {
        let parts = spec.split(separator: ":").map(String.init)
        guard let first = parts.first, let kind = DecoderKind(rawValue: first) else {
            throw ValidationError("--decoders takes plain, kangaroo, layerskip, lookup, redrafter and specdec (with :key=value settings): '\(spec)'")
        }
        var options = base.options(for: kind)
        var beta: Int?, tau: Float?, adapterFolder: String?, hasThreshold = false
        for setting in parts.dropFirst() {
            let pair = setting.split(separator: "=", maxSplits: 1).map(String.init)
            if pair.count == 2 && pair[0] == "adapter" {
                guard kind == .kangaroo else { throw ValidationError("'\(spec)': only kangaroo takes an adapter") }
                adapterFolder = pair[1]
                continue
            }
            guard pair.count == 2, let value = Double(pair[1]) else { throw ValidationError("'\(setting)' in '\(spec)' is not key=number") }
            switch pair[0] {
            case "tree":
                options.treeBudget = Int(value)
                if kind.draftsTrees && base.threshold == nil && !hasThreshold { options.threshold = nil }
            case "width": options.treeWidth = Int(value)
            case "threshold":
                options.threshold = Float(value)
                hasThreshold = true
            case "draft": options.maxDraft = Int(value)
            case "copy": options.copyNgram = Int(value)
            case "backoff": options.maxBackoff = Int(value)
            case "drop": options.dropsUncertainDraft = value != 0
            case "beams": options.beamWidth = Int(value)
            case "length": options.beamLength = Int(value)
            case "beta": beta = Int(value)
            case "tau": tau = Float(value)
            default: throw ValidationError("unknown setting '\(pair[0])' in '\(spec)' (tree, width, threshold, draft, copy, backoff, drop, beams, length, beta, tau, adapter)")
            }
        }
        do {
            relaxed = beta != nil || tau != nil ? try RelaxedVerification(beta: beta ?? 1, tau: tau ?? 0) : nil
        } catch {
            throw ValidationError("'\(spec)': beta must be in \(RelaxedVerification.betaRange), tau in \(RelaxedVerification.tauRange)")
        }
        if let invalid = options.invalidSetting { throw ValidationError("'\(spec)': \(SpeculativeSettings.flagError(invalid))") }
        name = spec
        self.adapterFolder = adapterFolder
        self.kind = kind
        self.options = options
    }

    func make(model: LlamaModel, context: Int, adapter: KangarooAdapter?, redrafterHead: RecurrentDraftHead?,
              blockDrafter: KangarooAdapter?) throws -> SpeculativeDecoder {
        try DecoderCatalog.make(kind, model: model, options: options, adapter: adapter, redrafterHead: redrafterHead,
                                blockDrafter: blockDrafter, contextCapacity: context, name: name)
    }
}
