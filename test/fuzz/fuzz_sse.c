/* fuzz_sse — Gemini's streamGenerateContent SSE framing (gmcp_sse_feed), the body fed
 * in pieces of input-derived sizes, as libcurl hands it over; each event's JSON goes
 * through gmcp_gemini_text as the stream handler does. Differential check: the events
 * seen and the outcome must not depend on how the bytes were split.
 *
 * Input: byte 0 seeds the piece sizes, byte 1 says after how many events the callback
 * asks to stop (0: never); the rest is the stream. */
#include "fuzz.h"
#include "gmcp_gemini.h"

typedef struct {
    apr_pool_t *p;
    int events, stop_after;
    unsigned long hash;
} seen;

static apr_status_t on_chunk(json_t *chunk, void *baton)
{
    seen *s = baton;
    const char *t = gmcp_gemini_text(s->p, chunk);
    s->events++;
    s->hash = s->hash * 31 + (t ? strlen(t) + 1 : 0) + (unsigned long)json_typeof(chunk);
    return s->stop_after && s->events >= s->stop_after ? APR_EOF : APR_SUCCESS;
}

static apr_status_t feed(apr_pool_t *p, const uint8_t *d, size_t n, unsigned seed, int stop_after,
                         int whole, seen *s)
{
    gmcp_sse_parser sp;
    size_t off = 0;
    apr_status_t rv = APR_SUCCESS;
    memset(&sp, 0, sizeof(sp));
    memset(s, 0, sizeof(*s));
    s->p = p;
    s->stop_after = stop_after;
    while (off < n && !rv) {
        size_t piece;
        if (whole)
            piece = n - off;
        else {
            seed = seed * 1103515245u + 12345u;
            /* mostly small pieces, sometimes large ones */
            piece = 1 + ((seed >> 16) % ((seed & 0x100) ? 256 : 8));
            if (piece > n - off) piece = n - off;
        }
        /* An exact-size copy: reads past a piece are caught by ASan. */
        {
            char *copy = malloc(piece);
            if (!copy) abort();
            memcpy(copy, d + off, piece);
            rv = gmcp_sse_feed(&sp, copy, piece, on_chunk, s);
            free(copy);
        }
        FUZZ_ASSERT(sp.len <= sp.cap);
        off += piece;
    }
    gmcp_sse_free(&sp);
    return rv;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    seen a, b;
    apr_status_t ra, rb;
    if (size < 2) return 0;
    p = fuzz_pool();
    ra = feed(p, data + 2, size - 2, data[0], data[1] % 8, 0, &a);
    rb = feed(p, data + 2, size - 2, data[0], data[1] % 8, 1, &b);
    FUZZ_ASSERT(ra == rb && a.events == b.events && a.hash == b.hash);
    apr_pool_destroy(p);
    return 0;
}
