/* py_stream.h — incremental streams (py:stream_start): the sink through
 * which a worker running a generator sends each value to the stream's
 * owner, {py_stream, Sink, {data, Value}}, with a credit window: at most
 * `window` values sent and not yet acknowledged (py:stream_ack) sit in
 * the owner's mailbox; the generator is not advanced past that.
 *
 * The sink is a resource; its term is the stream's reference (Ref in the
 * owner's messages).  The Erlang side (py.erl) owns the stream's process,
 * which submits the job {stream_start, M, F, Args, Kwargs, Sink} and sends
 * the last message (done or error) through pys_end.  After pys_stop (cancel)
 * or pys_end, no message reaches the owner. */
#ifndef PYN_PY_STREAM_H
#define PYN_PY_STREAM_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <erl_nif.h>

/* From load/upgrade: the resource type.  0 ok. */
int pys_types_init(ErlNifEnv *env);

/* NIFs (py_nif.erl): stream_new(Owner, Window) -> Sink;
 * stream_set_proc(Sink, Pid) -> ok; stream_ack(Sink, N) -> ok;
 * stream_stop(Sink) -> {running, Pid} | ended; stream_end(Sink, Msg) ->
 * ok | stopped; stream_info(Sink) -> {Waiting, MsSinceProgress, Sent, Acked}. */
ERL_NIF_TERM pys_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pys_nif_set_proc(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pys_nif_ack(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pys_nif_stop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pys_nif_end(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pys_nif_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* Worker thread, GIL held: the Python sink object (erlang._StreamSink) for
 * the sink term t, or NULL with TypeError set. */
PyObject *pys_sink_object(ErlNifEnv *env, ERL_NIF_TERM t);

#endif
