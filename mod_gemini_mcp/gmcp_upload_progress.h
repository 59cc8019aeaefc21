/* gmcp_upload_progress.h — an upload's progress as GET reports it, without httpd.
 *
 * One report: the phase, bytes of the phase, the total, the rate (bytes/s over the last
 * few seconds of the samples seen) and an ETA. A stream keeps one window of samples
 * across its reports, so the rate follows what the row said at each poll. */
#ifndef GMCP_UPLOAD_PROGRESS_H
#define GMCP_UPLOAD_PROGRESS_H

#include <jansson.h>
#include "gmcp_uploads.h"

#define GMCP_RATE_SAMPLES 16

/* Samples of one phase (a ring); zeroed before the first report. */
typedef struct {
    apr_int64_t bytes[GMCP_RATE_SAMPLES], at[GMCP_RATE_SAMPLES]; /* at: ms */
    int n, first;
    char phase[16];
} gmcp_rate_window;

/* Unfinished uploads expire after their last PATCH, finished ones after they were kept
 * long enough for relays; `now` in seconds. */
int gmcp_upload_is_expired(const gmcp_upload *x, apr_int64_t now);
/* The phase a client sees: the row's, or "terminated" or "expired". */
const char *gmcp_upload_phase(const gmcp_upload *x, apr_int64_t now);
/* Nothing follows this phase (active, failed, terminated, expired): a stream ends. */
int gmcp_upload_phase_final(const char *phase);
/* The report at now_ms (ms since the epoch), the row's sample added to w. */
json_t *gmcp_upload_progress_json(const gmcp_upload *x, gmcp_rate_window *w, apr_int64_t now_ms);

#endif
