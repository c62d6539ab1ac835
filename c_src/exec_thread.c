/* exec_thread.c — the thread executor: every worker is an OS thread of
 * this process with its own Python thread state, all sharing the one
 * interpreter and its GIL.  "Entered" means holding the GIL.  The
 * interpreter is booted on the pool's watchdog thread, which is thus
 * Python's main thread and interrupts with the main thread state.  Below
 * the pool (see executor.h), above the Python-side code and the runtime. */
#include <stdlib.h>

#include "executor.h"
#include "py_erlang_mod.h"
#include "py_exec.h"
#include "py_runtime.h"

typedef struct {
    void *tstate;         /* PyThreadState*: the worker's, or NULL while left */
    unsigned long py_tid; /* Python's thread id, for async exceptions */
    pyx_state_t *py;      /* namespace and caches (py_exec.c) */
} thread_ctx_t;

static void *main_tstate; /* the watchdog thread's, once booted */

static const pyr_boot_t boot_hooks = {
    .module_name = "erlang",
    .module_init = pym_init_module,
    .after_start = pym_setup,
    .interrupt_exc = pym_interrupt_exc,
};

static int t_boot(char *err, size_t errlen)
{
    int rc = pyr_start(&boot_hooks, err, errlen);
    if (rc == 0)
        main_tstate = pyr_main_tstate();
    return rc;
}

static void *t_attach(int worker_id)
{
    thread_ctx_t *c = calloc(1, sizeof *c);
    (void)worker_id;
    if (!c)
        return NULL;
    c->tstate = pyr_thread_begin(&c->py_tid);
    pyr_gil_acquire(c->tstate);
    c->py = pyx_worker_init();
    c->tstate = pyr_gil_release();
    if (!c->py) {
        pyr_thread_end(c->tstate);
        free(c);
        return NULL;
    }
    return c;
}

static void t_detach(void *ctx)
{
    thread_ctx_t *c = ctx;
    if (!c)
        return;
    pyr_gil_acquire(c->tstate);
    pyx_worker_fini(c->py);
    c->tstate = pyr_gil_release();
    pyr_thread_end(c->tstate);
    free(c);
}

static void t_enter(void *ctx)
{
    pyr_gil_acquire(((thread_ctx_t *)ctx)->tstate);
}

static void t_leave(void *ctx)
{
    ((thread_ctx_t *)ctx)->tstate = pyr_gil_release();
}

static ERL_NIF_TERM t_run(void *ctx, pyn_job_t *j)
{
    return pyx_run(((thread_ctx_t *)ctx)->py, j);
}

static int t_has_deferred(void *ctx)
{
    return pyx_has_later(((thread_ctx_t *)ctx)->py);
}

static void t_release_deferred(void *ctx)
{
    pyx_release_later(((thread_ctx_t *)ctx)->py);
}

static void t_interrupt(void *ctx, pyn_worker_t *w, int (*claim)(pyn_worker_t *w))
{
    pyr_gil_acquire(main_tstate);
    if (claim(w))
        pyr_interrupt(((thread_ctx_t *)ctx)->py_tid);
    main_tstate = pyr_gil_release();
}

static void t_clear_interrupt(void *ctx)
{
    pyr_clear_interrupt(((thread_ctx_t *)ctx)->py_tid);
}

const pyn_executor_t pyn_exec_thread = {
    .name = "thread",
    .borrows = 1,
    .boot = t_boot,
    .attach = t_attach,
    .detach = t_detach,
    .enter = t_enter,
    .leave = t_leave,
    .run = t_run,
    .has_deferred = t_has_deferred,
    .release_deferred = t_release_deferred,
    .interrupt = t_interrupt,
    .clear_interrupt = t_clear_interrupt,
    .abandon = NULL,
};
