/* worker.h — the pool: worker OS threads, job queues, job lifecycle,
 * cancellation, Python->Erlang callback waits, and the watchdog thread.
 *
 * Locking: one pool mutex (pyn_pool.lock) guards every queue, every job's
 * state and every worker's scheduling fields.  It is a leaf lock: nothing
 * (in particular not the GIL) is ever acquired while it is held.  Code that
 * holds the GIL may take the pool mutex; never the reverse order. */
#ifndef PYN_WORKER_H
#define PYN_WORKER_H

#include <pthread.h>
#include <stdint.h>
#include <erl_nif.h>

#define PYN_MAX_WORKERS 256
#define PYN_MAX_NEST 256

typedef struct pyn_job pyn_job_t;
typedef struct pyn_worker pyn_worker_t;

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
    PYN_JOB_WIPE,         /* control: clear the worker's namespace, no reply */
    PYN_JOB_CLEAR_CACHES, /* control: forget cached modules and callables */
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

typedef struct {
    uint64_t id;
    int ready;
    ErlNifEnv *env; /* reply, owned by the slot once ready */
    ERL_NIF_TERM result;
} pyn_cbslot_t;

typedef enum { PYN_W_ALIVE, PYN_W_RETIRED } pyn_wstate_t;

/* A worker.  Allocated as a resource object; the pool table and the thread
 * each keep a reference.  tstate/globals/caches belong to the thread alone. */
struct pyn_worker {
    int id;
    pyn_wstate_t state;
    int bound;    /* serves only its own queues */
    uint64_t gen; /* bumps at every bind/unbind: stale handles are refused */
    int idle;     /* parked on cond, waiting for work */
    int64_t poll_ns; /* how long to poll before parking next time */
    pyn_queue_t own;    /* bound/context jobs and control jobs */
    pyn_queue_t nested; /* jobs made by the Erlang side of its callbacks */
    pthread_cond_t cond;
    pthread_t thread;
    unsigned long py_tid; /* Python's thread id, for async exceptions */
    void *tstate;         /* PyThreadState*, worker thread only */
    void *py;             /* per-worker Python state (py_exec.c) */
    pyn_job_t *current;   /* innermost job being run */
    int waiting;          /* in a callback wait: not running Python */
    int depth;            /* callback nesting depth */
    uint64_t cb_seq;
    pyn_cbslot_t slots[PYN_MAX_NEST];
};

/* A Python thread (not a worker) waiting for a callback reply. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ready, failed;
    ErlNifMonitor mon;
    ErlNifEnv *env;
    ERL_NIF_TERM result;
} pyn_waiter_t;

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

extern ErlNifResourceType *pyn_areply_type;
extern ErlNifResourceType *pyn_job_type;
extern ErlNifResourceType *pyn_worker_type;
extern ErlNifResourceType *pyn_waiter_type;

/* Current worker of this OS thread, NULL on other threads. */
extern __thread pyn_worker_t *pyn_self;

/* Opens the resource types; from load/upgrade. 0 on success. */
int pyn_resources_init(ErlNifEnv *env);
/* Creates the pool lock and starts the watchdog thread, which starts the
 * interpreter.  Idempotent.  0 on success, else fills err. */
int pyn_pool_boot(char *err, size_t errlen);

/* Registers the pool and callback-runner processes; retires all workers
 * left by an earlier pool instance.  Scheduler thread. */
void pyn_pool_attach(ErlNifEnv *env, const ErlNifPid *pool, const ErlNifPid *runner,
                     int grace_ms);
/* Retires every worker, answers all queued jobs with {error, not_running}. */
void pyn_pool_shutdown(ErlNifEnv *env);

/* Starts one worker thread; returns it (one reference for the caller) or
 * NULL. Scheduler thread; waits for the thread's start-up (short). */
pyn_worker_t *pyn_worker_start(int id, char *err, size_t errlen);
/* Takes a worker out of service: its queued jobs and the jobs it is running
 * are answered with {error, Reason}; its thread exits when it can. */
void pyn_worker_retire(ErlNifEnv *env, pyn_worker_t *w, ERL_NIF_TERM reason);
/* Binds/unbinds; returns the new generation, or 0 if the worker is not
 * alive (or already in the requested state for bind). */
uint64_t pyn_worker_bind(pyn_worker_t *w, int bind);
/* Queues a control job on a worker's own queue.  0 ok, -1 dead. */
int pyn_worker_control(pyn_worker_t *w, pyn_kind_t kind);

/* Makes a job (one reference, returned) owning a fresh env. */
pyn_job_t *pyn_job_new(pyn_kind_t kind);
/* Queues a job.  target NULL: shared queue; nested: the target's nested
 * queue; else the target's own queue, if its generation is gen.  Returns 0,
 * or -1 with an error atom in *err (the job is then not queued), or 1 for
 * a job with a borrowed request (PYN_BR_BORROWED) that is not handed over:
 * the caller must copy the request and submit again.  A job with
 * handoff PYN_HO_SPIN asks for the hand-over; it keeps the mark if
 * granted. */
int pyn_submit(ErlNifEnv *env, pyn_job_t *job, pyn_worker_t *target, int nested,
               uint64_t gen, ERL_NIF_TERM *err);
/* Caller gave up (timeout).  Returns ATOMS.ok if no reply will ever be sent,
 * ATOMS.sent if the reply was already sent, {overloaded, Current, Max} if
 * the job was still waiting for a semaphore slot. */
ERL_NIF_TERM pyn_cancel(ErlNifEnv *env, pyn_job_t *job);
/* After a successful pyn_submit of a job marked PYN_HO_SPIN: polls briefly
 * for its reply, and ends a borrow of req (the caller's request term) before
 * returning.  Returns 1 with the reply copied into env (the job's env is
 * then freed), or 0 if the reply will come as a message.  *waited_ns: the
 * time spent. */
int pyn_await_inline(ErlNifEnv *env, pyn_job_t *job, ERL_NIF_TERM req, ERL_NIF_TERM *reply,
                     int64_t *waited_ns);
/* Requests answered by hand-over, requests read in place, and borrows
 * revoked (copied after all), since load. */
void pyn_path_counts(unsigned long *handed_over, unsigned long *borrowed, unsigned long *revoked);
/* Whether a request for target (NULL: shared) would now probably be handed
 * over (a hint, read without the lock).  patient: a parked worker will do
 * (a caller on a dirty scheduler may wait for it to wake). */
int pyn_handoff_likely(pyn_worker_t *target, int patient);
/* Worker side of a borrowed request: call before reading job->req, and
 * once done reading it (idempotent).  GIL held. */
void pyn_args_begin(pyn_job_t *job);
void pyn_args_end(pyn_job_t *job);

/* The overload semaphore: every request that is not nested holds a slot
 * from submit until it ends; requests that find none wait, in order.  A
 * PYN_JOB_SLOT job is a slot held by a process (py_semaphore:acquire). */
void pyn_sem_info(int *current, int *max);
void pyn_sem_set_max(ErlNifEnv *env, int max);
/* Queues a slot request; {Ref, ok} is sent when granted.  0 or -1. */
int pyn_slot_request(ErlNifEnv *env, pyn_job_t *job, ERL_NIF_TERM *err);
/* Gives back a slot held by a PYN_JOB_SLOT job.  1 if it held one. */
int pyn_slot_release(ErlNifEnv *env, pyn_job_t *job);
/* Makes an async reply handle for the calling process (one reference). */
pyn_areply_t *pyn_areply_new(ErlNifEnv *env, ERL_NIF_TERM ref);
/* Sends {Ref, Reply} (reply built in msg_env, which the caller frees)
 * unless already sent or given up.  Any thread.  1 if sent. */
int pyn_areply_send(pyn_areply_t *r, ErlNifEnv *msg_env, ERL_NIF_TERM reply);
/* The caller gives up: ATOMS.ok (nothing will come) or ATOMS.sent. */
ERL_NIF_TERM pyn_areply_cancel(pyn_areply_t *r);
/* Queues a control job on every worker in service. */
void pyn_broadcast(pyn_kind_t kind);

/* Counters for py_pool:get_stats/0. */
void pyn_stats(int *workers, int *bound, int *available, int *pending);

/* Callbacks.  Called from a worker thread with the GIL held, after the
 * request was sent: releases the GIL, waits for the reply to slot id
 * (running nested jobs meanwhile), re-acquires the GIL.  Returns 0 with the
 * reply (env owned by the caller) or -1 if the job was cancelled or the
 * worker retired. */
int pyn_callback_wait(pyn_worker_t *w, uint64_t id, ErlNifEnv **env, ERL_NIF_TERM *result);
/* Ties the running job to its caller's life (monitor), if not yet: a
 * callback waits for the caller, so its death must end the wait. */
void pyn_callback_monitor(pyn_worker_t *w);
/* Opens a callback slot; returns its id, 0 when nested too deep. */
uint64_t pyn_callback_open(pyn_worker_t *w);
/* Delivers a reply (copied) to a worker slot; 0 ok, -1 no such waiter. */
int pyn_callback_deliver(pyn_worker_t *w, uint64_t id, ERL_NIF_TERM result);
/* The pid that callbacks of the current job go to: the caller for a
 * synchronous call, else the callback runner.  Worker thread. */
int pyn_callback_target(pyn_worker_t *w, ErlNifPid *pid, ErlNifEnv *msg_env,
                        ERL_NIF_TERM *ref);
/* Sends a callback request unless the current job was cancelled (then -1;
 * the slot is closed by pyn_callback_wait, which returns -1 at once). */
int pyn_callback_send(pyn_worker_t *w, const ErlNifPid *pid, ErlNifEnv *m, ERL_NIF_TERM msg);
/* The callback runner pid (for non-worker threads). */
int pyn_runner_pid(ErlNifPid *pid);

/* Monotonic milliseconds. */
int64_t pyn_now_ms(void);

#endif
