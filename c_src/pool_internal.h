/* pool_internal.h — the pool's shared state and the functions its files
 * share (queue.c, reply.c, worker.c, callback.c, watchdog.c, pool.c).
 * Not for the NIF layer (it uses pool.h) nor for anything below the pool.
 *
 * Locking: one pool mutex (P.lock) guards every queue, every job's state
 * and every worker's scheduling fields.  It is a leaf lock, held for short
 * non-blocking sections only: nothing (in particular not the GIL, i.e. an
 * executor's enter) is acquired while it is held.  Code that is entered
 * (holds the GIL) may take the pool lock; never the reverse order.
 * Functions named *_locked, and those marked "lock held", are called with
 * it held. */
#ifndef PYN_POOL_INTERNAL_H
#define PYN_POOL_INTERNAL_H

#include "executor.h"
#include "job.h"
#include "pool.h"

#define PYN_STACK_BYTES ((size_t)64 * 1024 * 1024)
/* How long an idle worker polls its queues before parking on its condition
 * variable.  A wake-up through the condition variable costs 10-15 us here;
 * polling lets back-to-back calls skip it.  Only one worker polls at a time
 * and never for longer than this, so an idle pool burns no CPU. */
#define PYN_SPIN_NS 60000
/* After a request that found the pool idle (one caller calling again and
 * again, say), the worker polls longer: such a caller often takes more than
 * 60 us between two calls (decoding a large reply), and would otherwise
 * wake a parked worker, and miss the hand-over, each time. */
#define PYN_SPIN_LONG_NS 250000
/* How long a caller whose request went to an idle polling worker, with no
 * other request in flight, polls in its NIF for the reply (see
 * pyn_await_inline).  Covers a small call with room to spare; anything
 * longer is answered by message as usual. */
#define PYN_CALLER_SPIN_NS 10000
/* How long such a caller waits for the worker to start reading a borrowed
 * request (the worker may be finishing its previous one) before copying
 * it after all. */
#define PYN_START_SPIN_NS 100000
/* The same for a caller on a dirty scheduler (large requests), which may
 * also have woken a parked worker: long enough for the wake-up. */
#define PYN_PATIENT_SPIN_NS 500000
/* Requests running longer than this get a monitor on their caller. */
#define PYN_LATE_MONITOR_MS 50
/* The watchdog's period while workers exist (it sleeps otherwise). */
#define PYN_WATCHDOG_TICK_MS 100

typedef struct {
    uint64_t id;
    int ready;
    ErlNifEnv *env; /* reply, owned by the slot once ready */
    ERL_NIF_TERM result;
} pyn_cbslot_t;

typedef enum { PYN_W_ALIVE, PYN_W_RETIRED } pyn_wstate_t;

/* A worker's counters (metrics.c), pool lock.  Latency from submit to
 * answer in a log-linear histogram of nanoseconds. */
#define PYN_LAT_BUCKETS 336
typedef struct {
    uint64_t calls;    /* requests run (answered or not) */
    uint64_t answered; /* of which answered: the histogram's count */
    uint64_t errors;   /* answered with an error */
    uint64_t timeouts; /* given up by their caller while running */
    uint64_t hist[PYN_LAT_BUCKETS];
} pyn_wmetrics_t;

/* A worker.  Allocated as a resource object; the pool table and the thread
 * each keep a reference.  ex_ctx belongs to the worker's thread (and to
 * the executor's interrupt, see executor.h). */
struct pyn_worker {
    int id;
    pyn_wstate_t state;
    int bound;    /* serves only its own queues */
    uint64_t gen; /* bumps at every bind/unbind: stale handles are refused */
    int idle;     /* parked on cond, waiting for work */
    int owed;     /* unbound while requests waited for any worker: it serves
                   * the shared queue before it can be bound again */
    int64_t poll_ns; /* how long to poll before parking next time */
    pyn_queue_t own;    /* bound/context jobs and control jobs */
    pyn_queue_t nested; /* jobs made by the Erlang side of its callbacks */
    pthread_cond_t cond;
    pthread_t thread;
    void *ex_ctx;         /* what the executor's attach returned */
    int interrupting;     /* the watchdog is in the executor's interrupt */
    pyn_job_t *current;   /* innermost job being run */
    int waiting;          /* in a callback wait: not running Python */
    int depth;            /* callback nesting depth */
    uint64_t cb_seq;
    pyn_cbslot_t slots[PYN_MAX_NEST];
    pyn_wmetrics_t metrics;
};

/* The pool (queue.c defines it). */
typedef struct {
    pthread_mutex_t lock;
    const pyn_executor_t *ex; /* how workers run Python (set at boot) */
    pyn_queue_t shared;
    pyn_worker_t *workers[PYN_MAX_WORKERS]; /* in service */
    int nworkers;
    pyn_worker_t *all[2 * PYN_MAX_WORKERS]; /* threads still running */
    int nall;
    int nfree;   /* in service and unbound: can serve the shared queue */
    int replacing; /* workers retired and not yet replaced by the pool */
    pyn_worker_t *spinner; /* the worker polling for work, if any */
    int spinner_claimed;   /* a job was queued for the poller already */
    int spinner_bound;     /* the poller was bound when it began (a hint) */
    int spinner_busy;      /* the poller frees deferred objects (atomic) */
    int gil_waiters;       /* workers waiting to enter (atomic) */
    int sem_max, sem_cur;  /* overload semaphore: slots, slots held */
    pyn_queue_t slot_wait; /* requests waiting for a slot */
    int nidle;             /* parked unbound workers in service */
    int nbusy;             /* workers in service running a job */
    int pending; /* queued requests (control jobs not counted) */
    uint64_t queued_timeouts; /* requests given up before any worker took them */
    pyn_wmetrics_t retired;   /* the counters of workers taken out of service */
    uint64_t crashed;         /* requests answered worker_crashed (or the like) */
    int running; /* attached and not shut down */
    int has_pool;
    ErlNifPid pool_pid, runner_pid;
    int has_log;       /* Python's log records go to log_pid (py_log) */
    ErlNifPid log_pid;
    int grace_ms;
    int max_abandoned; /* threads of retired workers still running, at most */
    ErlNifEnv *setup_env; /* the setup new workers run first (pyn_setup) */
    ERL_NIF_TERM setup_src;
    /* watchdog */
    pthread_cond_t wd_cond;
    int wd_kick;
    /* boot */
    int booted, boot_rc;
    char boot_err[256];
    pthread_cond_t boot_cond;
} pyn_pool_t;

extern pyn_pool_t P;

/* The worker of the calling OS thread, NULL on other threads (worker.c). */
extern __thread pyn_worker_t *pyn_self;

/* ---- metrics.c: per-worker counters (lock held) ---------------------- */
/* Counts job j, which w ran, answered with result (finish_job); a
 * retired worker's go to P.retired. */
void metrics_done_locked(pyn_worker_t *w, const pyn_job_t *j, ERL_NIF_TERM result);

/* ---- queue.c: queues, admission, job state changes (lock held) -------- */
void q_push(pyn_queue_t *q, pyn_job_t *j);
pyn_job_t *q_pop(pyn_queue_t *q);
/* Sends {Ref, {error, Reason}} for a job whose env nobody else uses, and
 * frees that env / for a job a worker runs (a fresh env: the worker owns
 * the job's). */
void reply_error_owned(ErlNifEnv *caller_env, pyn_job_t *j, ERL_NIF_TERM reason);
void reply_error_running(ErlNifEnv *caller_env, pyn_job_t *j, ERL_NIF_TERM reason);
/* Wakes the watchdog (a job was cancelled or a worker retired). */
void kick_watchdog(void);
/* Pushes j onto a list of jobs to demonitor and release once the lock is
 * dropped (release_dropped, which is called WITHOUT the lock). */
void drop_later(pyn_job_t *j, pyn_job_t **dropped);
void release_dropped(ErlNifEnv *env, pyn_job_t *list);
/* Gives back j's semaphore slot, if it holds one, admitting waiters. */
void slot_release_locked(ErlNifEnv *env, pyn_job_t *j, pyn_job_t **dropped);
/* Wakes one parked worker that may serve the shared queue / unless the
 * polling worker takes job j (NULL: any job; then returns 1). */
void wake_parked(void);
int wake_one_free(const pyn_job_t *j);
/* Marks j running on w. */
void start_job(pyn_worker_t *w, pyn_job_t *j);
/* Takes w out of service: answers its queued jobs (onto *dropped) and the
 * jobs it runs.  1 if the table reference must then be released. */
int retire_locked(ErlNifEnv *env, pyn_worker_t *w, ERL_NIF_TERM reason, pyn_job_t **dropped);
/* Lock held: tells the pool process that worker w was lost (retired here,
 * not by the pool), so that it starts a replacement (queue.c). */
void tell_pool_lost_locked(pyn_worker_t *w);
/* The job type's down callback: its caller died. */
void pyn_job_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon);

/* ---- reply.c: answering a job ------------------------------------------ */
/* Worker thread, entered: sends (or hands over) result, ends the job on w
 * and drops the queue's reference.  Takes the lock. */
void finish_job(pyn_worker_t *w, pyn_job_t *j, ERL_NIF_TERM result);

/* ---- worker.c: the worker thread --------------------------------------- */
/* Worker thread, entered: runs j (started by start_job) and answers it. */
void run_job(pyn_worker_t *w, pyn_job_t *j);
/* Opens the worker resource type.  0 ok. */
int pyn_worker_type_init(ErlNifEnv *env);

/* ---- callback.c -------------------------------------------------------- */
/* Gives the `erlang` module the pool's callback operations. */
void pyn_callbacks_install(void);

#endif
