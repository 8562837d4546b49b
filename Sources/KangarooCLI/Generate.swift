import ArgumentParser
import Decoding
import Foundation
import Llama
import Tokenizer

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a continuation of a prompt, streamed token by token.",
        discussion: """
        The prompt comes from --prompt, --prompt-file, or standard input. With --chat it is wrapped in \
        the model's chat template as a user message. Decoding is greedy unless --temperature is above 0.

        With --prompts-file FILE.jsonl, each line is a JSON object with "prompt" (wrapped as a user \
        message with --chat) or "messages" (a chat: [{"role": "user", "content": "…"}, …]), and optionally \
        "max_tokens", "seed", "temperature" and "id". Up to --batch-size prompts decode together, their \
        drafts verified in one forward, with any --decoder; each output line, in input order, has the \
        fields of --json and the input's id, and equals what that prompt gives alone.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var promptOptions: PromptOptions
    @OptionGroup var decoderOptions: DecoderOptions

    @Flag(help: "Wrap the prompt in the model's chat template as a user message.")
    var chat = false

    @Option(help: "System message for --chat (default: the template's own, if it has one).")
    var system: String?

    @Option(help: "Maximum number of tokens to generate.")
    var maxTokens = 256

    @Option(help: "Sampling temperature; 0 is greedy decoding.")
    var temperature: Float = 0

    @Option(help: "Sample only among the K most likely tokens (0: off).")
    var topK = 0

    @Option(help: "Sample only within the smallest set of tokens whose probability reaches P (1: off).")
    var topP: Float = 1

    @Option(help: "Drop tokens less likely than P times the most likely one (0: off).")
    var minP: Float = 0

    @Option(help: "Random seed for sampling (same seed, same output).")
    var seed: UInt64 = 0

    @Option(help: "Stop when the text contains this string (repeatable); the string itself is not printed.")
    var stop: [String] = []

    @Flag(help: "Do not stop at end-of-sequence tokens (decode exactly --max-tokens tokens).")
    var ignoreEOS = false

    @Option(help: "Context length in tokens (default: 4096, or the model's if smaller; at most the model's).")
    var context: Int?

    @Option(help: "With --json, report the top K log-probabilities at each generated position.")
    var logprobs = 0

    @Flag(help: "Print one JSON object with the text, token ids, timings and statistics instead of streaming.")
    var json = false

    @Option(help: "Decode the prompts of a JSON-lines file (see below) and print one JSON line for each.")
    var promptsFile: String?

    @Option(help: "With --prompts-file: sequences decoded together at most.")
    var batchSize = 4

    @Flag(help: """
        LOSSY: SpecDec's relaxed verification (greedy only). A draft is accepted when it is among the full \
        model's --beta most likely tokens and its logit is within --tau of the top one's, so THE OUTPUT \
        CAN DIFFER FROM PLAIN DECODING'S; --json then reports "lossless": false. Off by default.
        """)
    var relaxedVerification = false

    @Option(help: "With --relaxed-verification: β, the full model's top tokens a draft may be (1 is exact).")
    var beta = 5

    @Option(help: "With --relaxed-verification: τ, how far below the top logit a draft's logit may be.")
    var tau: Float = 3

    func validate() throws {
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must not be negative") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be 0 or more") }
        guard topK >= 0 else { throw ValidationError("--top-k must not be negative") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard minP >= 0, minP < 1 else { throw ValidationError("--min-p must be in [0, 1)") }
        guard (0...100).contains(logprobs) else { throw ValidationError("--logprobs must be between 0 and 100") }
        if let context, context < 2 { throw ValidationError("--context must be at least 2") }
        if system != nil && !chat && promptsFile == nil { throw ValidationError("--system needs --chat") }
        guard (1...64).contains(batchSize) else { throw ValidationError("--batch-size must be between 1 and 64") }
        if relaxedVerification {
            guard temperature == 0 else { throw ValidationError("--relaxed-verification applies to greedy decoding only (--temperature 0)") }
            guard (try? RelaxedVerification(beta: beta, tau: tau)) != nil else {
                throw ValidationError("--beta must be in \(RelaxedVerification.betaRange), --tau in \(RelaxedVerification.tauRange)")
            }
        }
        if promptsFile != nil && (promptOptions.prompt != nil || promptOptions.promptFile != nil) {
            throw ValidationError("give either --prompts-file or a single prompt, not both")
        }
    }

    /// The generation settings the flags give.
    var generationOptions: GenerationOptions {
        GenerationOptions(maxTokens: maxTokens,
                          sampling: SamplingOptions(temperature: temperature, topK: topK, topP: topP, minP: minP, seed: seed,
                                                    relaxed: relaxedVerification ? try? RelaxedVerification(beta: beta, tau: tau) : nil),
                          stopStrings: stop, ignoreEOS: ignoreEOS, logprobs: logprobs)
    }

    func run() throws {
        do {
            if let promptsFile { return try runBatch(file: promptsFile) }
            try runOne()
        } catch let error as LlamaError {
            guard case .contextFull = error else { throw error }
            throw ValidationError("\(error); use a shorter prompt, fewer --max-tokens or a larger --context")
        } catch ChatTemplateError.missing {
            throw ValidationError("\(ChatTemplateError.missing); run without --chat")
        }
    }

    private func runOne() throws {
        let text = try promptOptions.text()
        let (model, tokenizer) = try modelOptions.load()
        var promptText = text
        if chat {
            let template = try modelOptions.template(for: model.gguf)
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: .system, content: system)) }
            messages.append(ChatMessage(role: .user, content: text))
            promptText = template.render(messages)
        }
        let prompt = tokenizer.encodePrompt(promptText)
        guard !prompt.isEmpty else { throw ValidationError("the prompt is empty") }
        let decoder = try decoderOptions.makeDecoder(model: model, context: context)
        let result = try Generator(tokenizer: tokenizer).generate(prompt: prompt, decoder: decoder, options: generationOptions,
                                                                  onText: { piece in if !json { writeOut(piece.text) } })
        if json {
            try printJSON(GenerateReport(result))
        } else {
            writeOut("\n")
        }
    }
}

/// The `--json` output of `generate`.
struct GenerateReport: Encodable {
    struct LogProbEntry: Encodable {
        var id: Int32
        var logprob: Float
        var top: [TokenLogProb]
    }

    var decoder: String
    /// False when a lossy option (relaxed verification) may have changed the output.
    var lossless: Bool
    var text: String
    var tokenIds: [Int32]
    var promptTokens: Int
    var generatedTokens: Int
    var stopReason: String
    var prefillMs: Double
    var decodeMs: Double
    var tokensPerSecond: Double
    var logprobs: [LogProbEntry]?
    var speculative: SpeculativeReport?

    init(_ result: GenerationResult) {
        decoder = result.decoder
        lossless = result.lossless
        text = result.text
        tokenIds = result.tokens
        promptTokens = result.promptTokens
        generatedTokens = result.tokens.count
        stopReason = result.stopReason.rawValue
        prefillMs = result.prefillSeconds * 1000
        decodeMs = result.decodeSeconds * 1000
        tokensPerSecond = result.decodeTokensPerSecond
        logprobs = result.logprobs.isEmpty ? nil : result.logprobs.map { LogProbEntry(id: $0.token.id, logprob: $0.token.logprob, top: $0.top) }
        speculative = result.speculative.map(SpeculativeReport.init)
    }
}

/// Acceptance statistics in `--json` output.
struct SpeculativeReport: Encodable {
    var rounds: Int
    var meanAcceptedTokens: Double
    /// Index n: rounds that committed n tokens (drafts accepted + the full model's token).
    var acceptedLengthHistogram: [Int]
    /// CTAR(w) for w = 1…γ: share of rounds that committed more than w tokens.
    var ctar: [Double]
    var draftSteps: Int
    /// Drafts that were copies (--copy-ngram).
    var copiedDrafts: Int
    var draftMs: Double
    var verifyMs: Double

    init(_ s: SpeculativeStatistics) {
        rounds = s.rounds
        meanAcceptedTokens = s.meanAcceptedTokens
        acceptedLengthHistogram = s.acceptedLengthHistogram
        ctar = s.ctar
        draftSteps = s.draftSteps
        copiedDrafts = s.copiedDrafts
        draftMs = s.draftSeconds * 1000
        verifyMs = s.verifySeconds * 1000
    }
}
