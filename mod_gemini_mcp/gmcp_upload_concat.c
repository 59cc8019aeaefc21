/* gmcp_upload_concat.c — the parts of a final upload, and their bytes into its spool
 * file. */
#include "gmcp_upload_concat.h"
#include "gmcp_sniff.h"
#include "gmcp_wire.h"

#include <string.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#define COPY_BLOCK 65536

gmcp_final_result gmcp_concat_plan_make(gmcp_db *db, apr_pool_t *p, const char *owner,
                                        const char *header, apr_int64_t max, gmcp_concat_plan *out)
{
    apr_array_header_t *urls = gmcp_tus_concat_parse(p, header);
    int i;
    memset(out, 0, sizeof(*out));
    out->parts = apr_array_make(p, 8, sizeof(gmcp_upload));
    out->ids = "";
    for (i = 0; urls && i < urls->nelts; i++) {
        const gmcp_concat_part *part = &APR_ARRAY_IDX(urls, i, gmcp_concat_part);
        gmcp_upload *pt = apr_array_push(out->parts);
        apr_status_t rv = part->id ? gmcp_upload_get(db, part->id, owner, pt) : APR_ENOENT;
        if (rv != APR_SUCCESS && !APR_STATUS_IS_ENOENT(rv)) return GMCP_FINAL_DB;
        if (APR_STATUS_IS_ENOENT(rv) || strcmp(pt->concat, "partial") != 0
            || strcmp(pt->state, GMCP_UPLOAD_COMPLETE) != 0) {
            out->bad_url = part->url;
            return GMCP_FINAL_BAD_PART;
        }
        out->total += pt->length;
        out->ids = *out->ids ? apr_pstrcat(p, out->ids, " ", pt->id, NULL) : pt->id;
    }
    if (!out->parts->nelts) return GMCP_FINAL_NO_PARTS;
    if (out->total > max) return GMCP_FINAL_TOO_BIG;
    return GMCP_FINAL_OK;
}

static gmcp_final_result disk_error(gmcp_concat_copy *res, const char *path, apr_status_t rv)
{
    res->path = path;
    res->rv = rv;
    return GMCP_FINAL_DISK;
}

/* One part's file appended to out; the very first bytes of all are sniffed. */
static gmcp_final_result copy_part(apr_pool_t *p, const char *part, apr_file_t *out,
                                   const char *out_path, const char *filetype, gmcp_sha256 *h,
                                   char *buf, gmcp_concat_copy *res)
{
    apr_file_t *in;
    apr_status_t st, fs;
    apr_size_t n;
    gmcp_final_result fate = GMCP_FINAL_OK;
    if ((fs = apr_file_open(&in, part, APR_FOPEN_READ | APR_FOPEN_BINARY, 0, p)) != APR_SUCCESS)
        return disk_error(res, part, fs);
    do {
        n = COPY_BLOCK;
        st = apr_file_read_full(in, buf, n, &n);
        if (n && !res->sniffed && gmcp_sha256_bytes(h) == 0) {
            res->sniffed = gmcp_sniff(p, buf, n < GMCP_SNIFF_BYTES ? n : GMCP_SNIFF_BYTES);
            if (gmcp_sniff_conflict(filetype, res->sniffed)) {
                fate = GMCP_FINAL_CONFLICT;
                break;
            }
        }
        if (n && (fs = apr_file_write_full(out, buf, n, NULL)) != APR_SUCCESS) {
            fate = disk_error(res, out_path, fs);
            break;
        }
        gmcp_sha256_update(h, buf, n);
    } while (st == APR_SUCCESS);
    apr_file_close(in);
    if (fate == GMCP_FINAL_OK && st != APR_EOF) fate = disk_error(res, part, st);
    return fate;
}

gmcp_final_result gmcp_concat_copy_parts(apr_pool_t *p, const char *dir,
                                         const gmcp_concat_plan *plan, const char *filetype,
                                         const char *out_path, gmcp_sha256 *h,
                                         gmcp_concat_copy *res)
{
    char *buf = apr_palloc(p, COPY_BLOCK);
    apr_file_t *out;
    apr_status_t fs;
    gmcp_final_result fate = GMCP_FINAL_OK;
    int i;
    memset(res, 0, sizeof(*res));
    if ((fs = apr_file_open(&out, out_path,
                            APR_FOPEN_WRITE | APR_FOPEN_CREATE | APR_FOPEN_TRUNCATE
                                | APR_FOPEN_BINARY,
                            APR_FPROT_UREAD | APR_FPROT_UWRITE, p))
        != APR_SUCCESS)
        return disk_error(res, out_path, fs);
    for (i = 0; fate == GMCP_FINAL_OK && i < plan->parts->nelts; i++)
        fate = copy_part(
            p, gmcp_upload_spool_path(p, dir, APR_ARRAY_IDX(plan->parts, i, gmcp_upload).id), out,
            out_path, filetype, h, buf, res);
    if (fate == GMCP_FINAL_OK && (fs = apr_file_datasync(out)) != APR_SUCCESS)
        fate = disk_error(res, out_path, fs);
    apr_file_close(out);
    if (fate == GMCP_FINAL_CONFLICT) apr_file_remove(out_path, p);
    return fate;
}
