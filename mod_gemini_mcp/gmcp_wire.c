/* gmcp_wire.c — small grammars of request headers and URLs (see gmcp_wire.h). */
#include "gmcp_wire.h"
#include "gmcp_util.h"

#include <string.h>
#include <apr_lib.h>
#include <apr_strings.h>

apr_status_t gmcp_tus_offset_parse(const char *s, apr_int64_t *out)
{
    apr_uint64_t v;
    if (!s || !*s || (s[0] == '0' && s[1]) || gmcp_parse_u64(s, &v) || v > (apr_uint64_t)1 << 62)
        return APR_EINVAL;
    *out = (apr_int64_t)v;
    return APR_SUCCESS;
}

int gmcp_upload_id_ok(const char *id)
{
    apr_size_t i;
    if (!id || strlen(id) != 22) return 0;
    for (i = 0; i < 22; i++)
        if (!(apr_isalnum(id[i]) || id[i] == '-' || id[i] == '_')) return 0;
    return 1;
}

const char *gmcp_url_last_segment(apr_pool_t *p, const char *url)
{
    const char *end = url + strlen(url), *s;
    while (end > url && end[-1] == '/') end--;
    s = end;
    while (s > url && s[-1] != '/') s--;
    return apr_pstrndup(p, s, (apr_size_t)(end - s));
}

gmcp_concat_kind gmcp_tus_concat_kind(const char *header)
{
    if (!header) return GMCP_CONCAT_NONE;
    if (!strncmp(header, "final;", 6)) return GMCP_CONCAT_FINAL;
    if (!strcmp(header, "partial")) return GMCP_CONCAT_PARTIAL;
    return GMCP_CONCAT_INVALID;
}

apr_array_header_t *gmcp_tus_concat_parse(apr_pool_t *p, const char *header)
{
    apr_array_header_t *parts;
    char *copy, *url, *last = NULL;
    if (gmcp_tus_concat_kind(header) != GMCP_CONCAT_FINAL) return NULL;
    parts = apr_array_make(p, 8, sizeof(gmcp_concat_part));
    copy = apr_pstrdup(p, header + 6);
    for (url = apr_strtok(copy, " ", &last); url; url = apr_strtok(NULL, " ", &last)) {
        gmcp_concat_part *pt = apr_array_push(parts);
        const char *id = gmcp_url_last_segment(p, url);
        pt->url = url;
        pt->id = gmcp_upload_id_ok(id) ? id : NULL;
    }
    return parts;
}

apr_status_t gmcp_last_event_id_parse(apr_pool_t *p, const char *value, const char **stream_id,
                                      apr_uint64_t *seq)
{
    const char *dot;
    apr_uint64_t v;
    if (!value || !(dot = strrchr(value, '.')) || gmcp_parse_u64(dot + 1, &v) != APR_SUCCESS)
        return APR_EINVAL;
    *seq = v;
    *stream_id = apr_pstrndup(p, value, (apr_size_t)(dot - value));
    return APR_SUCCESS;
}
