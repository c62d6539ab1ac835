/* atoms.h — every atom the NIF uses, made once in load (any thread may then
 * use them: atoms are global terms, valid in every environment). */
#ifndef PYN_ATOMS_H
#define PYN_ATOMS_H
#include <erl_nif.h>

#define PYN_ATOM_LIST(X) \
    X(ok) X(error) X(true) X(false) X(none) X(nil) X(undefined) X(idle)   \
    X(nan) X(infinity) X(neg_infinity) X(bytes) X(shared) X(nested)        \
    X(call) X(eval) X(exec) X(stream) X(stream_eval) \
    X(no_workers_available) X(worker_crashed) X(context_not_bound)         \
    X(not_running) X(badarg) X(sent) X(cancelled)               \
    X(num_workers) X(available_workers) X(checked_out) X(pending_requests) \
    X(py_error) X(py_cb) X(py_worker_lost)       \
    X(name_error) X(py_main) X(overloaded) X(async_call) X(async_stream) X(py_etf) X(py_done) \
    X(stream_start) X(buffer) X(closed) \
    X(py_error_raw) X(py_send) X(py_call) X(py_reply) X(py_etf_safe) X(worker_exited) X(signal) X(exit_status) X(wipe) X(clear_caches) X(setup)

typedef struct {
#define PYN_ATOM_FIELD(a) ERL_NIF_TERM a;
    PYN_ATOM_LIST(PYN_ATOM_FIELD)
#undef PYN_ATOM_FIELD
} pyn_atoms_t;

extern pyn_atoms_t ATOMS;

/* Make every atom; called from load. */
void pyn_atoms_init(ErlNifEnv *env);

#endif
