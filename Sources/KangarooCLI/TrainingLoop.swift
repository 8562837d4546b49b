import Foundation
import Training

/// Runs `step` until `steps` steps are done (a resumed run starts at `done`), printing the loss and
/// agreement (`agreement` names it) averaged over the last 20 steps every 10 steps with an ETA, and
/// calling `checkpoint` every `checkpointEvery` steps and at the end.
func runTrainingSteps(from done: Int, to steps: Int, checkpointEvery: Int, agreement: String,
                      step: () -> TrainingProgress, checkpoint: () throws -> Void) throws {
    let started = Date(), first = done
    var done = done, recentLoss: [Double] = [], recentAgreement: [Double] = []
    while done < steps {
        let p = step()
        done = p.step
        recentLoss = Array((recentLoss + [p.loss]).suffix(20))
        recentAgreement = Array((recentAgreement + [p.agreement]).suffix(20))
        if done % 10 == 0 || done == steps {
            let elapsed = Date().timeIntervalSince(started)
            let eta = elapsed / Double(max(done - first, 1)) * Double(steps - done)
            let line = String(format: "step %d/%d  loss %.3f  %@ %.3f  lr %.2e  elapsed %.0fs  ETA %.0fs\n", done, steps,
                              recentLoss.reduce(0, +) / Double(recentLoss.count), agreement,
                              recentAgreement.reduce(0, +) / Double(recentAgreement.count), p.learningRate, elapsed, eta)
            FileHandle.standardError.write(Data(line.utf8))
        }
        if done % checkpointEvery == 0 || done == steps { try checkpoint() }
    }
}
