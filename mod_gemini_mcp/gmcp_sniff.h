/* gmcp_sniff.h — an upload's media type from its first bytes (libmagic), and whether it
 * contradicts the type the client declared. */
#ifndef GMCP_SNIFF_H
#define GMCP_SNIFF_H

#include <apr_pools.h>

/* How many leading bytes the check looks at. */
#define GMCP_SNIFF_BYTES 8192

/* The media type of `data` (e.g. "image/png"), or NULL when libmagic could not tell. */
const char *gmcp_sniff(apr_pool_t *p, const void *data, apr_size_t len);

/* Does `sniffed` contradict `declared`? Only a clear finding does: images and PDF must
 * match exactly (after aliases such as image/jpg), audio and video at least in their
 * top-level type; text, generic binary and container formats (zip, ...) never
 * contradict, nor does an empty or generic (application/octet-stream) declaration:
 * about one random file in 1,400 looks like audio or an image to libmagic. */
int gmcp_sniff_conflict(const char *declared, const char *sniffed);

#endif
