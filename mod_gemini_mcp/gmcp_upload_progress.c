/* gmcp_upload_progress.c — progress reports of an upload, with a rate from recent
 * samples. */
#include "gmcp_upload_progress.h"

#include <string.h>
#include <apr_strings.h>

#define RATE_WINDOW_MS 3000 /* rate over the last 3 s of samples */
#define STALLED_MS 2000     /* ...and none when the newest is older than this */

int gmcp_upload_is_expired(const gmcp_upload *x, apr_int64_t now) { return x->expires < now; }

const char *gmcp_upload_phase(const gmcp_upload *x, apr_int64_t now)
{
    if (!strcmp(x->state, GMCP_UPLOAD_TERMINATED)) return "terminated";
    if (gmcp_upload_is_expired(x, now)) return "expired";
    return x->phase;
}

int gmcp_upload_phase_final(const char *phase)
{
    return !strcmp(phase, GMCP_PHASE_ACTIVE) || !strcmp(phase, GMCP_PHASE_FAILED)
        || !strcmp(phase, "terminated") || !strcmp(phase, "expired");
}

/* The bytes a report gives for its phase: while receiving, at least the durable offset;
 * once received, all of them. */
static apr_int64_t phase_bytes(const gmcp_upload *x, const char *phase)
{
    apr_int64_t bytes = x->progress;
    if (!strcmp(phase, GMCP_PHASE_RECEIVING) && x->offset > bytes) bytes = x->offset;
    if (!strcmp(phase, GMCP_PHASE_RECEIVED) || !strcmp(phase, GMCP_PHASE_PROCESSING)
        || !strcmp(phase, GMCP_PHASE_ACTIVE))
        bytes = x->length;
    return bytes;
}

/* The sample (bytes at `at`, 0: none yet) into the window of its phase (a new phase
 * starts it over), samples older than the window dropped (keeping two); the rate over
 * what is left, 0 when the newest sample is stale. */
static double window_rate(gmcp_rate_window *w, const char *phase, apr_int64_t bytes, apr_int64_t at,
                          apr_int64_t now_ms)
{
    double rate = 0;
    int i, last;
    if (strcmp(w->phase, phase) != 0) {
        w->n = w->first = 0;
        apr_cpystrn(w->phase, phase, sizeof(w->phase));
    }
    last = (w->first + w->n - 1) % GMCP_RATE_SAMPLES;
    if (at > 0 && (!w->n || w->bytes[last] != bytes || w->at[last] != at)) {
        if (w->n == GMCP_RATE_SAMPLES) {
            w->first = (w->first + 1) % GMCP_RATE_SAMPLES;
            w->n--;
        }
        last = (w->first + w->n) % GMCP_RATE_SAMPLES;
        w->bytes[last] = bytes;
        w->at[last] = at;
        w->n++;
    }
    while (w->n > 2 && w->at[last] - w->at[w->first] > RATE_WINDOW_MS) {
        w->first = (w->first + 1) % GMCP_RATE_SAMPLES;
        w->n--;
    }
    i = w->first;
    if (w->n >= 2 && w->at[last] > w->at[i] && now_ms - w->at[last] < STALLED_MS)
        rate = (double)(w->bytes[last] - w->bytes[i]) * 1000.0 / (double)(w->at[last] - w->at[i]);
    return rate < 1 ? 0 : rate;
}

json_t *gmcp_upload_progress_json(const gmcp_upload *x, gmcp_rate_window *w, apr_int64_t now_ms)
{
    const char *phase = gmcp_upload_phase(x, now_ms / 1000);
    apr_int64_t bytes = phase_bytes(x, phase);
    double rate = window_rate(w, phase, bytes, x->progress_at, now_ms);
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I}", "upload_id", x->id, "phase", phase, "bytes",
                          (json_int_t)bytes, "offset", (json_int_t)x->offset, "rate",
                          (json_int_t)(rate + 0.5));
    json_object_set_new(o, "length", x->length >= 0 ? json_integer(x->length) : json_null());
    json_object_set_new(
        o, "eta",
        rate > 0 && x->length >= 0 && !gmcp_upload_phase_final(phase)
            ? json_real((double)(apr_int64_t)((double)(x->length - bytes) / rate * 10 + 0.5) / 10)
            : json_null());
    if (*x->detail)
        json_object_set_new(o, !strcmp(phase, GMCP_PHASE_ACTIVE) ? "file" : "detail",
                            json_string(x->detail));
    if (*x->sniffed) json_object_set_new(o, "sniffed_type", json_string(x->sniffed));
    return o;
}
