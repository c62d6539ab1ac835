/* exec_subinterp.c — the sub-interpreter executor (Python 3.12+): every
 * worker thread runs its own isolated interpreter with its own GIL, so
 * workers run Python at the same time, on every core, and one stuck in a
 * C loop holds only its own GIL.  "Entered" means holding the worker's
 * interpreter's GIL.  The main interpreter is booted as by the thread
 * executor (on the watchdog thread) and then stays idle: it only owns the
 * process-wide state.
 *
 * Interrupts: the watchdog never waits for a worker's GIL (it would wait
 * as long as a stuck worker).  It schedules a pending call in the worker's
 * interpreter (pyr_pending_call), which CPython runs at the next check of
 * that interpreter's eval loop, GIL held; there the job is checked again
 * and the exception raised in the worker's code (as a signal handler's
 * would be).  A worker stuck in C
 * never runs it, and is abandoned after the grace period as usual: its
 * thread and interpreter live on until the C code returns, then end.
 * Same layer as exec_thread.c (whose boot it reuses). */
#include <stdio.h>
#include <stdlib.h>

#include "executor.h"
#include "py_erlang_mod.h"
#include "py_exec.h"
#include "py_interp.h"
#include "py_runtime.h"

typedef struct {
    void *tstate;         /* the worker's thread state in its interpreter */
    void *interp;         /* that interpreter */
    unsigned long py_tid; /* Python's id of the worker thread */
    pyx_state_t *py;      /* namespace and caches (py_exec.c) */
    /* For the pending interrupt: set by interrupt before it schedules it
     * (the pending-call queue's lock orders the writes before the read). */
    pyn_worker_t *w;
    int (*claim)(pyn_worker_t *w);
} sub_ctx_t;

/* Python 3.12+'s refusal of a module that cannot load in an isolated
 * interpreter (a single-phase extension, or a builtin such as
 * _tracemalloc) names neither our mode nor the remedy: both loaders are
 * wrapped to say them. */
static const char import_advice[] =
    "import importlib._bootstrap as _b, importlib._bootstrap_external as _be\n"
    "def _wrap(create_module):\n"
    "    def create(*args):\n"
    "        try:\n"
    "            return create_module(*args)\n"
    "        except ImportError as e:\n"
    "            if 'subinterpreter' not in str(e):\n"
    "                raise\n"
    "            spec = args[-1]\n"
    "            raise ImportError('%s: erlang_python runs this worker in execution_mode '\n"
    "                              'subinterp, where module %r cannot load; use '\n"
    "                              'execution_mode shared_gil for it' % (e, spec.name),\n"
    "                              name=spec.name, path=spec.origin) from None\n"
    "    return create\n"
    "_be.ExtensionFileLoader.create_module = _wrap(_be.ExtensionFileLoader.create_module)\n"
    "_b.BuiltinImporter.create_module = staticmethod(_wrap(_b.BuiltinImporter.create_module))\n";

static int s_boot(char *err, size_t errlen)
{
    if (!pyr_subinterp_supported()) {
        snprintf(err, errlen,
                 "execution_mode subinterp needs Python 3.12 or later (this build: %s); "
                 "use shared_gil",
                 pyr_version());
        return -1;
    }
    return pyn_exec_thread.boot(err, errlen);
}

static int setup_interp(void)
{
    PyObject *g, *r;
    if (pym_setup() < 0)
        return -1;
    if (!(g = PyDict_New()))
        return -1;
    r = PyRun_String(import_advice, Py_file_input, g, g);
    Py_DECREF(g);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static void *s_attach(int worker_id)
{
    sub_ctx_t *c = calloc(1, sizeof *c);
    char err[200];

    if (!c)
        return NULL;
    if (!(c->tstate = pyr_subinterp_new(&c->py_tid, err, sizeof err))) {
        fprintf(stderr, "erlang_python: worker %d: %s\r\n", worker_id, err);
        free(c);
        return NULL;
    }
    c->interp = pyr_interp_of(c->tstate);
    if (setup_interp() < 0 || !(c->py = pyx_worker_init())) {
        fprintf(stderr, "erlang_python: worker %d: cannot set up its interpreter\r\n", worker_id);
        if (PyErr_Occurred())
            PyErr_Print();
        pyi_forget();
        pyr_subinterp_end(c->tstate);
        free(c);
        return NULL;
    }
    c->tstate = pyr_gil_release();
    return c;
}

static void s_detach(void *ctx)
{
    sub_ctx_t *c = ctx;
    if (!c)
        return;
    pyr_gil_acquire(c->tstate);
    pyx_worker_fini(c->py);
    pyi_forget();
    pyr_subinterp_end(c->tstate);
    free(c);
}

static void s_enter(void *ctx)
{
    pyr_gil_acquire(((sub_ctx_t *)ctx)->tstate);
}

static void s_leave(void *ctx)
{
    ((sub_ctx_t *)ctx)->tstate = pyr_gil_release();
}

static ERL_NIF_TERM s_run(void *ctx, pyn_job_t *j)
{
    return pyx_run(((sub_ctx_t *)ctx)->py, j);
}

static int s_has_deferred(void *ctx)
{
    return pyx_has_later(((sub_ctx_t *)ctx)->py);
}

static void s_release_deferred(void *ctx)
{
    pyx_release_later(((sub_ctx_t *)ctx)->py);
}

/* The pending call, in the worker's interpreter, its GIL held (on the
 * worker's thread or another of its interpreter's): raises the interrupt
 * in the worker's thread if its job is still overdue. */
static int fire(void *arg)
{
    sub_ctx_t *c = arg;
    if (!c->claim(c->w))
        return 0;
    if (pyr_thread_id() == c->py_tid)
        return pyr_raise_interrupt(); /* raised right here, in the job */
    pyr_interrupt(c->py_tid);
    return 0;
}

static void s_interrupt(void *ctx, pyn_worker_t *w, int (*claim)(pyn_worker_t *w))
{
    sub_ctx_t *c = ctx;
    /* Marks the job interrupted now (its grace period starts), whether or
     * not its interpreter ever runs the pending call. */
    if (!claim(w))
        return;
    c->w = w;
    c->claim = claim;
    (void)pyr_pending_call(c->interp, fire, c);
}

static void s_clear_interrupt(void *ctx)
{
    pyr_clear_interrupt(((sub_ctx_t *)ctx)->py_tid);
}

const pyn_executor_t pyn_exec_subinterp = {
    .name = "subinterp",
    .borrows = 1,
    .boot = s_boot,
    .attach = s_attach,
    .detach = s_detach,
    .enter = s_enter,
    .leave = s_leave,
    .run = s_run,
    .has_deferred = s_has_deferred,
    .release_deferred = s_release_deferred,
    .interrupt = s_interrupt,
    .clear_interrupt = s_clear_interrupt,
    .abandon = NULL,
};
