/* gmcp_limits.c — GCRA rate limits, in-flight caps and unflushed usage per key. */
#include "gmcp_limits.h"

#include <string.h>
#include <apr_strings.h>

#define PROBE 16   /* a key lives within PROBE slots of its hash */

apr_size_t gmcp_limits_size(apr_uint32_t nslots)
{
    return sizeof(gmcp_slot_table) + (apr_size_t)(nslots - 1) * sizeof(gmcp_slot);
}

void gmcp_limits_init(void *mem, apr_uint32_t nslots)
{
    gmcp_slot_table *t = mem;
    memset(mem, 0, gmcp_limits_size(nslots));
    t->nslots = nslots;
}

int gmcp_gcra(apr_time_t *tat, apr_time_t now, apr_interval_time_t interval,
              apr_interval_time_t limit, apr_interval_time_t cost,
              apr_interval_time_t *retry_after, apr_int64_t *remaining)
{
    apr_time_t base = *tat > now ? *tat : now, next = base + cost;
    if (next - now > limit) {
        *retry_after = next - now - limit;
        *remaining = 0;
        return 0;
    }
    *tat = next;
    *retry_after = 0;
    *remaining = interval > 0 ? (limit - (next - now)) / interval : 0;
    return 1;
}

void gmcp_key_limits_of(const gmcp_key *k, gmcp_key_limits *out)
{
    memset(out, 0, sizeof(*out));
    if (k->rate_count > 0 && k->rate_period > 0) {
        apr_int64_t burst = k->burst > 0 ? k->burst : k->rate_count;
        out->req_interval = apr_time_from_sec(k->rate_period) / k->rate_count;
        if (out->req_interval < 1) out->req_interval = 1;
        out->req_limit = burst * out->req_interval;
    }
    if (k->token_rate_count > 0 && k->token_rate_period > 0) {
        out->tok_interval = apr_time_from_sec(k->token_rate_period) / k->token_rate_count;
        if (out->tok_interval < 1) out->tok_interval = 1;
        /* One period's worth may be spent at once. */
        out->tok_limit = k->token_rate_count * out->tok_interval;
    }
    out->max_inflight = k->max_inflight;
}

static apr_uint32_t hash_key(const char *s)
{
    apr_uint32_t h = 2166136261u;          /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int slot_clean(const gmcp_slot *s)
{
    return s->inflight == 0 && gmcp_usage_empty(&s->usage[0]) && gmcp_usage_empty(&s->usage[1]);
}

/* The key's slot, claimed if new; NULL when every slot near it is busy. Locked. */
static gmcp_slot *slot_for(gmcp_slot_table *t, const char *key, apr_time_t now, int claim)
{
    apr_uint32_t h = hash_key(key), i;
    gmcp_slot *free_slot = NULL, *lru = NULL;
    for (i = 0; i < PROBE && i < t->nslots; i++) {
        gmcp_slot *s = &t->slots[(h + i) % t->nslots];
        if (!strcmp(s->key, key)) return s;
        if (!s->key[0]) { if (!free_slot) free_slot = s; }
        else if (slot_clean(s) && (!lru || s->last_used < lru->last_used)) lru = s;
    }
    if (!claim) return NULL;
    if (!free_slot && lru) {
        free_slot = lru;
        t->evictions++;
    }
    if (!free_slot) {
        t->full++;
        return NULL;
    }
    /* A fresh slot: an evicted key starts over with a whole burst, which is the
     * most it could have had after idling longer than every other key nearby. */
    memset(free_slot, 0, sizeof(*free_slot));
    apr_cpystrn(free_slot->key, key, sizeof(free_slot->key));
    free_slot->last_used = now;
    return free_slot;
}

int gmcp_limits_admit(gmcp_limits *l, const char *key, const gmcp_key_limits *kl,
                      apr_time_t now, int check_rate, int spends_tokens, int enter,
                      gmcp_admit_info *info)
{
    gmcp_slot *s;
    int rv = GMCP_ADMIT_OK;
    memset(info, 0, sizeof(*info));
    info->remaining = -1;
    l->lock(l->baton);
    s = slot_for(l->t, key, now, 1);
    if (!s) {
        rv = GMCP_ADMIT_FULL;
        info->retry_after = apr_time_from_sec(1);
        goto out;
    }
    s->last_used = now;
    if (spends_tokens && kl->tok_interval) {
        apr_time_t tat = s->tok_tat;   /* a copy: the check spends nothing */
        apr_int64_t rem;
        /* At least one token must be left; the call's real cost is charged after it. */
        if (!gmcp_gcra(&tat, now, kl->tok_interval, kl->tok_limit, kl->tok_interval,
                       &info->retry_after, &rem)) {
            rv = GMCP_ADMIT_TOKENS;
            goto out;
        }
    }
    if (enter && kl->max_inflight && s->inflight >= kl->max_inflight) {
        rv = GMCP_ADMIT_INFLIGHT;
        info->retry_after = apr_time_from_sec(1);
        goto out;
    }
    if (check_rate && kl->req_interval) {
        if (!gmcp_gcra(&s->req_tat, now, kl->req_interval, kl->req_limit, kl->req_interval,
                       &info->retry_after, &info->remaining)) {
            rv = GMCP_ADMIT_RATE;
            info->reset = s->req_tat - now;
            goto out;
        }
        info->reset = s->req_tat - now;
    }
    if (enter) s->inflight++;
out:
    l->unlock(l->baton);
    return rv;
}

void gmcp_limits_leave(gmcp_limits *l, const char *key)
{
    gmcp_slot *s;
    l->lock(l->baton);
    s = slot_for(l->t, key, 0, 0);
    if (s && s->inflight > 0) s->inflight--;
    l->unlock(l->baton);
}

void gmcp_limits_charge_tokens(gmcp_limits *l, const char *key, const gmcp_key_limits *kl,
                               apr_int64_t tokens, apr_time_t now)
{
    gmcp_slot *s;
    if (!kl->tok_interval || tokens <= 0) return;
    l->lock(l->baton);
    s = slot_for(l->t, key, now, 1);
    if (s) {
        apr_time_t base = s->tok_tat > now ? s->tok_tat : now;
        s->tok_tat = base + tokens * kl->tok_interval;
    }
    l->unlock(l->baton);
}

/* The bucket for `hour`: its own, an empty one, or (when both hold older hours that
 * could not be flushed yet) the newer of them — counts are never dropped. */
static gmcp_usage *bucket_for(gmcp_slot *s, apr_int64_t hour)
{
    int i, newer;
    for (i = 0; i < 2; i++)
        if (s->hour[i] == hour) return &s->usage[i];
    for (i = 0; i < 2; i++)
        if (gmcp_usage_empty(&s->usage[i])) {
            s->hour[i] = hour;
            return &s->usage[i];
        }
    newer = s->hour[1] > s->hour[0];
    return &s->usage[newer];
}

void gmcp_limits_account(gmcp_limits *l, const char *key, apr_time_t now,
                         const gmcp_usage *delta)
{
    apr_int64_t sec = apr_time_sec(now), hour = sec - sec % 3600;
    gmcp_slot *s;
    l->lock(l->baton);
    s = slot_for(l->t, key, now, 1);
    if (s) gmcp_usage_merge(bucket_for(s, hour), delta);
    l->unlock(l->baton);
}

void gmcp_limits_pending(gmcp_limits *l, const char *key, apr_int64_t since, gmcp_usage *out)
{
    gmcp_slot *s;
    int i;
    l->lock(l->baton);
    s = slot_for(l->t, key, 0, 0);
    for (i = 0; s && i < 2; i++)
        if (s->hour[i] >= since - since % 3600) gmcp_usage_merge(out, &s->usage[i]);
    l->unlock(l->baton);
}

apr_array_header_t *gmcp_limits_take(gmcp_limits *l, apr_pool_t *p)
{
    apr_array_header_t *out = apr_array_make(p, 16, sizeof(gmcp_usage_bucket));
    apr_uint32_t i;
    int b;
    l->lock(l->baton);
    for (i = 0; i < l->t->nslots; i++) {
        gmcp_slot *s = &l->t->slots[i];
        if (!s->key[0]) continue;
        for (b = 0; b < 2; b++) {
            gmcp_usage_bucket *u;
            if (gmcp_usage_empty(&s->usage[b])) continue;
            u = apr_array_push(out);
            memcpy(u->key, s->key, sizeof(u->key));
            u->hour = s->hour[b];
            u->usage = s->usage[b];
            memset(&s->usage[b], 0, sizeof(s->usage[b]));
        }
    }
    l->unlock(l->baton);
    return out;
}

void gmcp_limits_give_back(gmcp_limits *l, const apr_array_header_t *buckets)
{
    int i;
    l->lock(l->baton);
    for (i = 0; i < buckets->nelts; i++) {
        const gmcp_usage_bucket *u = &APR_ARRAY_IDX(buckets, i, gmcp_usage_bucket);
        gmcp_slot *s = slot_for(l->t, u->key, apr_time_now(), 1);
        if (s) gmcp_usage_merge(bucket_for(s, u->hour), &u->usage);
    }
    l->unlock(l->baton);
}
