/* py_runtime.c — interpreter start-up and thread-state helpers.
 * pyr_start runs on the watchdog thread; the rest on whichever thread
 * names itself in the contract of each function (see py_runtime.h). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "py_runtime.h"
#include "py_erlang_mod.h"

#ifndef PYN_LIBPYTHON
#define PYN_LIBPYTHON "libpython3.11.so.1.0"
#endif
#ifndef PYN_PROGRAM
#define PYN_PROGRAM "/usr/bin/python3"
#endif

static int started;
static PyThreadState *main_tstate;

/* Keeps this shared object mapped for the life of the OS process: the
 * interpreter and our threads hold pointers into it, so a purge of the
 * Erlang module must never unmap it. */
static void pin_self(void)
{
    Dl_info info;
    if (dladdr((void *)&pin_self, &info) && info.dli_fname)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

int pyr_start(char *err, size_t errlen)
{
    PyStatus status;
    PyConfig config;
    char *argv[] = {"", NULL};

    if (started)
        return 0;
    pin_self();
    /* Extension modules (_json, _ssl, _ctypes...) resolve libpython symbols
     * from the global namespace: promote the library we were linked with. */
    if (!dlopen(PYN_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL)) {
        snprintf(err, errlen, "dlopen %s: %s", PYN_LIBPYTHON, dlerror());
        return -1;
    }
    if (Py_IsInitialized()) {
        /* Someone else embedded Python in this OS process first. */
        snprintf(err, errlen, "Python is already initialized in this process");
        return -1;
    }
    if (PyImport_AppendInittab("erlang", pym_init_module) < 0) {
        snprintf(err, errlen, "cannot register the erlang module");
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

    if (pym_setup() < 0) {
        PyErr_Print();
        snprintf(err, errlen, "cannot set up the erlang module");
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
    PyThreadState_SetAsyncExc(tid, pym_interrupt_exc());
}

void pyr_clear_interrupt(unsigned long tid)
{
    PyThreadState_SetAsyncExc(tid, NULL);
}
