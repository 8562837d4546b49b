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
/// The calling thread is part 0 of each job; `threads - 1` workers are the others. Idle workers
/// spin on a generation counter for a short while (a decode step issues ~200 jobs back to back) and
/// then sleep on a condition variable, so an idle pool costs no CPU. Parts take chunks of items from
/// a shared counter until none are left, so a thread that is slowed down (the machine is shared)
/// takes fewer chunks instead of holding up the others. Jobs must compute each item the same way
/// whatever range it arrives in, so which thread computes an item never changes its bits.
public final class ThreadPool: @unchecked Sendable {
    public let threads: Int

    private let generation = Atomic<Int>(0)
    private let unfinished = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    /// Set by `shutDown`: workers leave, and jobs run on the calling thread.
    private let stopping = Atomic<Bool>(false)
    private let runningWorkers = Atomic<Int>(0)
    /// The first item of the current job that no part has taken yet.
    private let nextItem = Atomic<Int>(0)
    private var mutex = pthread_mutex_t()
    /// Held for the whole of a job: callers on different threads take turns.
    private var jobMutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    /// The current job, its item count and number of parts; written before `generation` is published.
    /// Not retained: `run` holds the job until every part is done, and a retain from each thread
    /// would bounce the job's reference count between the cores on every call.
    private nonisolated(unsafe) unowned(unsafe) var job: ParallelJob?
    private nonisolated(unsafe) var jobCount = 0
    private nonisolated(unsafe) var parts = 0
    /// The smallest chunk of the current job.
    private nonisolated(unsafe) var smallestChunk = 1
    /// Chunks shrink as the job runs (guided scheduling): each takes 1 / parts of what is left, but at
    /// least 1 / (parts · tailChunksPerPart) of the job. So the first part to arrive takes its whole
    /// even share in one run of consecutive rows, and the other share is taken in halving chunks, so
    /// the parts still finish together. Long runs matter: each new chunk is a new stream for the
    /// prefetchers. The shares and the tail were chosen by measurement (docs/measurements.md).
    private static let tailChunksPerPart = 8

    public init(threads: Int) {
        precondition(threads >= 1, "a thread pool needs at least one thread")
        self.threads = threads
        pthread_mutex_init(&mutex, nil)
        pthread_mutex_init(&jobMutex, nil)
        pthread_cond_init(&condition, nil)
        runningWorkers.store(threads - 1, ordering: .relaxed)
        for worker in 1..<max(threads, 1) {
            // Workers keep their pool alive until `shutDown`.
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

    /// Sets the shared pool's size (CLI `--threads`). Call it at start-up, before any model work: a
    /// replaced pool is shut down, so whatever still holds it runs on one thread.
    public static func setShared(threads: Int) {
        sharedPool.withLock { pool in
            guard pool?.threads != threads else { return }
            pool?.shutDown()
            pool = ThreadPool(threads: threads)
        }
    }

    /// Worker threads still running (0 after `shutDown`).
    public var liveWorkers: Int { runningWorkers.load(ordering: .acquiring) }

    /// Ends the worker threads once the job in progress, if any, is done; later jobs run on the
    /// calling thread alone.
    public func shutDown() {
        pthread_mutex_lock(&jobMutex)
        defer { pthread_mutex_unlock(&jobMutex) }
        guard !stopping.load(ordering: .relaxed) else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(&mutex)
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
        while runningWorkers.load(ordering: .acquiring) > 0 {}
    }

    /// Runs `job` over disjoint ranges covering `0..<count`, in parallel when there is enough work
    /// (at least `grain` items per part; ranges hold at least `grain` items except the last), and
    /// returns when all parts are done. Nothing is allocated per call (a closure would be: the job is
    /// a reused object instead).
    public func run(_ job: ParallelJob, count: Int, grain: Int) {
        let parts = min(threads, max(1, count / max(grain, 1)))
        if parts <= 1 {
            job.run(0..<count, part: 0)
            return
        }
        pthread_mutex_lock(&jobMutex)
        defer { pthread_mutex_unlock(&jobMutex) }
        if stopping.load(ordering: .relaxed) {
            job.run(0..<count, part: 0)
            return
        }
        self.job = job
        jobCount = count
        self.parts = parts
        smallestChunk = max(grain, count / (parts * Self.tailChunksPerPart), 1)
        nextItem.store(0, ordering: .relaxed)
        unfinished.store(threads - 1, ordering: .relaxed)
        // Sequentially consistent on both sides (here and in workerLoop) so that either this load
        // sees a sleeper or the sleeper sees the new generation.
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(&mutex)
            pthread_cond_broadcast(&condition)
            pthread_mutex_unlock(&mutex)
        }
        takeChunks(of: job, part: 0)
        while unfinished.load(ordering: .acquiring) > 0 {}
        self.job = nil
    }

    private func takeChunks(of job: ParallelJob, part: Int) {
        let count = jobCount, smallest = smallestChunk, divisor = parts
        var start = nextItem.load(ordering: .relaxed)
        while start < count {
            let end = min(count, start + max(smallest, (count - start) / divisor))
            let (taken, current) = nextItem.compareExchange(expected: start, desired: end, ordering: .relaxed)
            if taken {
                job.run(start..<end, part: part)
                start = nextItem.load(ordering: .relaxed)
            } else {
                start = current
            }
        }
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
            if stopping.load(ordering: .sequentiallyConsistent) {
                runningWorkers.subtract(1, ordering: .releasing)
                return
            }
            if worker < parts, let job { takeChunks(of: job, part: worker) }
            unfinished.subtract(1, ordering: .releasing)
        }
    }
}
