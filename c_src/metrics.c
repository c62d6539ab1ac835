/* metrics.c — per-worker counters for py_pool:call_stats/0: requests
 * answered, errors, timeouts, and a latency histogram (submit to answer)
 * from which p50/p99 are read.  No dependency, always on: recording is a
 * few additions under the pool lock that finish_job holds anyway.
 * (Timeouts are counted where a caller gives up, in queue.c's cancel.)
 *
 * The histogram is log-linear: 8 buckets per power of two of nanoseconds
 * (a value is known to 1/8 of its octave, i.e. within 6 % of the bucket's
 * middle), from 1 ns to 2^43 ns (2.4 hours; longer lands in the last
 * bucket; the top octave reaches 2^44 ns). */
#include <string.h>

#include "atoms.h"
#include "pool_internal.h"

/* Bucket of v ns: values below 8 have their own; then octave e >= 3
 * (2^e <= v < 2^(e+1)) has 8 buckets from (e - 2) * 8. */
static int bucket_of(int64_t v)
{
    int e, idx;
    if (v < 8)
        return v < 0 ? 0 : (int)v;
    e = 63 - __builtin_clzll((unsigned long long)v);
    idx = (e - 2) * 8 + (int)((v >> (e - 3)) & 7);
    return idx < PYN_LAT_BUCKETS ? idx : PYN_LAT_BUCKETS - 1;
}

/* The middle of bucket idx, in ns. */
static double bucket_mid(int idx)
{
    int e, sub;
    if (idx < 8)
        return idx;
    e = idx / 8 + 2;
    sub = idx % 8;
    return (double)((int64_t)(8 + sub) << (e - 3)) + (double)((int64_t)1 << (e - 3)) / 2.0;
}

void metrics_done_locked(pyn_worker_t *w, const pyn_job_t *j, ERL_NIF_TERM result)
{
    /* A retired worker (its thread finishing a job) counts with the
     * retired ones: its own counters were folded in when it retired. */
    pyn_wmetrics_t *m = w->state == PYN_W_ALIVE ? &w->metrics : &P.retired;
    const ERL_NIF_TERM *t;
    int arity;

    if (!j->has_caller || j->kind == PYN_JOB_SLOT)
        return;
    m->calls++;
    if (j->cancelled)
        return; /* counted as a timeout (or its caller died): no answer */
    if (enif_get_tuple(j->env, result, &arity, &t) && arity >= 2 &&
        (t[0] == ATOMS.py_error || t[0] == ATOMS.error))
        m->errors++;
    m->hist[bucket_of(pyn_now_ns() - j->submitted_ns)]++;
    m->answered++;
}

/* The value at rank q (0 < q <= 1) of the histogram, in microseconds;
 * 0.0 when it is empty. */
static double percentile_us(const uint64_t *hist, uint64_t n, double q)
{
    uint64_t rank = (uint64_t)(q * (double)n + 0.999999), seen = 0;
    if (n == 0)
        return 0.0;
    if (rank < 1)
        rank = 1;
    for (int i = 0; i < PYN_LAT_BUCKETS; i++) {
        seen += hist[i];
        if (seen >= rank)
            return bucket_mid(i) / 1000.0;
    }
    return bucket_mid(PYN_LAT_BUCKETS - 1) / 1000.0;
}

/* The counters as a map; id 0: the retired workers', with crashed. */
static ERL_NIF_TERM worker_map(ErlNifEnv *env, int id, const pyn_wmetrics_t *m, uint64_t crashed)
{
    ERL_NIF_TERM keys[7], vals[7], map;
    keys[0] = enif_make_atom(env, id ? "id" : "crashed");
    vals[0] = id ? enif_make_int(env, id) : enif_make_uint64(env, crashed);
    keys[1] = enif_make_atom(env, "calls");
    vals[1] = enif_make_uint64(env, m->calls);
    keys[2] = enif_make_atom(env, "errors");
    vals[2] = enif_make_uint64(env, m->errors);
    keys[3] = enif_make_atom(env, "timeouts");
    vals[3] = enif_make_uint64(env, m->timeouts);
    keys[4] = enif_make_atom(env, "answered");
    vals[4] = enif_make_uint64(env, m->answered);
    keys[5] = enif_make_atom(env, "p50_us");
    vals[5] = enif_make_double(env, percentile_us(m->hist, m->answered, 0.50));
    keys[6] = enif_make_atom(env, "p99_us");
    vals[6] = enif_make_double(env, percentile_us(m->hist, m->answered, 0.99));
    enif_make_map_from_arrays(env, keys, vals, 7, &map);
    return map;
}

ERL_NIF_TERM pyn_worker_metrics(ErlNifEnv *env, uint64_t *queued_timeouts, ERL_NIF_TERM *retired)
{
    pyn_wmetrics_t *gone;
    uint64_t crashed;
    /* Copied under the lock, read out after it. */
    pyn_wmetrics_t *copy;
    int ids[PYN_MAX_WORKERS] = {0}, n, room;
    ERL_NIF_TERM list;

    room = __atomic_load_n(&P.nworkers, __ATOMIC_RELAXED) + 4;
    if (room > PYN_MAX_WORKERS)
        room = PYN_MAX_WORKERS;
    if (!(copy = enif_alloc(sizeof *copy * (size_t)room)))
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    if (!(gone = enif_alloc(sizeof *gone))) {
        enif_free(copy);
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));
    }
    pthread_mutex_lock(&P.lock);
    n = P.nworkers < room ? P.nworkers : room;
    for (int i = 0; i < n; i++) {
        ids[i] = P.workers[i]->id;
        memcpy(&copy[i], &P.workers[i]->metrics, sizeof copy[i]);
    }
    *queued_timeouts = P.queued_timeouts;
    memcpy(gone, &P.retired, sizeof *gone);
    crashed = P.crashed;
    pthread_mutex_unlock(&P.lock);
    *retired = worker_map(env, 0, gone, crashed);
    enif_free(gone);
    list = enif_make_list(env, 0);
    for (int i = n - 1; i >= 0; i--)
        list = enif_make_list_cell(env, worker_map(env, ids[i], &copy[i], 0), list);
    enif_free(copy);
    return list;
}
