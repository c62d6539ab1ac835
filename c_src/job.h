/* job.h — a request ("job") as every layer sees it: its kind, state and
 * reply fields, the borrow and hand-over words, and the async reply handle
 * (job.c).  The lowest unit of the pool's data: Python-side code reads a
 * job's request here, the pool queues and answers it.
 *
 * Ownership: a job is a resource object.  The caller's term holds one
 * reference; a queue or worker holds another while it is queued or running.
 * Which lock guards which field is noted per field ("pool lock": the pool
 * mutex, pool_internal.h; "atomic": lock-free words). */
#ifndef PYN_JOB_H
#define PYN_JOB_H

#include <pthread.h>
#include <stdint.h>
#include <erl_nif.h>

typedef struct pyn_job pyn_job_t;
typedef struct pyn_worker pyn_worker_t; /* the pool's (pool.h) */

typedef struct {
    pyn_job_t *head, *tail;
} pyn_queue_t;

typedef enum {
    PYN_JOB_CALL,
    PYN_JOB_EVAL,
    PYN_JOB_EXEC,
    PYN_JOB_STREAM,
    PYN_JOB_STREAM_EVAL,
    PYN_JOB_ASYNC,        /* start a coroutine on the asyncio loop */
    PYN_JOB_ASYNC_STREAM, /* drain an async generator on the asyncio loop */
    PYN_JOB_STREAM_START, /* run a generator, its values sent as they come (py_stream.h) */
    PYN_JOB_WIPE,         /* control: clear the worker's namespace, no reply */
    PYN_JOB_CLEAR_CACHES, /* control: forget cached modules and callables */
    PYN_JOB_SETUP,        /* control: run the source in req (a binary) */
    PYN_JOB_SLOT          /* a semaphore slot held by a process, no Python */
} pyn_kind_t;

typedef enum { PYN_JS_NEW, PYN_JS_QUEUED, PYN_JS_RUNNING, PYN_JS_DONE } pyn_jstate_t;

/* A request (flags are plain ints, not bit-fields: different threads write
 * different flags).  Allocated as a resource object: the caller's term holds one
 * reference, the queue/worker holds another (kept while queued or running). */
struct pyn_job {
    pyn_job_t *prev, *next; /* queue links (pool lock) */
    pyn_queue_t *queue;     /* the queue it is on, or NULL */
    pyn_kind_t kind;
    pyn_jstate_t state;
    int cancelled;      /* nobody wants the reply any more */
    int interrupt_sent; /* the watchdog raised an async exception */
    int sync;           /* caller waits inline: callbacks go to it */
    int monitored;      /* caller monitored (mon valid) */
    int has_caller;     /* control jobs have no caller */
    int64_t interrupt_at;        /* ms (monotonic) the interrupt was raised */
    ErlNifMonitor mon;
    ErlNifPid caller;
    ErlNifEnv *env; /* owns ref and req; the reply is built in it */
    ERL_NIF_TERM ref, req;
    pyn_worker_t *worker; /* worker running it (pool lock) */
    pyn_worker_t *target; /* where it goes (kept), NULL: shared queue */
    int nested;           /* to target's nested queue (bypasses the semaphore) */
    uint64_t gen;         /* the binding generation it was sent under */
    int has_slot;         /* holds a slot of the overload semaphore */
    int64_t submitted_at; /* ms (monotonic) it was submitted */
    int64_t submitted_ns; /* the same in ns (latency counters) */
    int worker_id;        /* id of the worker that ran it, 0 before */
    int64_t started_at;   /* ms (monotonic) it started running */
    /* Inline hand-over (PYN_HO_*, atomic): a caller that found an idle
     * polling worker waits in its NIF for a few microseconds; a reply ready
     * by then is handed to it directly instead of being sent. */
    int handoff;
    ERL_NIF_TERM result; /* the reply, in env, once handoff is READY */
    int borrow; /* PYN_BR_*, atomic: req read on the caller's heap */
    int patient; /* the caller may wait for a parked worker to wake (dirty) */
    int solo;    /* nothing else was queued or running when it came */
};

enum {
    PYN_HO_NONE,   /* reply goes by message */
    PYN_HO_SPIN,   /* the caller polls in submit */
    PYN_HO_READY,  /* the worker left the reply in result (caller owns env) */
    PYN_HO_GAVEUP  /* the caller stopped polling: reply goes by message */
};

enum {
    PYN_BR_NONE,     /* req is a copy in the job's env */
    PYN_BR_BORROWED, /* req is the caller's term (caller inside submit) */
    PYN_BR_READING,  /* the worker reads it */
    PYN_BR_RELEASED, /* the worker is done with it */
    PYN_BR_REVOKED,  /* the caller is copying it into the env ... */
    PYN_BR_COPIED    /* ... and did: req is that copy */
};

/* Where the result of a coroutine goes: shared by the Erlang handle of
 * py:async_call and the Python object that delivers the result. */
typedef struct {
    pthread_mutex_t lock;
    int done;     /* sent, or the caller gave up: nothing more is sent */
    int sent;
    ErlNifPid caller;
    ErlNifEnv *env; /* holds ref */
    ERL_NIF_TERM ref;
} pyn_areply_t;

extern ErlNifResourceType *pyn_job_type;
extern ErlNifResourceType *pyn_areply_type;

/* Opens the job and async-reply resource types (from load/upgrade); the
 * job type's down callback is the pool's (a caller that dies cancels its
 * job).  0 on success. */
int pyn_job_types_init(ErlNifEnv *env, ErlNifResourceDown *job_down);

/* Makes a job (one reference, returned) owning a fresh env; NULL if out
 * of memory.  Any thread. */
pyn_job_t *pyn_job_new(pyn_kind_t kind);

/* Worker side of a borrowed request (PYN_BR_*): call before reading
 * job->req and job->env, and once done reading it (idempotent).  Lock-free;
 * worker thread. */
void pyn_args_begin(pyn_job_t *job);
void pyn_args_end(pyn_job_t *job);

/* How often the fast paths were taken since load (relaxed counters). */
typedef struct {
    unsigned long handed_over, borrowed, revoked;
} __attribute__((aligned(64))) pyn_path_counts_t;
extern pyn_path_counts_t pyn_counts;

/* Makes an async reply handle for the calling process (one reference). */
pyn_areply_t *pyn_areply_new(ErlNifEnv *env, ERL_NIF_TERM ref);
/* Sends {Ref, Reply} (reply built in msg_env, which the caller frees)
 * unless already sent or given up.  Any thread.  1 if sent. */
int pyn_areply_send(pyn_areply_t *r, ErlNifEnv *msg_env, ERL_NIF_TERM reply);
/* The caller gives up: ATOMS.ok (nothing will come) or ATOMS.sent. */
ERL_NIF_TERM pyn_areply_cancel(pyn_areply_t *r);

/* Monotonic milliseconds / nanoseconds. */
int64_t pyn_now_ms(void);
int64_t pyn_now_ns(void);

/* A pause in a polling loop (tells the CPU we spin). */
static inline void pyn_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Polls until *word (one of a job's atomic words) holds value. */
static inline void pyn_spin_until(const int *word, int value)
{
    while (__atomic_load_n(word, __ATOMIC_ACQUIRE) != value)
        pyn_cpu_relax();
}

#endif
