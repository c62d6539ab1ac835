/* py_etf.h — Python objects to Erlang's external term format (ETF).
 * Used for results holding large dicts: OTP 25 cannot build hash maps
 * (over 32 keys) efficiently on a non-scheduler thread, but binary_to_term
 * in the receiving process can.  GIL held. */
#ifndef PYN_PY_ETF_H
#define PYN_PY_ETF_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

/* Encodes {ok, o} ("131" + term) as a binary term in env.  Returns 0 with
 * *out set, -1 with a Python exception set, or 1 when o holds dict keys that
 * could collide once converted (bytes keys, NaN keys, arbitrary objects):
 * the caller then converts directly. */
int pye_encode_ok(ErlNifEnv *env, PyObject *o, ERL_NIF_TERM *out);

#endif
