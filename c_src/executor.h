/* executor.h — the executor interface: how a worker runs Python.
 *
 * The pool (pool.h) owns the workers' OS threads, the queues, the job
 * lifecycle, the fast path (polling, hand-over, borrowed requests),
 * cancellation and callback waits.  What differs between kinds of worker
 * (one shared GIL today; own-GIL sub-interpreters and isolated OS
 * processes next) is behind this table: how Python is booted, how a
 * worker thread attaches to it, takes and gives up the right to run
 * Python, runs a request, frees what it kept, and how it is interrupted
 * or abandoned.  One table per pool, chosen when the pool boots; each
 * worker keeps the context its attach returned.
 *
 * Threads and locks, for every operation below:
 * - "worker thread": the pool's thread for that worker (worker.c),
 *   which calls attach first and detach last;
 * - "entered": between enter and leave on that thread (for the thread
 *   executor: the GIL is held);
 * - the pool lock (pool_internal.h) is never held when an operation is
 *   called, except where noted; an operation may not take it except
 *   through the claim callback it is given.  Lock order: entered (GIL),
 *   then pool lock.
 * The pool reaches an executor only through this table, and an executor
 * never calls into the pool except through the callbacks it is passed:
 * executors sit below the pool. */
#ifndef PYN_EXECUTOR_H
#define PYN_EXECUTOR_H

#include <stddef.h>
#include <erl_nif.h>

#include "job.h"

/* erlang.call as the pool serves it (callback.c), for an executor whose
 * Python runs elsewhere and asks on its behalf: pym_host_t.call of
 * py_erlang_mod.h, the same arguments and PYM_CB_* outcomes, on the
 * worker thread running a job. */
typedef int (*pyn_callback_fn)(ErlNifEnv *m, ERL_NIF_TERM name, ERL_NIF_TERM args,
                               ErlNifEnv **env, ERL_NIF_TERM *reply);

typedef struct pyn_executor {
    const char *name; /* "thread" ... (stats, logs) */
    /* Whether a worker may read a request in place on its caller's heap
     * (the borrow protocol of job.h / reply.c): an in-process executor. */
    int borrows;

    /* Process-wide set-up (the interpreter), once, before any attach, on
     * the pool's watchdog thread, which the executor may make Python's
     * main thread.  0, or -1 with err filled. */
    int (*boot)(char *err, size_t errlen);

    /* Worker thread, at its start, not entered: creates the worker's
     * execution state (thread state, namespace).  NULL on failure (the
     * worker then ends; detach is still called with NULL). */
    void *(*attach)(int worker_id);
    /* Worker thread, at its end, not entered: destroys what attach made. */
    void (*detach)(void *ctx);

    /* Worker thread: takes (blocking until it has it) / gives up the right
     * to run Python.  enter is also where a worker waits for the GIL. */
    void (*enter)(void *ctx);
    void (*leave)(void *ctx);

    /* Worker thread, entered: runs job j (a request or a control job) and
     * returns its reply built in j->env.  May call back into the Erlang
     * side through the `erlang` module (whose waits leave and enter). */
    ERL_NIF_TERM (*run)(void *ctx, pyn_job_t *j);
    /* Whether run kept objects to free once its reply is sent: a plain
     * read, callable from the worker thread with the pool lock held. */
    int (*has_deferred)(void *ctx);
    /* Worker thread, entered: frees them (may run any Python code: a
     * finalizer may block or leave and enter). */
    void (*release_deferred)(void *ctx);

    /* Watchdog thread, neither entered nor holding the pool lock: raises
     * an interrupt in the Python code of the job worker w runs.  claim(w)
     * takes the pool lock and returns 1 while w's job is still overdue,
     * marking it interrupted the first time (its grace period starts
     * then); the executor raises the interrupt only where claim returned 1
     * with the job unable to end meanwhile (the thread executor: claims
     * with the GIL held; the sub-interpreter one: claims at once, and again
     * in the worker's interpreter before it raises).  claim may be called
     * later from a thread of w's executor while w's thread lives.  ctx is
     * valid for the whole call (the worker's thread waits for it before
     * detaching). */
    void (*interrupt)(void *ctx, pyn_worker_t *w, int (*claim)(pyn_worker_t *w));
    /* Worker thread, entered, after a job that was interrupted: drops an
     * interrupt raised too late to fire in it. */
    void (*clear_interrupt)(void *ctx);
    /* Watchdog thread, pool lock held: worker w was abandoned (its job
     * outlived the grace period; the pool has answered its callers and
     * starts a replacement).  Stops it by a means that takes no lock (an
     * OS process is killed); NULL: nothing to do (a thread is left to end
     * on its own, its replacement running meanwhile).  ctx is valid: the
     * worker's thread is still in its job. */
    void (*abandon)(void *ctx);
    /* Worker thread, after run: whether what runs its Python is gone (an
     * OS process died); the pool then retires the worker and starts
     * another.  NULL: never (a thread executor). */
    int (*lost)(void *ctx);
    /* Before boot: how its erlang.call reaches the pool.  NULL: not
     * needed (in-process Python calls the `erlang` module's host). */
    void (*set_callback)(pyn_callback_fn call);
} pyn_executor_t;

/* The executor of one shared interpreter and GIL (exec_thread.c). */
extern const pyn_executor_t pyn_exec_thread;
/* The executor of own-GIL sub-interpreters, one per worker, Python 3.12+
 * (exec_subinterp.c). */
extern const pyn_executor_t pyn_exec_subinterp;
/* The executor of isolated workers: Python in an OS process each, reached
 * over a socket pair (exec_isolated.c). */
extern const pyn_executor_t pyn_exec_isolated;
/* Before booting it: the Python executable, the worker program
 * (priv/python/_erlang_python_worker.py) and each process's address-space
 * cap in MiB (0: none). */
void pyn_isolated_configure(const char *python, const char *worker_script, unsigned memory_mb);

#endif
