/* gmcp_errlog.h — how the httpd-free core reports failures to the admin.
 *
 * The core has no error log of its own: the module installs a printer that writes
 * through ap_log_rerror/ap_log_error (with the request of the calling thread when the
 * glue has named one), gmcpctl one that writes to stderr. Until a printer is set,
 * nothing is printed. Every database, disk and upstream failure is logged once, where
 * it is detected, with its apr_status_t or driver message and a tag of our own
 * ("GMCP0201"), never a number from httpd's AH space and never a secret. */
#ifndef GMCP_ERRLOG_H
#define GMCP_ERRLOG_H

#include <apr_errno.h>

typedef enum { GMCP_ELOG_ERR = 0, GMCP_ELOG_WARN, GMCP_ELOG_INFO, GMCP_ELOG_DEBUG } gmcp_elog_level;

#define GMCP_ELOG_MARK __FILE__, __LINE__

/* `msg` is the formatted line, without the tag. */
typedef void gmcp_elog_print_fn(const char *file, int line, gmcp_elog_level level, apr_status_t rv,
                                const char *tag, const char *msg, void *baton);
/* Whether `level` would be printed at all (may be NULL: everything is). */
typedef int gmcp_elog_level_fn(gmcp_elog_level level, void *baton);

void gmcp_elog_set(gmcp_elog_print_fn *print, gmcp_elog_level_fn *enabled, void *baton);

void gmcp_elog(const char *file, int line, gmcp_elog_level level, apr_status_t rv, const char *tag,
               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* The context of lines logged on this thread (the glue's request_rec), set around
 * a handler and cleared by the same thread before it returns. */
void gmcp_elog_context_set(void *ctx);
void *gmcp_elog_context(void);

#endif
