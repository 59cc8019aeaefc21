/* gmcp_sql.h — every SQL statement the core runs, by label.
 *
 * Labels are plain SQL identifiers (PostgreSQL runs PREPARE <label>); parameters are
 * apr_dbd's %s placeholders, rewritten per driver. One text serves both drivers: the
 * statements stick to the SQL that SQLite and PostgreSQL share. Where they cannot, a
 * pair of labels ending in _pgsql and _sqlite holds each driver's variant, and the
 * caller picks one by db->pgsql (test/unit/test_statements.c prepares each variant on
 * its own driver only). */
#ifndef GMCP_SQL_H
#define GMCP_SQL_H

typedef struct {
    const char *label;
    const char *sql;
} gmcp_stmt;

/* The SQL for a label, or NULL. */
const char *gmcp_sql_lookup(const char *label);

/* Tables of statements, one per concern; each ends with a NULL label. Each sits with
 * the code that runs it (gmcp_store.c, gmcp_chat.c, gmcp_keys.c, gmcp_uploads.c,
 * gmcp_shared_limits.c, gmcp_tasks.c); the file records, which have no store of their own, in
 * gmcp_sql.c. */
extern const gmcp_stmt gmcp_store_stmts[];
extern const gmcp_stmt gmcp_chat_stmts[];
extern const gmcp_stmt gmcp_key_stmts[];
extern const gmcp_stmt gmcp_upload_stmts[];
extern const gmcp_stmt gmcp_file_stmts[];
extern const gmcp_stmt gmcp_shared_limit_stmts[];
extern const gmcp_stmt gmcp_task_stmts[];

/* Every table above, ending with NULL: what gmcp_sql_lookup searches. */
extern const gmcp_stmt *const gmcp_sql_tables[];

#endif
