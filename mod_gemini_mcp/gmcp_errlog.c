/* gmcp_errlog.c — the core's log callback (see gmcp_errlog.h). */
#include "gmcp_errlog.h"

#include <stdarg.h>
#include <stdio.h>

static gmcp_elog_print_fn *printer;
static gmcp_elog_level_fn *level_on;
static void *printer_baton;
static __thread void *thread_ctx;

void gmcp_elog_set(gmcp_elog_print_fn *print, gmcp_elog_level_fn *enabled, void *baton)
{
    printer = print;
    level_on = enabled;
    printer_baton = baton;
}

void gmcp_elog(const char *file, int line, gmcp_elog_level level, apr_status_t rv, const char *tag,
               const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    if (!printer || (level_on && !level_on(level, printer_baton))) return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    printer(file, line, level, rv, tag, msg, printer_baton);
}

void gmcp_elog_context_set(void *ctx) { thread_ctx = ctx; }

void *gmcp_elog_context(void) { return thread_ctx; }
