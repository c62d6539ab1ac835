/* pool.h — the pool, as the NIF layer sees it: workers (each run by an
 * executor, executor.h), the shared, per-worker and nested queues, the
 * overload semaphore, submission with the inline hand-over, cancellation,
 * context binding, callback replies and the watchdog.
 *
 * Files: queue.c (where a call is queued and admitted), reply.c (where it
 * is answered: by message, or handed over to a caller still in its NIF),
 * worker.c (the worker threads that run jobs), callback.c (Python calling
 * back into Erlang), watchdog.c (interrupting and replacing), pool.c
 * (resource types, attach, shutdown).  Their shared state and lock rules:
 * pool_internal.h.
 *
 * Every function here is called from a scheduler thread (a NIF) unless
 * noted, without the pool lock and without the GIL. */
#ifndef PYN_POOL_H
#define PYN_POOL_H

#include <pthread.h>
#include <stdint.h>
#include <erl_nif.h>

#include "job.h"

#define PYN_MAX_WORKERS 256
#define PYN_MAX_NEST 256

extern ErlNifResourceType *pyn_worker_type;

/* Opens the resource types (job, async reply, worker, the `erlang`
 * module's waiter); from load/upgrade.  0 on success. */
int pyn_resources_init(ErlNifEnv *env);
/* How workers run Python: one shared interpreter and GIL (exec_thread.c),
 * or one own-GIL sub-interpreter each (exec_subinterp.c, Python 3.12+), or
 * one OS process each (exec_isolated.c). */
typedef enum { PYN_MODE_SHARED_GIL, PYN_MODE_SUBINTERP, PYN_MODE_ISOLATED } pyn_mode_t;

/* Chooses the executor for mode, installs the `erlang` module's callback
 * table and starts the watchdog thread, which boots the executor (the
 * interpreter); waits for that.  Once per OS process: a later call with
 * the same mode returns the first outcome, with another mode fails (the
 * interpreter is never finalized).  0 on success, else fills err. */
int pyn_pool_boot(pyn_mode_t mode, char *err, size_t errlen);
/* The booted mode; -1 before a successful boot. */
int pyn_pool_mode(void);

/* Whether the pool's executor can read a request in place on its
 * caller's heap (PYN_BR_BORROWED); after pyn_pool_boot. */
int pyn_pool_borrows(void);

/* Registers the pool and callback-runner processes; retires all workers
 * left by an earlier pool instance.  max_abandoned: how many abandoned
 * workers' threads may still run (stuck in C) before no new worker starts. */
void pyn_pool_attach(ErlNifEnv *env, const ErlNifPid *pool, const ErlNifPid *runner,
                     int grace_ms, int max_abandoned);
/* Retires every worker, answers all queued jobs with {error, not_running}. */
void pyn_pool_shutdown(ErlNifEnv *env);

/* Starts one worker thread; returns it (one reference for the caller) or
 * NULL.  Waits for nothing: jobs may queue while the thread starts. */
pyn_worker_t *pyn_worker_start(int id, char *err, size_t errlen);
/* Takes a worker out of service: its queued jobs and the jobs it is running
 * are answered with {error, Reason}; its thread exits when it can. */
void pyn_worker_retire(ErlNifEnv *env, pyn_worker_t *w, ERL_NIF_TERM reason);
/* Binds (PYN_BIND; PYN_BIND_IDLE: only if it runs and holds no request
 * but a wipe) or unbinds (PYN_UNBIND); returns the new generation, or 0 if the
 * worker is not alive, refuses (see worker.c) or is already in that state. */
enum { PYN_UNBIND, PYN_BIND, PYN_BIND_IDLE };
uint64_t pyn_worker_bind(pyn_worker_t *w, int how);
/* Queues a control job on a worker's own queue.  0 ok, -1 dead. */
int pyn_worker_control(pyn_worker_t *w, pyn_kind_t kind);
/* Queues a control job on every worker in service. */
void pyn_broadcast(pyn_kind_t kind);
/* Queues a PYN_JOB_SETUP job running Python source src (a binary) on
 * every worker in service; with keep, src also replaces the setup every
 * worker started later runs first (sub-interpreters each have their own
 * sys.path, sys.modules...).  0 ok, -1 out of memory. */
int pyn_setup(ErlNifEnv *env, ERL_NIF_TERM src, int keep);

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

/* The overload semaphore: every request that is not nested holds a slot
 * from submit until it ends; requests that find none wait, in order.  A
 * PYN_JOB_SLOT job is a slot held by a process (py_semaphore:acquire). */
void pyn_sem_info(int *current, int *max);
void pyn_sem_set_max(ErlNifEnv *env, int max);
/* Queues a slot request; {Ref, ok} is sent when granted.  0 or -1. */
int pyn_slot_request(ErlNifEnv *env, pyn_job_t *job, ERL_NIF_TERM *err);
/* Gives back a slot held by a PYN_JOB_SLOT job.  1 if it held one. */
int pyn_slot_release(ErlNifEnv *env, pyn_job_t *job);

/* Counters for py_pool:get_stats/0. */
void pyn_stats(int *workers, int *bound, int *available, int *pending);
/* For placement across nodes (py_dist): workers in service, of which
 * unbound and running nothing, and requests queued. */
void pyn_load(int *workers, int *idle, int *pending);
/* [#{id, calls, answered, errors, timeouts, p50_us, p99_us}] of the
 * workers in service (metrics.c); *queued_timeouts: requests given up
 * before any worker took them; *retired: the same map (crashed in place of
 * id: requests answered because their worker was lost) of the workers
 * taken out of service. */
ERL_NIF_TERM pyn_worker_metrics(ErlNifEnv *env, uint64_t *queued_timeouts, ERL_NIF_TERM *retired);
/* Sends Python's log records (erlang._log) to pid, or drops the sink
 * (NULL) (callback.c). */
void pyn_set_log_sink(const ErlNifPid *pid);

/* Delivers a callback reply (copied) to a worker's slot: 0 ok, -1 no such
 * waiter (it gave up). */
int pyn_callback_deliver(pyn_worker_t *w, uint64_t id, ERL_NIF_TERM result);

#endif
