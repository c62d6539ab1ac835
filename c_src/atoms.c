/* atoms.c — builds the atom table at load time. */
#include "atoms.h"

pyn_atoms_t ATOMS;

void pyn_atoms_init(ErlNifEnv *env)
{
#define PYN_ATOM_MAKE(a) ATOMS.a = enif_make_atom(env, #a);
    PYN_ATOM_LIST(PYN_ATOM_MAKE)
#undef PYN_ATOM_MAKE
    /* Atoms whose names are not C identifiers. */
    ATOMS.py_error = enif_make_atom(env, "$py_error");
    ATOMS.py_cb = enif_make_atom(env, "$py_cb");
    ATOMS.py_worker_lost = enif_make_atom(env, "$py_worker_lost");
    ATOMS.py_main = enif_make_atom(env, "__main__");
    ATOMS.py_etf = enif_make_atom(env, "$py_etf");
    ATOMS.py_done = enif_make_atom(env, "$py_done");
    ATOMS.py_error_raw = enif_make_atom(env, "$py_error_raw");
    ATOMS.py_send = enif_make_atom(env, "$py_send");
    ATOMS.py_call = enif_make_atom(env, "$py_call");
    ATOMS.py_reply = enif_make_atom(env, "$py_reply");
    ATOMS.py_etf_safe = enif_make_atom(env, "$py_etf_safe");
}
