/* py_runtime.h — the embedded interpreter: start-up (once per OS process,
 * never finalized), libpython promotion to global symbols, and the thread
 * state / GIL helpers every other file uses.  No pool locks are taken here. */
#ifndef PYN_PY_RUNTIME_H
#define PYN_PY_RUNTIME_H

#include <stddef.h>

/* What the layers above give the interpreter at start-up (they are above
 * this unit: it reaches them only through this table).  Static storage. */
typedef struct {
    const char *module_name;           /* a builtin module ("erlang") ... */
    struct _object *(*module_init)(void); /* ... and its init function */
    int (*after_start)(void);          /* GIL held, once started; 0 ok */
    struct _object *(*interrupt_exc)(void); /* borrowed: what pyr_interrupt raises */
} pyr_boot_t;

/* Starts the interpreter on the calling thread (which becomes Python's main
 * thread) and releases the GIL.  Idempotent.  0 ok, else -1 with err set. */
int pyr_start(const pyr_boot_t *boot, char *err, size_t errlen);
/* Interpreter version string (no GIL needed). */
const char *pyr_version(void);

/* Creates a thread state for the calling OS thread; returns it with the GIL
 * NOT held.  pyr_thread_end (GIL not held on entry) destroys it. */
void *pyr_thread_begin(unsigned long *py_tid);
void pyr_thread_end(void *tstate);

/* Takes the GIL with the given thread state / releases it (returns state). */
void pyr_gil_acquire(void *tstate);
void *pyr_gil_release(void);

/* Main-thread state, for the watchdog. */
void *pyr_main_tstate(void);

/* GIL held.  Raises the interrupt exception asynchronously in thread tid /
 * clears a pending one. */
void pyr_interrupt(unsigned long tid);
void pyr_clear_interrupt(unsigned long tid);
/* GIL held: sets the interrupt exception as the current error; -1.  From
 * a pending call on the thread to interrupt, this raises it where that
 * thread's code is (CPython 3.13.0 skips the except and finally clauses
 * of the function an asynchronous exception lands in; this path, which
 * signal handlers take, does not). */
int pyr_raise_interrupt(void);
/* Python's id of the calling thread. */
unsigned long pyr_thread_id(void);

/* ---- own-GIL sub-interpreters (Python 3.12+; exec_subinterp.c) ---------- */

/* Whether this build can make them (compiled against 3.12+). */
int pyr_subinterp_supported(void);
/* On a thread with no thread state: makes an isolated interpreter with its
 * own GIL, whose first thread state is returned, current and holding that
 * GIL, and *py_tid set.  NULL with err filled on failure. */
void *pyr_subinterp_new(unsigned long *py_tid, char *err, size_t errlen);
/* Its thread state current (GIL held): destroys the interpreter (waits
 * for the threads its code started); no thread state is current after. */
void pyr_subinterp_end(void *tstate);
/* The interpreter of a thread state. */
void *pyr_interp_of(void *tstate);
/* Any thread, no GIL needed: has fn(arg) called in interpreter interp,
 * GIL held, at the next check of its eval loop (CPython's pending calls).
 * 0 queued, -1 not (queue full, or unsupported). */
int pyr_pending_call(void *interp, int (*fn)(void *), void *arg);

#endif
