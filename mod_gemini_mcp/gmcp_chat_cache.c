/* gmcp_chat_cache.c — see gmcp_chat_cache.h.
 *
 * Direct-mapped: a session id picks one slot, and another history simply replaces the
 * one there. A slot keeps its history in one malloc'd block: the id, then per message
 * its numbers and its five strings (each NUL-terminated), copied out under the lock. */
#include "gmcp_chat_cache.h"
#include "gmcp_chat.h"

#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <apr_thread_mutex.h>

typedef struct {
    char *blob; /* NULL when the slot is empty */
    size_t len;
    apr_int64_t count;
} slot;

struct gmcp_chat_cache {
    apr_thread_mutex_t *mu;
    slot slots[GMCP_CHAT_CACHE_SLOTS];
};

/* A message's numbers, as they sit in a blob before its strings. */
typedef struct {
    apr_int64_t seq, prompt_tokens, output_tokens, created;
} numbers;

static apr_status_t free_slots(void *data)
{
    gmcp_chat_cache *c = data;
    int i;
    for (i = 0; i < GMCP_CHAT_CACHE_SLOTS; i++) free(c->slots[i].blob);
    memset(c->slots, 0, sizeof(c->slots));
    return APR_SUCCESS;
}

gmcp_chat_cache *gmcp_chat_cache_create(apr_pool_t *p)
{
    gmcp_chat_cache *c = apr_pcalloc(p, sizeof(*c));
    if (apr_thread_mutex_create(&c->mu, APR_THREAD_MUTEX_DEFAULT, p) != APR_SUCCESS) return NULL;
    apr_pool_cleanup_register(p, c, free_slots, apr_pool_cleanup_null);
    return c;
}

/* FNV-1a: session ids are random already; this only spreads them over the slots. */
static slot *slot_of(gmcp_chat_cache *c, const char *id)
{
    apr_uint32_t h = 2166136261u;
    for (; *id; id++) h = (h ^ (unsigned char)*id) * 16777619u;
    return &c->slots[h % GMCP_CHAT_CACHE_SLOTS];
}

static const char *or_empty(const char *s) { return s ? s : ""; }

#define STRINGS(m)                                                      \
    {                                                                   \
        or_empty((m)->role), or_empty((m)->parts), or_empty((m)->text), \
            or_empty((m)->finish_reason), or_empty((m)->model_version)  \
    }

/* The block for id and msgs, or NULL when it would pass the size bound. */
static char *pack(const char *id, const apr_array_header_t *msgs, size_t *len)
{
    size_t need = strlen(id) + 1, at;
    char *b;
    int i, k;
    for (i = 0; i < msgs->nelts; i++) {
        const gmcp_chat_message *m = &APR_ARRAY_IDX(msgs, i, gmcp_chat_message);
        const char *s[5] = STRINGS(m);
        need += sizeof(numbers);
        for (k = 0; k < 5; k++) need += strlen(s[k]) + 1;
        if (need > GMCP_CHAT_CACHE_MAX_BYTES) return NULL;
    }
    if (!(b = malloc(need))) return NULL;
    at = strlen(id) + 1;
    memcpy(b, id, at);
    for (i = 0; i < msgs->nelts; i++) {
        const gmcp_chat_message *m = &APR_ARRAY_IDX(msgs, i, gmcp_chat_message);
        const char *s[5] = STRINGS(m);
        numbers n = {m->seq, m->prompt_tokens, m->output_tokens, m->created};
        memcpy(b + at, &n, sizeof(n));
        at += sizeof(n);
        for (k = 0; k < 5; k++) {
            size_t l = strlen(s[k]) + 1;
            memcpy(b + at, s[k], l);
            at += l;
        }
    }
    *len = need;
    return b;
}

/* The messages of a block, their strings copied into p. */
static apr_array_header_t *unpack(const slot *s, apr_pool_t *p)
{
    apr_array_header_t *out = apr_array_make(p, (int)s->count + 2, sizeof(gmcp_chat_message));
    const char *b = s->blob;
    size_t at = strlen(b) + 1;
    apr_int64_t i;
    for (i = 0; i < s->count; i++) {
        gmcp_chat_message *m = apr_array_push(out);
        const char **f[5] = {&m->role, &m->parts, &m->text, &m->finish_reason, &m->model_version};
        numbers n;
        int k;
        memcpy(&n, b + at, sizeof(n));
        at += sizeof(n);
        m->seq = n.seq;
        m->prompt_tokens = n.prompt_tokens;
        m->output_tokens = n.output_tokens;
        m->created = n.created;
        for (k = 0; k < 5; k++) {
            size_t l = strlen(b + at);
            *f[k] = apr_pstrmemdup(p, b + at, l);
            at += l + 1;
        }
    }
    return out;
}

int gmcp_chat_cache_get(gmcp_chat_cache *c, const char *id, apr_int64_t count, apr_pool_t *p,
                        apr_array_header_t **out)
{
    slot *s;
    int hit;
    if (!c) return 0;
    apr_thread_mutex_lock(c->mu);
    s = slot_of(c, id);
    hit = s->blob && !strcmp(s->blob, id) && s->count == count;
    if (hit) *out = unpack(s, p);
    apr_thread_mutex_unlock(c->mu);
    return hit;
}

void gmcp_chat_cache_put(gmcp_chat_cache *c, const char *id, const apr_array_header_t *msgs)
{
    size_t len = 0;
    char *b;
    slot *s;
    if (!c) return;
    b = pack(id, msgs, &len); /* outside the lock: it copies the whole history */
    apr_thread_mutex_lock(c->mu);
    s = slot_of(c, id);
    if (b || (s->blob && !strcmp(s->blob, id))) {
        free(s->blob);
        s->blob = b;
        s->len = len;
        s->count = b ? msgs->nelts : 0;
    }
    apr_thread_mutex_unlock(c->mu);
}

void gmcp_chat_cache_drop(gmcp_chat_cache *c, const char *id)
{
    slot *s;
    if (!c) return;
    apr_thread_mutex_lock(c->mu);
    s = slot_of(c, id);
    if (s->blob && !strcmp(s->blob, id)) {
        free(s->blob);
        s->blob = NULL;
        s->count = 0;
    }
    apr_thread_mutex_unlock(c->mu);
}
