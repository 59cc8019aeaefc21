/* gmcp_sql.h — every SQL statement the core runs, by label.
 *
 * Labels are plain SQL identifiers (PostgreSQL runs PREPARE <label>); parameters are
 * apr_dbd's %s placeholders, rewritten per driver. One text serves both drivers: the
 * statements stick to the SQL that SQLite and PostgreSQL share. */
#ifndef GMCP_SQL_H
#define GMCP_SQL_H

typedef struct {
    const char *label;
    const char *sql;
} gmcp_stmt;

/* The SQL for a label, or NULL. */
const char *gmcp_sql_lookup(const char *label);

/* Tables of statements, one per concern; each ends with a NULL label. */
extern const gmcp_stmt gmcp_store_stmts[];
extern const gmcp_stmt gmcp_chat_stmts[];
extern const gmcp_stmt gmcp_key_stmts[];
extern const gmcp_stmt gmcp_upload_stmts[];
extern const gmcp_stmt gmcp_file_stmts[];

#endif
