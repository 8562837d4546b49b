import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Work that a `ThreadPool` splits into ranges. `part` is in `0..<threads` and distinct for ranges
/// that run at the same time, so it can index per-thread scratch space. Ranges are disjoint; what
/// `run` writes for one range must not overlap what it writes for another.
public protocol ParallelJob: AnyObject {
    func run(_ range: Range<Int>, part: Int)
}

/// A fixed set of worker threads for the kernels, with a per-call overhead of about a microsecond.
///
/// The calling thread takes part 0 of each job; `threads - 1` workers take the others. Idle workers
/// spin on a generation counter for a short while (a decode step issues ~200 jobs back to back) and
/// then sleep on a condition variable, so an idle pool costs no CPU. Work is cut into one contiguous
/// range per part, so which thread computes an element never changes the arithmetic that produces it.
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int

    private let generation = Atomic<Int>(0)
    private let unfinished = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private var mutex = pthread_mutex_t()
    /// Held for the whole of a job: callers on different threads take turns.
    private var jobMutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    /// The current job, its item count and number of parts; written before `generation` is published.
    private nonisolated(unsafe) var job: ParallelJob?
    private nonisolated(unsafe) var jobCount = 0
    private nonisolated(unsafe) var parts = 0

    public init(threads: Int) {
        precondition(threads >= 1, "a thread pool needs at least one thread")
        self.threads = threads
        pthread_mutex_init(&mutex, nil)
        pthread_mutex_init(&jobMutex, nil)
        pthread_cond_init(&condition, nil)
        for worker in 1..<max(threads, 1) {
            // Workers keep their pool alive: pools live for the whole process.
            let thread = Thread { [self] in self.workerLoop(worker) }
            thread.start()
        }
    }

    private static let sharedPool = Mutex<ThreadPool?>(nil)

    /// The pool the kernels use unless told otherwise: one thread per core, or what `setShared` chose.
    public static var shared: ThreadPool {
        sharedPool.withLock { pool in
            if let pool { return pool }
            let created = ThreadPool(threads: defaultThreadCount)
            pool = created
            return created
        }
    }

    public static var defaultThreadCount: Int { max(1, min(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 16)) }

    /// Sets the shared pool's size (CLI `--threads`). Call it at start-up, before any model work:
    /// a replaced pool's threads stay asleep for the rest of the process.
    public static func setShared(threads: Int) {
        sharedPool.withLock { pool in
            if pool?.threads != threads { pool = ThreadPool(threads: threads) }
        }
    }

    /// Runs `job` over disjoint ranges covering `0..<count`, in parallel when there is enough work
    /// (at least `grain` items per part), and returns when all parts are done. Nothing is allocated
    /// per call (a closure would be: the job is a reused object instead).
    public func run(_ job: ParallelJob, count: Int, grain: Int) {
        let parts = min(threads, max(1, count / max(grain, 1)))
        if parts <= 1 {
            job.run(0..<count, part: 0)
            return
        }
        pthread_mutex_lock(&jobMutex)
        defer { pthread_mutex_unlock(&jobMutex) }
        self.job = job
        jobCount = count
        self.parts = parts
        unfinished.store(threads - 1, ordering: .relaxed)
        // Sequentially consistent on both sides (here and in workerLoop) so that either this load
        // sees a sleeper or the sleeper sees the new generation.
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(&mutex)
            pthread_cond_broadcast(&condition)
            pthread_mutex_unlock(&mutex)
        }
        job.run(Self.range(part: 0, of: parts, count: count), part: 0)
        while unfinished.load(ordering: .acquiring) > 0 {}
        self.job = nil
    }

    private static func range(part: Int, of parts: Int, count: Int) -> Range<Int> {
        part * count / parts ..< (part + 1) * count / parts
    }

    private func workerLoop(_ worker: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins > 200_000 {
                    pthread_mutex_lock(&mutex)
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen {
                        pthread_cond_wait(&condition, &mutex)
                    }
                    sleepers.subtract(1, ordering: .relaxed)
                    pthread_mutex_unlock(&mutex)
                    spins = 0
                }
            }
            seen = generation.load(ordering: .acquiring)
            if worker < parts, let job { job.run(Self.range(part: worker, of: parts, count: jobCount), part: worker) }
            unfinished.subtract(1, ordering: .releasing)
        }
    }
}
