/* py_channel.h — channels from Erlang into Python (py_channel.erl).
 *
 * A channel is a resource holding a queue of terms (or, for a byte
 * channel, binaries) that Erlang processes send and Python code receives.
 * Passed to Python, a channel term becomes an erlang.Channel (a byte
 * channel: an erlang.ByteChannel, a file-like object); a Channel converted
 * back gives the same term.  The channel closes when py_channel:close/1 is
 * called (receivers drain what is queued, then see the end) or when the
 * process that made it exits (receivers then get erlang.ChannelClosed,
 * never a clean end: the data was cut short). */
#ifndef PYN_PY_CHANNEL_H
#define PYN_PY_CHANNEL_H

#include <erl_nif.h>

/* From load/upgrade: the resource type, and the conversion hooks that
 * turn channel terms into Python objects and back.  0 ok. */
int pych_types_init(ErlNifEnv *env);

/* NIFs (py_nif.erl): channel_new(Owner, MaxSize, Kind) -> Channel
 * (MaxSize 0: unbounded; Kind term | bytes); channel_send(Ch, Term) -> ok
 * | full | closed | not_binary; channel_close(Ch) -> ok;
 * channel_info(Ch) -> map. */
ERL_NIF_TERM pych_nif_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pych_nif_send(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pych_nif_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM pych_nif_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#endif
