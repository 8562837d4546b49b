import Foundation
import Llama
import Tokenizer
import Training

/// The model's own answers to the first `conversations` of `candidates` whose prompts fit (and to
/// `taskPrompts` task prompts), generated once and kept in `folder`/self-distill.jsonl, so that later
/// runs, also of another trainer, reuse them. Targets start at the answer: the prompt is context only.
func selfDistilledSequences(_ candidates: [Conversation], model: LlamaModel, tokenizer: Tokenizer, template: ChatTemplate,
                            folder: String, conversations: Int, maxNewTokens: Int, maxTokens: Int,
                            taskPrompts: Int) throws -> [(tokens: [Int32], firstTarget: Int)] {
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let distillation = SelfDistillation(model: model, tokenizer: tokenizer, template: template,
                                        maxNewTokens: maxNewTokens, maxTokens: maxTokens)
    var store = try SelfDistilledStore(path: folder + "/self-distill.jsonl")
    var prompts: [(id: String, tokens: [Int32])] = []
    for conversation in candidates where prompts.count < conversations {
        if let prompt = distillation.prompt(for: conversation) { prompts.append((conversation.id, prompt)) }
    }
    // Task prompts from the other end of the list, so their passages are not the answers above.
    prompts += distillation.taskPrompts(from: candidates.reversed(), count: taskPrompts)
    let missing = prompts.filter { store.sequences[$0.id] == nil }
    if !missing.isEmpty {
        FileHandle.standardError.write(Data("generating the model's answers to \(missing.count) prompts (≤\(maxNewTokens) tokens each) …\n".utf8))
        let bar = ProgressBar(total: missing.count)
        _ = try distillation.sequences(prompts: missing.map(\.tokens)) { index, sequence in
            try store.append(id: missing[index].id, tokens: sequence)
            bar.advance()
        }
        bar.finish()
    }
    return prompts.compactMap { prompt in store.sequences[prompt.id].map { ($0, prompt.tokens.count - 1) } }
        .filter { $0.tokens.count > $0.firstTarget + 8 }
}

/// `sequences` teacher-forced by `forcing` (the full model's top-k distributions, exit states and, if
/// it keeps them, deep states), with a line naming `what` and a progress bar on standard error.
func teacherForced(_ sequences: [(tokens: [Int32], firstTarget: Int)], by forcing: TeacherForcing,
                   what: String) throws -> [TeacherForcedSequence] {
    FileHandle.standardError.write(Data("teacher forcing \(sequences.count) \(what) (\(sequences.reduce(0) { $0 + $1.tokens.count }) tokens) …\n".utf8))
    let bar = ProgressBar(total: sequences.count)
    var examples: [TeacherForcedSequence] = []
    for sequence in sequences {
        examples.append(try forcing.run(sequence.tokens, firstTarget: sequence.firstTarget))
        bar.advance()
    }
    bar.finish()
    return examples
}
