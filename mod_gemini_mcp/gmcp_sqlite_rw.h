/* gmcp_sqlite_rw.h — SQLite connections are read-write or not made at all.
 *
 * When SQLite cannot open a database (or its WAL) for writing — the file is immutable,
 * its filesystem was remounted read-only after an error, its mode was changed — it
 * quietly opens it read-only instead. mod_dbd pools such a connection for the life of
 * the process, so one made while the database was briefly unwritable keeps failing
 * every write ("attempt to write a readonly database") long after the database is
 * writable again. Registered as SQLite's default VFS, this refuses those opens of our
 * database
 * (SQLITE_READONLY): the request that needed the connection gets a clear error, and the
 * next one makes a good connection once the database can be written. */
#ifndef GMCP_SQLITE_RW_H
#define GMCP_SQLITE_RW_H

#include <apr_errno.h>
#include <apr_pools.h>
#include <apr_tables.h>

/* For the database files in `paths` (and their WALs), before any connection is made;
 * idempotent. Other SQLite databases the process opens (another module's) keep SQLite's
 * fallback. Undone when `p` is cleared (httpd clears the configuration pool before it
 * unloads the module on a restart: SQLite must not keep a VFS whose code is gone).
 * APR_SUCCESS, or APR_EGENERAL when SQLite has no default VFS to wrap. */
apr_status_t gmcp_sqlite_rw_only(apr_pool_t *p, const apr_array_header_t *paths);

#endif
