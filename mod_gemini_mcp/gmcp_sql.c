/* gmcp_sql.c — the index of labelled statements across concerns, and the statements of
 * the file records (rows written by gemini_upload_file, expired by gmcpctl cleanup). */
#include "gmcp_sql.h"

#include <string.h>

#define FILE_COLS                                                                 \
    "name, owner, upload_id, display_name, uri, mime_type, size, sha256, state, " \
    "created, expires"

const gmcp_stmt gmcp_file_stmts[] = {
    {"gmcp_file_insert",
     "INSERT INTO gemini_files (" FILE_COLS ") VALUES (%s, %s, %s, %s, %s, %s, %lld, %s, %s, "
     "%lld, %lld)"},
    {"gmcp_file_select", "SELECT " FILE_COLS " FROM gemini_files WHERE name = %s AND owner = %s"},
    {"gmcp_file_by_upload",
     "SELECT " FILE_COLS " FROM gemini_files WHERE upload_id = %s AND owner = %s "
     "AND expires > %lld ORDER BY created DESC"},
    {"gmcp_file_list",
     "SELECT " FILE_COLS " FROM gemini_files WHERE owner = %s "
     "ORDER BY created DESC"},
    {"gmcp_file_delete", "DELETE FROM gemini_files WHERE name = %s AND owner = %s"},
    {"gmcp_file_expired_count", "SELECT COUNT(*) FROM gemini_files WHERE expires < %lld"},
    {"gmcp_file_expired_delete", "DELETE FROM gemini_files WHERE expires < %lld"},
    {NULL, NULL}};

const gmcp_stmt *const gmcp_sql_tables[] = {
    gmcp_store_stmts, gmcp_chat_stmts,         gmcp_key_stmts,  gmcp_upload_stmts,
    gmcp_file_stmts,  gmcp_shared_limit_stmts, gmcp_task_stmts, NULL};

const char *gmcp_sql_lookup(const char *label)
{
    int t;
    for (t = 0; gmcp_sql_tables[t]; t++) {
        const gmcp_stmt *s;
        for (s = gmcp_sql_tables[t]; s->label; s++)
            if (!strcmp(s->label, label)) return s->sql;
    }
    return NULL;
}
