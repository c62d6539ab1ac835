/* exec_isolated.c — the isolated executor (execution_mode isolated): each
 * worker's Python is an OS process of its own, so that a segfault, an
 * abort, os._exit or a C loop that never ends costs that one worker, not
 * the node.  The pool's worker thread stays in this process and hands each
 * job to its process over a socket pair: a frame (4-byte big-endian length,
 * then one term in the external term format) each way.  The process is
 * priv/python/_erlang_python_worker.py, run by the Python this NIF was
 * built against; its docstring gives the protocol.
 *
 * Nothing here touches Python: this node never starts an interpreter in
 * this mode.  "Entered" means nothing either (no GIL to take).  A worker
 * whose process died answers its job {error, {worker_exited, Reason}} and
 * reports itself lost (isolated_lost): the pool retires it and starts
 * another.  Interrupts are SIGUSR1 (erlang.Interrupted in the running
 * code); abandoning is SIGKILL.  Below the pool (see executor.h). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "atoms.h"
#include "executor.h"
#include "py_erlang_mod.h" /* the PYM_CB_* outcomes of erlang.call only */
#include "py_error.h"

extern char **environ;

/* Frames past this size are refused (a broken or hostile process). */
#define ISO_MAX_FRAME (1u << 31)

/* A page shared with the process (a memfd, its fd 6): the number of the
 * request an interrupt is meant for, read by the worker's SIGUSR1 handler,
 * so that a signal sent as one request ends never fires in the next. */
typedef struct {
    uint32_t interrupt_seq;
} iso_shared_t;

typedef struct {
    pid_t pid;       /* the Python process */
    int fd;          /* this end of the socket pair; -1 once closed */
    iso_shared_t *shared; /* mapped while the context lives */
    pthread_mutex_t sig_lock; /* seq: numbering requests vs interrupts */
    uint32_t seq;    /* requests sent: the number of the one running */
    int status_fd;   /* the shell's reports: the pid, then the exit status */
    int lost;        /* the process is gone (or was killed): no more jobs */
    int eof;         /* atomic: its socket closed (it ended; only it held fd 3) */
    int reaped;      /* its end reported (reap) */
    ERL_NIF_TERM why; /* in why_env: the exit reason, once lost */
    ErlNifEnv *why_env;
    size_t rpos, rlen; /* what rbuf holds of the frames read ahead */
    unsigned char rbuf[64 * 1024];
} iso_ctx_t;

static char program[4096];    /* the Python executable */
static char script[4096];     /* _erlang_python_worker.py */
static char codec[4096];      /* _erlang_python_codec.so, beside this NIF */
static unsigned max_memory_mb; /* 0: no cap */
static pyn_callback_fn callback; /* erlang.call, as the pool serves it */

void pyn_isolated_configure(const char *python, const char *worker_script, unsigned memory_mb)
{
    snprintf(program, sizeof program, "%s", python);
    snprintf(script, sizeof script, "%s", worker_script);
    max_memory_mb = memory_mb;
}

static int i_boot(char *err, size_t errlen)
{
    Dl_info self;
    if (dladdr((void *)&pyn_exec_isolated, &self) && self.dli_fname) {
        const char *slash = strrchr(self.dli_fname, '/');
        int dir = slash ? (int)(slash - self.dli_fname + 1) : 0;
        snprintf(codec, sizeof codec, "%.*s_erlang_python_codec.so", dir, self.dli_fname);
    }
    if (!script[0] || access(script, R_OK) != 0) {
        snprintf(err, errlen, "execution_mode isolated: the worker program %s cannot be read",
                 script[0] ? script : "(not configured)");
        return -1;
    }
    if (access(program, X_OK) != 0) {
        snprintf(err, errlen, "execution_mode isolated: %s is not an executable Python", program);
        return -1;
    }
    return 0;
}

/* The node ignores SIGCHLD, so the kernel reaps its children at once and
 * their exit status is lost.  A worker is therefore started by a shell,
 * which waits for it and reports on fd 4: Python's pid, then how it ended
 * (`wait`'s status: 128 + N for signal N), keeping its own messages
 * ("Segmentation fault") to itself.  The shell is reaped by the
 * kernel, the worker by the shell: no zombie is left. */
static const char shell_line[] =
    "exec 5>&2 2>/dev/null; \"$0\" \"$1\" \"$2\" 3 $$ \"$3\" 6 \"$4\" 2>&5 4>&- 5>&- & "
    "exec 3>&-; echo $! >&4; wait $!; echo $? >&4";

/* What the new process needs before it becomes the shell (read by it
 * while it shares this process's memory, until execve). */
typedef struct {
    int fd, status_fd, shared_fd; /* to become fds 3, 4 and 6 */
    char **argv, **envp;
} spawn_arg_t;

#define ISO_SPAWN_STACK ((size_t)64 * 1024)

/* The new process, on its own small stack, sharing our memory until
 * execve (CLONE_VM | CLONE_VFORK, as posix_spawn does): only system calls.
 * It is killed when the thread that started it (the worker's) ends; the
 * worker, when the shell ends.  Signal handlers are reset (the node's are
 * not the worker's; SIGCHLD and SIGPIPE, ignored by the node, are default
 * again); every signal is unblocked. */
static int spawn_child(void *p)
{
    spawn_arg_t *a = p;
    struct sigaction dfl;
    sigset_t none;

    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    /* Ignored until the worker installs its handler (an early interrupt
     * must not kill it); ignored signals stay so across execve. */
    dfl.sa_handler = SIG_IGN;
    sigaction(SIGUSR1, &dfl, NULL);
    /* The fds are 7 or above (i_attach): the dup2s cannot clobber them. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || dup2(a->fd, 3) < 0 || dup2(a->status_fd, 4) < 0 ||
        dup2(a->shared_fd, 6) < 0)
        _exit(127);
    close(5); /* the shell's own */
#ifdef SYS_close_range
    /* None of the node's other fds (sockets, files) may live on in the
     * worker: a socket the node closes would stay open there. */
    syscall(SYS_close_range, 7U, ~0U, 0U);
#endif
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* NOLINT(concurrency-mt-unsafe): one thread here */
    execve(a->argv[0], a->argv, a->envp);
    _exit(127);
}

/* The node's environment for a worker, but a sanitizer runtime preloaded
 * into the node (make asan) is not the worker's: Python is not built with
 * it, and under max_memory_mb it could not even map its shadow memory.  A
 * new array of the same strings (free the array only). */
static char **worker_environ(void)
{
    size_t n = 0, k = 0;
    char **env;
    while (environ[n])
        n++;
    if (!(env = calloc(n + 1, sizeof *env)))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *e = environ[i];
        if (strncmp(e, "LD_PRELOAD=", 11) == 0 && (strstr(e, "libasan") || strstr(e, "libubsan")))
            continue;
        env[k++] = environ[i];
    }
    return env;
}

/* A decimal number on its own line from fd; -1 at the end. */
static long read_number(int fd)
{
    char buf[32];
    size_t n = 0;
    for (;;) {
        ssize_t k = read(fd, buf + n, 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        if (buf[n] == '\n' || ++n == sizeof buf - 1)
            break;
    }
    buf[n] = 0;
    return n ? strtol(buf, NULL, 10) : -1;
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Starts the worker's process (through its shell). */
static void *i_attach(int worker_id)
{
    iso_ctx_t *c = calloc(1, sizeof *c);
    int fds[5] = {-1, -1, -1, -1, -1}; /* socket pair, status pipe, shared page */
    char mb[32];
    char *argv[] = {"/bin/sh", "-c", (char *)shell_line, program, "-u", script, mb, codec, NULL};
    static const int child_ends[] = {1, 3, 4};
    void *page;
    spawn_arg_t a = {.argv = argv};
    sigset_t all, old;
    char *stack = NULL;
    pid_t shell;
    long pid;
    (void)worker_id;

    if (!c)
        return NULL;
    c->fd = c->status_fd = -1;
    pthread_mutex_init(&c->sig_lock, NULL);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0 ||
        pipe2(fds + 2, O_CLOEXEC) != 0 ||
        (fds[4] = memfd_create("erlang_python_worker", MFD_CLOEXEC)) < 0 ||
        ftruncate(fds[4], (off_t)sizeof(iso_shared_t)) != 0 ||
        (page = mmap(NULL, sizeof(iso_shared_t), PROT_READ | PROT_WRITE, MAP_SHARED, fds[4], 0)) ==
            MAP_FAILED ||
        !(stack = malloc(ISO_SPAWN_STACK)) || !(a.envp = worker_environ()))
        goto fail;
    c->shared = page;
    snprintf(mb, sizeof mb, "%u", max_memory_mb);
    /* The child's ends numbered 7 or above, so that its dup2 to 3, 4 and
     * 6 never meets one of them. */
    for (size_t k = 0; k < sizeof child_ends / sizeof child_ends[0]; k++) {
        int i = child_ends[k];
        if (fds[i] < 7) {
            int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 7);
            if (moved < 0)
                goto fail;
            close(fds[i]);
            fds[i] = moved;
        }
    }
    a.fd = fds[1];
    a.status_fd = fds[3];
    a.shared_fd = fds[4];
    /* No handler of ours may run in the child before it has reset them. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    shell = clone(spawn_child, stack + ISO_SPAWN_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(stack);
    stack = NULL;
    free(a.envp);
    a.envp = NULL;
    close(fds[1]);
    close(fds[3]);
    close(fds[4]);
    fds[1] = fds[3] = fds[4] = -1;
    if (shell < 0 || (pid = read_number(fds[2])) <= 0)
        goto fail;
    c->pid = (pid_t)pid;
    c->fd = fds[0];
    c->status_fd = fds[2];
    return c;
fail:
    free(stack);
    free(a.envp);
    close_fds(fds, 5);
    if (c->shared)
        munmap(c->shared, sizeof(iso_shared_t));
    pthread_mutex_destroy(&c->sig_lock);
    free(c);
    return NULL;
}

/* The process's end, once: {signal, N} or {exit_status, N}, as its shell
 * reports it (waiting for that). */
static void reap(iso_ctx_t *c)
{
    long st;

    if (c->reaped)
        return;
    st = read_number(c->status_fd);
    close(c->status_fd);
    c->status_fd = -1;
    __atomic_store_n(&c->reaped, 1, __ATOMIC_RELEASE);
    if (!c->why_env)
        c->why_env = enif_alloc_env();
    if (st < 0) /* the shell was killed too */
        c->why = enif_make_tuple2(c->why_env, ATOMS.exit_status, ATOMS.undefined);
    else if (st > 128)
        c->why = enif_make_tuple2(c->why_env, ATOMS.signal, enif_make_int(c->why_env, (int)(st - 128)));
    else
        c->why = enif_make_tuple2(c->why_env, ATOMS.exit_status, enif_make_int(c->why_env, (int)st));
}

/* The process is of no more use (it died, or talks nonsense): killed if
 * need be, reaped; the worker is lost. */
static void lose(iso_ctx_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    /* After the end of its socket it is gone: its pid may be another's. */
    if (!c->reaped && !__atomic_load_n(&c->eof, __ATOMIC_ACQUIRE))
        kill(c->pid, SIGKILL);
    reap(c);
    c->lost = 1;
}

static void i_detach(void *ctx)
{
    iso_ctx_t *c = ctx;
    if (!c)
        return;
    lose(c);
    if (c->why_env)
        enif_free_env(c->why_env);
    if (c->shared)
        munmap(c->shared, sizeof(iso_shared_t));
    pthread_mutex_destroy(&c->sig_lock);
    free(c);
}

static void i_enter(void *ctx)
{
    (void)ctx;
}

static void i_leave(void *ctx)
{
    (void)ctx;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int read_all(int fd, unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_frame(iso_ctx_t *c, ErlNifEnv *env, ERL_NIF_TERM t)
{
    ErlNifBinary bin;
    unsigned char small[4096];
    int rc;

    if (!enif_term_to_binary(env, t, &bin))
        return -1;
    small[0] = (unsigned char)(bin.size >> 24);
    small[1] = (unsigned char)(bin.size >> 16);
    small[2] = (unsigned char)(bin.size >> 8);
    small[3] = (unsigned char)bin.size;
    if (bin.size <= sizeof small - 4) { /* one write: one wake-up */
        memcpy(small + 4, bin.data, bin.size);
        rc = write_all(c->fd, small, bin.size + 4);
    } else {
        rc = write_all(c->fd, small, 4) == 0 && write_all(c->fd, bin.data, bin.size) == 0 ? 0 : -1;
    }
    enif_release_binary(&bin);
    return rc;
}

/* The next frame, in bin (the caller releases it).  -1: the process is
 * gone, or the frame is too large to be one of ours. */
/* Waits (blocking) for bytes on c->fd into c->rbuf, after what is there.
 * -1 once the process is gone.  (Polling first was measured slower: the
 * caller, this thread and the process share two cores.) */
static int fill(iso_ctx_t *c)
{
    ssize_t k;

    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    do
        k = recv(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, 0);
    while (k < 0 && errno == EINTR);
    if (k == 0)
        __atomic_store_n(&c->eof, 1, __ATOMIC_RELEASE);
    if (k <= 0)
        return -1;
    c->rlen += (size_t)k;
    return 0;
}

/* The next frame, in bin (the caller releases it).  -1: the process is
 * gone, or the frame is too large to be one of ours. */
static int recv_frame(iso_ctx_t *c, ErlNifBinary *bin)
{
    const unsigned char *h;
    size_t n, have;

    while (c->rlen - c->rpos < 4)
        if (fill(c) != 0)
            return -1;
    h = c->rbuf + c->rpos;
    n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    c->rpos += 4;
    if (n >= ISO_MAX_FRAME || !enif_alloc_binary(n, bin))
        return -1;
    have = c->rlen - c->rpos < n ? c->rlen - c->rpos : n;
    memcpy(bin->data, c->rbuf + c->rpos, have);
    c->rpos += have;
    if (c->rpos == c->rlen)
        c->rpos = c->rlen = 0;
    /* The rest of a large frame straight into the binary. */
    if (have < n && read_all(c->fd, bin->data + have, n - have) != 0) {
        enif_release_binary(bin);
        return -1;
    }
    return 0;
}

/* Whether frame b begins with head: how the worker encodes the tuples it
 * tags (a tuple of the given arity, then its tag as a small UTF-8 atom). */
static int begins(const ErlNifBinary *b, const char *head, size_t n)
{
    return b->size > n && memcmp(b->data, head, n) == 0;
}
#define FRAME_IS(b, head) begins((b), (head), sizeof(head) - 1)

/* {'$py_send', Pid, Msg}: erlang.send. */
#define IS_SEND(b) FRAME_IS(b, "\203h\003w\010$py_send")
/* {'$py_call', Name, Args}: erlang.call. */
#define IS_CALL(b) FRAME_IS(b, "\203h\003w\010$py_call")
/* {'$py_self', nil}: erlang.self(). */
#define IS_SELF(b) FRAME_IS(b, "\203h\002w\010$py_self")
/* {'$py_error_raw', Name, Builtin, Msg, Tb}: a failure. */
#define IS_RAW_ERROR(b) FRAME_IS(b, "\203h\005w\015$py_error_raw")

/* erlang.send from the worker: delivered at once. */
static void deliver(const ErlNifBinary *b)
{
    ErlNifEnv *m = enif_alloc_env();
    ERL_NIF_TERM t;
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifPid pid;

    if (enif_binary_to_term(m, b->data, b->size, &t, ERL_NIF_BIN2TERM_SAFE) &&
        enif_get_tuple(m, t, &arity, &el) && arity == 3 && enif_get_local_pid(m, el[1], &pid))
        enif_send(NULL, &pid, m, el[2]);
    enif_free_env(m);
}

/* erlang.self(): {'$py_reply', {ok, Pid}} with the pid of the process
 * whose request j runs, or {'$py_reply', undefined}. */
static int answer_self(iso_ctx_t *c, const pyn_job_t *j)
{
    ErlNifEnv *e = enif_alloc_env();
    ERL_NIF_TERM who = j->has_caller
                           ? enif_make_tuple2(e, ATOMS.ok, enif_make_pid(e, &j->caller))
                           : ATOMS.undefined;
    int rc = send_frame(c, e, enif_make_tuple2(e, ATOMS.py_reply, who));
    enif_free_env(e);
    return rc;
}

/* erlang.call from the worker, served as in process (the pool's callback
 * runs the requests the Erlang side makes meanwhile: on this same
 * process, which serves them while it waits), then answered
 * {'$py_reply', Reply}: the Erlang side's {ok, V} | {error, Msg} |
 * {name_error, Msg}, or cancelled | too_deep | not_running.  -1: the
 * frame is no call (the process talks nonsense) or the process is gone. */
static int serve_call(iso_ctx_t *c, const ErlNifBinary *b)
{
    ErlNifEnv *m = enif_alloc_env(), *renv = NULL;
    ERL_NIF_TERM t, reply = 0;
    const ERL_NIF_TERM *el;
    int arity, rc, outcome;

    if (!enif_binary_to_term(m, b->data, b->size, &t, ERL_NIF_BIN2TERM_SAFE) ||
        !enif_get_tuple(m, t, &arity, &el) || arity != 3 || !enif_is_binary(m, el[1]) ||
        !enif_is_list(m, el[2])) {
        enif_free_env(m);
        return -1;
    }
    outcome = callback ? callback(m, el[1], el[2], &renv, &reply) : PYM_CB_NOT_WORKER;
    if (outcome == PYM_CB_NOT_WORKER)
        enif_free_env(m); /* left to us */
    if (outcome != PYM_CB_OK) { /* renv was not made */
        renv = enif_alloc_env();
        reply = outcome == PYM_CB_CANCELLED  ? ATOMS.cancelled
                : outcome == PYM_CB_TOO_DEEP ? enif_make_atom(renv, "too_deep")
                                             : ATOMS.not_running;
    }
    rc = send_frame(c, renv, enif_make_tuple2(renv, ATOMS.py_reply, reply));
    enif_free_env(renv);
    return rc;
}

/* A failure as the in-process executors give it: {'$py_error_raw', Name,
 * Builtin, Msg, Tb} as {'$py_error', {Type, Msg}, Tb}, Type by py_error.c's
 * rules.  (Other answers go to the caller undecoded: {'$py_etf_safe', Bin}.) */
static ERL_NIF_TERM answer(ErlNifEnv *env, ERL_NIF_TERM t)
{
    const ERL_NIF_TERM *el;
    int arity;
    ErlNifBinary name;

    if (enif_get_tuple(env, t, &arity, &el) && arity == 5 &&
        enif_is_identical(el[0], ATOMS.py_error_raw) && enif_inspect_binary(env, el[1], &name)) {
        int builtin = enif_is_identical(el[2], ATOMS.true);
        ERL_NIF_TERM type = pyer_type_name_term(env, (const char *)name.data, name.size, builtin);
        return enif_make_tuple3(env, ATOMS.py_error, enif_make_tuple2(env, type, el[3]), el[4]);
    }
    return t;
}

static ERL_NIF_TERM exited(iso_ctx_t *c, ErlNifEnv *env)
{
    lose(c);
    return enif_make_tuple2(env, ATOMS.error,
                            enif_make_tuple2(env, ATOMS.worker_exited, enif_make_copy(env, c->why)));
}

static ERL_NIF_TERM unsupported(ErlNifEnv *env, const char *what)
{
    char msg[160];
    ERL_NIF_TERM m;
    size_t n = (size_t)snprintf(msg, sizeof msg, "%s is not available in execution_mode isolated yet",
                                what);
    memcpy(enif_make_new_binary(env, n, &m), msg, n);
    ERL_NIF_TERM tb;
    enif_make_new_binary(env, 0, &tb);
    return enif_make_tuple3(env, ATOMS.py_error,
                            enif_make_tuple2(env, enif_make_atom(env, "NotImplementedError"), m), tb);
}

static ERL_NIF_TERM i_run(void *ctx, pyn_job_t *j)
{
    iso_ctx_t *c = ctx;
    ErlNifEnv *env = j->env;
    ERL_NIF_TERM kind, req, t;
    ErlNifBinary bin;

    switch (j->kind) {
    case PYN_JOB_CALL: kind = ATOMS.call; break;
    case PYN_JOB_EVAL: kind = ATOMS.eval; break;
    case PYN_JOB_EXEC: kind = ATOMS.exec; break;
    case PYN_JOB_WIPE: kind = ATOMS.wipe; break;
    case PYN_JOB_CLEAR_CACHES: kind = ATOMS.clear_caches; break;
    case PYN_JOB_SETUP: kind = ATOMS.setup; break;
    case PYN_JOB_STREAM:
    case PYN_JOB_STREAM_EVAL: return unsupported(env, "py:stream");
    case PYN_JOB_ASYNC:
    case PYN_JOB_ASYNC_STREAM: return unsupported(env, "asyncio (py:async_call)");
    case PYN_JOB_STREAM_START: return unsupported(env, "py:stream_start");
    default: return unsupported(env, "this request");
    }
    if (c->lost)
        return exited(c, env);
    /* Control jobs but setup carry no request. */
    req = j->kind == PYN_JOB_WIPE || j->kind == PYN_JOB_CLEAR_CACHES ? ATOMS.none : j->req;
    /* Numbered as the worker counts them, never while an interrupt names
     * the request before (i_interrupt). */
    pthread_mutex_lock(&c->sig_lock);
    c->seq++;
    pthread_mutex_unlock(&c->sig_lock);
    if (send_frame(c, env, enif_make_tuple2(env, kind, req)) != 0)
        return exited(c, env);
    for (;;) {
        if (recv_frame(c, &bin) != 0)
            return exited(c, env);
        if (IS_SEND(&bin)) {
            deliver(&bin);
            enif_release_binary(&bin);
            continue;
        }
        int call = IS_CALL(&bin);
        if (call || IS_SELF(&bin)) { /* answered, then the wait goes on */
            int rc = call ? serve_call(c, &bin) : answer_self(c, j);
            enif_release_binary(&bin);
            if (rc != 0)
                return exited(c, env);
            continue;
        }
        if (!IS_RAW_ERROR(&bin)) {
            /* The answer is decoded by the caller: this thread is no
             * scheduler, and OTP 25 builds large maps badly (it crashed)
             * outside one.  The frame binary becomes the term: no copy. */
            return enif_make_tuple2(env, ATOMS.py_etf_safe, enif_make_binary(env, &bin));
        }
        /* SAFE: a worker makes no atoms (type names come as binaries). */
        if (!enif_binary_to_term(env, bin.data, bin.size, &t, ERL_NIF_BIN2TERM_SAFE)) {
            enif_release_binary(&bin);
            return exited(c, env);
        }
        enif_release_binary(&bin);
        return answer(env, t);
    }
}

static int i_has_deferred(void *ctx)
{
    (void)ctx;
    return 0;
}

static void i_release_deferred(void *ctx)
{
    (void)ctx;
}

/* While claim holds, the job's request is the last one numbered, and no
 * other is numbered until the signal is sent (sig_lock): the page names
 * that request, and
 * the worker's handler raises only while it runs that one (its answer may
 * be on its way already: then the signal finds the worker idle, or at the
 * next request, and is dropped). */
static void i_interrupt(void *ctx, pyn_worker_t *w, int (*claim)(pyn_worker_t *w))
{
    iso_ctx_t *c = ctx;
    pthread_mutex_lock(&c->sig_lock);
    if (claim(w) && !__atomic_load_n(&c->reaped, __ATOMIC_ACQUIRE) &&
        !__atomic_load_n(&c->eof, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&c->shared->interrupt_seq, c->seq, __ATOMIC_SEQ_CST);
        kill(c->pid, SIGUSR1);
    }
    pthread_mutex_unlock(&c->sig_lock);
}

static void i_clear_interrupt(void *ctx)
{
    /* A late SIGUSR1 lands between jobs, where the worker ignores it. */
    (void)ctx;
}

/* Pool lock held: the job outlived its grace.  SIGKILL takes no lock; the
 * worker thread then reads the end of the socket and reaps the process. */
static void i_abandon(void *ctx)
{
    iso_ctx_t *c = ctx;
    if (!__atomic_load_n(&c->reaped, __ATOMIC_ACQUIRE) && !__atomic_load_n(&c->eof, __ATOMIC_ACQUIRE))
        kill(c->pid, SIGKILL);
}

static int i_lost(void *ctx)
{
    return ((iso_ctx_t *)ctx)->lost;
}

static void i_set_callback(pyn_callback_fn call)
{
    callback = call;
}

const pyn_executor_t pyn_exec_isolated = {
    .name = "isolated",
    .borrows = 0,
    .boot = i_boot,
    .attach = i_attach,
    .detach = i_detach,
    .enter = i_enter,
    .leave = i_leave,
    .run = i_run,
    .has_deferred = i_has_deferred,
    .release_deferred = i_release_deferred,
    .interrupt = i_interrupt,
    .clear_interrupt = i_clear_interrupt,
    .abandon = i_abandon,
    .lost = i_lost,
    .set_callback = i_set_callback,
};
