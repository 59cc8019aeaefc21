/* mod_gemini_mcp_status.c — SetHandler gemini-mcp-status: health for load balancers
 * and orchestrators.
 *
 *   <prefix>/live   200 while httpd answers at all
 *   <prefix>/ready  200 when the database is reachable and its schema current, else 503;
 *                   reports the Gemini circuit breaker's state (shared by all children)
 *   <prefix>/metrics Prometheus text: counters and histograms summed over every child
 *                   process (they live in shared memory), plus gauges read at scrape time
 */
#include "mod_gemini_mcp_status.h"
#include "mod_gemini_mcp_access.h"
#include "mod_gemini_mcp_config.h"
#include "mod_gemini_mcp_db.h"
#include "mod_gemini_mcp_respond.h"
#include "gmcp_breaker.h"

#include <http_protocol.h>
#include <http_request.h>
#include <apr_strings.h>

static const char *breaker_name(unsigned int state)
{
    return state == GMCP_BREAKER_OPEN     ? "open"
        : state == GMCP_BREAKER_HALF_OPEN ? "half-open"
                                          : "closed";
}

/* Database: a connection from mod_dbd's pool, and the schema version on it. */
static json_t *database_state(request_rec *r, int *ok)
{
    gmcp_dbh *h = gmcp_dbh_make(r);
    const char *err = NULL;
    int version = 0;
    json_t *j;
    *ok = 0;
    if (gmcp_dbh_open_raw(h))
        return json_pack("{s:s, s:s}", "status", "unreachable", "message",
                         "no database connection (see the error log)");
    if (gmcp_db_schema_version(&h->db, &version, &err)) {
        gmcp_dbh_close(h);
        return json_pack("{s:s, s:s}", "status", "error", "message",
                         "cannot read the schema version");
    }
    gmcp_dbh_close(h);
    *ok = version >= GMCP_SCHEMA_VERSION;
    j = json_pack("{s:s, s:s, s:i, s:i}", "status", *ok ? "ok" : "schema-behind", "driver",
                  h->db.pgsql ? "pgsql" : "sqlite3", "schema_version", version, "schema_needed",
                  GMCP_SCHEMA_VERSION);
    if (!*ok) json_object_set_new(j, "message", json_string("run 'gmcpctl migrate'"));
    return j;
}

int gmcp_status_handler(request_rec *r)
{
    const char *path, *leaf;
    if (!r->handler || strcmp(r->handler, "gemini-mcp-status") != 0) return DECLINED;
    if (r->method_number != M_GET) {
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD");
        return gmcp_send_json(r, HTTP_METHOD_NOT_ALLOWED, json_pack("{s:s}", "error", "use GET"));
    }
    path = r->uri;
    leaf = strrchr(path, '/');
    leaf = leaf ? leaf + 1 : path;
    if (!strcmp(leaf, "live"))
        return gmcp_send_json(r, HTTP_OK,
                              json_pack("{s:s, s:s}", "status", "live", "version", GMCP_VERSION));
    if (!strcmp(leaf, "ready")) {
        int db_ok = 0;
        json_t *dbj = database_state(r, &db_ok);
        gmcp_breaker_state bs;
        json_t *gem;
        gmcp_breaker_read(&bs);
        gem = json_pack("{s:b, s:s, s:I}", "configured", gmcp_gemini_configured(), "breaker",
                        breaker_name(bs.state), "breaker_opens", (json_int_t)bs.opens);
        /* Gemini being down does not make this server unready: its tools answer
         * plainly and the breaker recovers on its own; the database is essential. */
        return gmcp_send_json(r, db_ok ? HTTP_OK : HTTP_SERVICE_UNAVAILABLE,
                              json_pack("{s:s, s:o, s:o}", "status", db_ok ? "ready" : "unready",
                                        "database", dbj, "gemini", gem));
    }
    if (!strcmp(leaf, "metrics")) {
        const char *text = gmcp_access_metrics_text(r);
        ap_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
        apr_table_setn(r->headers_out, "Cache-Control", "no-store");
        ap_set_content_length(r, (apr_off_t)strlen(text));
        if (!r->header_only) ap_rwrite(text, (int)strlen(text), r);
        return DONE;
    }
    return gmcp_send_json(
        r, HTTP_NOT_FOUND,
        json_pack("{s:s}", "error", "unknown status path: use live, ready or metrics"));
}
