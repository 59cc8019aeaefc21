/* gmcp_sql.c — the index of labelled statements across concerns. */
#include "gmcp_sql.h"

#include <string.h>

static const gmcp_stmt *const TABLES[] = {
    gmcp_store_stmts,
    gmcp_chat_stmts,
    gmcp_key_stmts,
    gmcp_upload_stmts,
    gmcp_file_stmts,
    NULL
};

const char *gmcp_sql_lookup(const char *label)
{
    int t;
    for (t = 0; TABLES[t]; t++) {
        const gmcp_stmt *s;
        for (s = TABLES[t]; s->label; s++)
            if (!strcmp(s->label, label)) return s->sql;
    }
    return NULL;
}
