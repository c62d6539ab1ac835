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

#endif
