/* gmcp_session_cache.c — see gmcp_session_cache.h.
 *
 * Direct-mapped: a session id picks one slot, and a newer session simply replaces the
 * one there. Each slot keeps its strings in one malloc'd block (id, owner, protocol
 * version, client capabilities, log level, each NUL-terminated), copied out under the
 * lock so a reader never sees a slot being replaced. */
#include "gmcp_session_cache.h"

#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

#define NFIELDS 5

typedef struct {
    char *blob; /* NULL when the slot is empty */
    size_t len;
    apr_time_t read_began;
    apr_int64_t last_seen;
    int refreshing; /* one caller is reading the row again (see gmcp_session_cache_get) */
} slot;

struct gmcp_session_cache {
    apr_thread_mutex_t *mu;
    slot slots[GMCP_SESSION_CACHE_SLOTS];
};

static apr_status_t free_slots(void *data)
{
    gmcp_session_cache *c = data;
    int i;
    for (i = 0; i < GMCP_SESSION_CACHE_SLOTS; i++) free(c->slots[i].blob);
    memset(c->slots, 0, sizeof(c->slots));
    return APR_SUCCESS;
}

gmcp_session_cache *gmcp_session_cache_create(apr_pool_t *p)
{
    gmcp_session_cache *c = apr_pcalloc(p, sizeof(*c));
    if (apr_thread_mutex_create(&c->mu, APR_THREAD_MUTEX_DEFAULT, p) != APR_SUCCESS) return NULL;
    apr_pool_cleanup_register(p, c, free_slots, apr_pool_cleanup_null);
    return c;
}

/* FNV-1a: session ids are random already; this only spreads them over the slots. */
static slot *slot_of(gmcp_session_cache *c, const char *id)
{
    apr_uint32_t h = 2166136261u;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return &c->slots[h % GMCP_SESSION_CACHE_SLOTS];
}

static void clear(slot *s)
{
    free(s->blob);
    s->blob = NULL;
    s->len = 0;
    s->refreshing = 0;
}

/* The blob's fields in order: id, owner, protocol_version, client_caps, log_level. */
static void split(const char *blob, const char *field[NFIELDS])
{
    int i;
    for (i = 0; i < NFIELDS; i++) {
        field[i] = blob;
        blob += strlen(blob) + 1;
    }
}

int gmcp_session_cache_get(gmcp_session_cache *c, const char *id, const char *owner,
                           apr_int64_t idle_timeout, apr_int64_t touch_every, apr_pool_t *p,
                           gmcp_session *out)
{
    apr_time_t now = apr_time_now();
    apr_int64_t now_sec = apr_time_sec(now);
    const char *field[NFIELDS];
    char *copy = NULL;
    slot *s;
    apr_int64_t last_seen = 0;
    if (!c) return 0;
    s = slot_of(c, id);
    apr_thread_mutex_lock(c->mu);
    if (s->blob && strcmp(s->blob, id) == 0) {
        apr_time_t age = now - s->read_began;
        if (age < 0 || age >= GMCP_SESSION_CACHE_TTL)
            clear(s);
        else if (age >= GMCP_SESSION_CACHE_TTL / 2 && !s->refreshing)
            /* Past half its life, one caller reads the row again while the others
             * still use this copy: no stampede of every busy thread on the database
             * when it expires. */
            s->refreshing = 1;
        else {
            copy = apr_pmemdup(p, s->blob, s->len);
            last_seen = s->last_seen;
        }
    }
    apr_thread_mutex_unlock(c->mu);
    if (!copy) return 0;
    /* Near the idle limit or the refresh the database decides: a miss, never a refusal. */
    if (now_sec - last_seen >= touch_every || now_sec - last_seen >= idle_timeout) return 0;
    split(copy, field);
    if (owner && strcmp(owner, field[1]) != 0) return 0;
    out->id = field[0];
    out->owner = field[1];
    out->protocol_version = field[2];
    out->client_caps = field[3];
    out->log_level = field[4];
    out->last_seen = last_seen;
    return 1;
}

void gmcp_session_cache_put(gmcp_session_cache *c, const gmcp_session *s, apr_time_t read_began)
{
    const char *field[NFIELDS];
    size_t flen[NFIELDS], len = 0;
    char *blob, *w;
    slot *sl;
    int i;
    if (!c) return;
    field[0] = s->id;
    field[1] = s->owner;
    field[2] = s->protocol_version;
    field[3] = s->client_caps ? s->client_caps : "{}";
    field[4] = s->log_level ? s->log_level : "";
    for (i = 0; i < NFIELDS; i++) len += (flen[i] = strlen(field[i])) + 1;
    if (len > GMCP_SESSION_CACHE_MAX_BYTES || !(blob = malloc(len))) return;
    for (w = blob, i = 0; i < NFIELDS; i++) {
        memcpy(w, field[i], flen[i] + 1);
        w += flen[i] + 1;
    }
    sl = slot_of(c, s->id);
    apr_thread_mutex_lock(c->mu);
    clear(sl);
    sl->blob = blob;
    sl->len = len;
    sl->read_began = read_began;
    sl->last_seen = s->last_seen;
    apr_thread_mutex_unlock(c->mu);
}

void gmcp_session_cache_drop(gmcp_session_cache *c, const char *id)
{
    slot *s;
    if (!c) return;
    s = slot_of(c, id);
    apr_thread_mutex_lock(c->mu);
    if (s->blob && strcmp(s->blob, id) == 0) clear(s);
    apr_thread_mutex_unlock(c->mu);
}
