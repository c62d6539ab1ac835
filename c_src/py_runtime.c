/* py_runtime.c — interpreter start-up and thread-state helpers.
 * pyr_start runs on the watchdog thread; the rest on whichever thread
 * names itself in the contract of each function (see py_runtime.h). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdio.h>
#include <string.h>

#include "py_runtime.h"

#ifndef PYN_LIBPYTHON
#define PYN_LIBPYTHON "libpython3.11.so.1.0"
#endif
#ifndef PYN_PROGRAM
#define PYN_PROGRAM "/usr/bin/python3"
#endif

static int started;
static PyThreadState *main_tstate;
static const pyr_boot_t *boot_hooks; /* set once, before the interpreter starts */

/* ---- arena cache ---------------------------------------------------------
 * CPython's object allocator maps 1 MiB arenas and unmaps each as soon as it
 * is empty.  Converting a large term fills and empties several arenas per
 * call, and the map/fault/unmap churn then costs more than the conversion.
 * This allocator keeps up to PYR_ARENA_CACHE free arenas mapped for reuse
 * (a bounded amount of memory not returned to the OS). */
#define PYR_ARENA_CACHE 32
#define PYR_MMAP_THRESHOLD (32 * 1024 * 1024)
#define PYR_TRIM_THRESHOLD (4 * 1024 * 1024)

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static void *arena_free_list[PYR_ARENA_CACHE];
static size_t arena_free_size[PYR_ARENA_CACHE];
static int arena_nfree;

static void *arena_alloc(void *ctx, size_t size)
{
    void *p = NULL;
    (void)ctx;
    pthread_mutex_lock(&arena_lock);
    for (int i = arena_nfree - 1; i >= 0; i--) {
        if (arena_free_size[i] == size) {
            p = arena_free_list[i];
            arena_free_list[i] = arena_free_list[--arena_nfree];
            arena_free_size[i] = arena_free_size[arena_nfree];
            break;
        }
    }
    pthread_mutex_unlock(&arena_lock);
    if (p)
        return p;
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    pthread_mutex_lock(&arena_lock);
    if (arena_nfree < PYR_ARENA_CACHE) {
        arena_free_list[arena_nfree] = ptr;
        arena_free_size[arena_nfree++] = size;
        ptr = NULL;
    }
    pthread_mutex_unlock(&arena_lock);
    if (ptr)
        munmap(ptr, size);
}

/* Keeps this shared object mapped for the life of the OS process: the
 * interpreter and our threads hold pointers into it, so a purge of the
 * Erlang module must never unmap it. */
static void *self_handle, *libpython_handle; /* never dlclose()d */

static void pin_self(void)
{
    Dl_info info;
    if (dladdr((void *)&pin_self, &info) && info.dli_fname)
        self_handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

int pyr_start(const pyr_boot_t *boot, char *err, size_t errlen)
{
    PyStatus status;
    PyConfig config;
    char *argv[] = {"", NULL};

    if (started)
        return 0;
    boot_hooks = boot;
    pin_self();
    /* Extension modules (_json, _ssl, _ctypes...) resolve libpython symbols
     * from the global namespace: promote the library we were linked with. */
    if (!(libpython_handle = dlopen(PYN_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL))) {
        snprintf(err, errlen, "dlopen %s: %s", PYN_LIBPYTHON, dlerror());
        return -1;
    }
    if (Py_IsInitialized()) {
        /* Someone else embedded Python in this OS process first. */
        snprintf(err, errlen, "Python is already initialized in this process");
        return -1;
    }
    /* erts turns glibc's adaptive mmap threshold off, so every block over
     * 128 KiB (the item array of a 100k-element list, say) was mapped and
     * unmapped per call.  Blocks under 32 MiB now come from the heap. */
    /* mallopt takes the main arena lock; schedulers reading the threshold
     * meanwhile see the old or the new value, both fine. */
    mallopt(M_MMAP_THRESHOLD, PYR_MMAP_THRESHOLD); /* NOLINT(concurrency-mt-unsafe) */
    /* And freeing such a block at the top of a heap no longer gives its
     * pages back at once, only to fault them in again on the next call:
     * up to PYR_TRIM_THRESHOLD of free memory stays with each heap. */
    mallopt(M_TRIM_THRESHOLD, PYR_TRIM_THRESHOLD); /* NOLINT(concurrency-mt-unsafe) */
    {
        PyObjectArenaAllocator arenas = {NULL, arena_alloc, arena_free};
        PyObject_SetArenaAllocator(&arenas);
    }
    if (PyImport_AppendInittab(boot->module_name, boot->module_init) < 0) {
        snprintf(err, errlen, "cannot register the %s module", boot->module_name);
        return -1;
    }
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    status = PyConfig_SetBytesString(&config, &config.program_name, PYN_PROGRAM);
    if (PyStatus_Exception(status))
        goto fail;
    status = PyConfig_SetBytesArgv(&config, 1, argv);
    if (PyStatus_Exception(status))
        goto fail;
    status = Py_InitializeFromConfig(&config);
    if (PyStatus_Exception(status))
        goto fail;
    PyConfig_Clear(&config);

    if (boot->after_start() < 0) {
        PyErr_Print();
        snprintf(err, errlen, "cannot set up the %s module", boot->module_name);
        main_tstate = PyEval_SaveThread();
        return -1;
    }
    main_tstate = PyEval_SaveThread();
    started = 1;
    return 0;

fail:
    snprintf(err, errlen, "Python initialization failed: %s",
             status.err_msg ? status.err_msg : "unknown");
    PyConfig_Clear(&config);
    return -1;
}

const char *pyr_version(void)
{
    return Py_GetVersion();
}

void *pyr_thread_begin(unsigned long *py_tid)
{
    PyThreadState *ts;
    PyGILState_STATE g;

    /* PyGILState_Ensure binds a fresh thread state to this OS thread, so
     * PyGILState_* calls made later by extension code on this thread find
     * it (numpy, ctypes callbacks). */
    g = PyGILState_Ensure();
    (void)g;
    ts = PyThreadState_Get();
    *py_tid = PyThread_get_thread_ident();
    PyEval_SaveThread();
    return ts;
}

void pyr_thread_end(void *tstate)
{
    PyEval_RestoreThread((PyThreadState *)tstate);
    PyThreadState_Clear((PyThreadState *)tstate);
    PyThreadState_DeleteCurrent();
}

void pyr_gil_acquire(void *tstate)
{
    PyEval_RestoreThread((PyThreadState *)tstate);
}

void *pyr_gil_release(void)
{
    return PyEval_SaveThread();
}

void *pyr_main_tstate(void)
{
    return main_tstate;
}

void pyr_interrupt(unsigned long tid)
{
    PyObject *exc = boot_hooks->interrupt_exc();
    if (exc)
        PyThreadState_SetAsyncExc(tid, exc);
}

int pyr_raise_interrupt(void)
{
    PyObject *exc = boot_hooks->interrupt_exc();
    if (exc)
        PyErr_SetNone(exc);
    return -1;
}

unsigned long pyr_thread_id(void)
{
    return PyThread_get_thread_ident();
}

void pyr_clear_interrupt(unsigned long tid)
{
    PyThreadState_SetAsyncExc(tid, NULL);
}

/* ---- own-GIL sub-interpreters --------------------------------------------- */

#if PY_VERSION_HEX >= 0x030C0000
/* Not public API, but exported (PyAPI_FUNC, for _testinternalcapi) with
 * this signature in 3.12 (last argument: main thread only) and 3.13 (flags;
 * 0 is the same): the only way to run code in another interpreter without
 * waiting for its GIL, which a worker stuck in a C loop never gives up.
 * The internal header needs Py_BUILD_CORE, so it is declared here. */
PyAPI_FUNC(int) _PyEval_AddPendingCall(PyInterpreterState *interp, int (*func)(void *),
                                       void *arg, int flags);

int pyr_subinterp_supported(void)
{
    return 1;
}

void *pyr_subinterp_new(unsigned long *py_tid, char *err, size_t errlen)
{
    /* Isolated: own GIL and allocator, no fork/exec from Python code, no
     * daemon threads (the interpreter waits for its threads when it ends),
     * and single-phase extension modules refused with an ImportError. */
    PyInterpreterConfig config = {
        .use_main_obmalloc = 0,
        .allow_fork = 0,
        .allow_exec = 0,
        .allow_threads = 1,
        .allow_daemon_threads = 0,
        .check_multi_interp_extensions = 1,
        .gil = PyInterpreterConfig_OWN_GIL,
    };
    PyThreadState *ts = NULL;
    PyStatus status = Py_NewInterpreterFromConfig(&ts, &config);

    if (PyStatus_Exception(status) || !ts) {
        snprintf(err, errlen, "cannot create a sub-interpreter: %s",
                 status.err_msg ? status.err_msg : "unknown error");
        return NULL;
    }
    *py_tid = PyThread_get_thread_ident();
    return ts;
}

void pyr_subinterp_end(void *tstate)
{
    Py_EndInterpreter((PyThreadState *)tstate);
}

void *pyr_interp_of(void *tstate)
{
    return PyThreadState_GetInterpreter((PyThreadState *)tstate);
}

int pyr_pending_call(void *interp, int (*fn)(void *), void *arg)
{
    return _PyEval_AddPendingCall((PyInterpreterState *)interp, fn, arg, 0) == 0 ? 0 : -1;
}
#else
int pyr_subinterp_supported(void)
{
    return 0;
}

void *pyr_subinterp_new(unsigned long *py_tid, char *err, size_t errlen)
{
    (void)py_tid;
    snprintf(err, errlen, "sub-interpreters with their own GIL need Python 3.12 or later");
    return NULL;
}

void pyr_subinterp_end(void *tstate)
{
    (void)tstate;
}

void *pyr_interp_of(void *tstate)
{
    return PyThreadState_GetInterpreter((PyThreadState *)tstate);
}

int pyr_pending_call(void *interp, int (*fn)(void *), void *arg)
{
    (void)interp;
    (void)fn;
    (void)arg;
    return -1;
}
#endif
