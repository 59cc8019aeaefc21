/* fuzz.h — shared by the libFuzzer targets: one-time APR/jansson setup in
 * LLVMFuzzerInitialize, a per-input subpool, and helpers to turn bytes into the
 * C strings the parsers take. Each target defines LLVMFuzzerTestOneInput. */
#ifndef GMCP_FUZZ_H
#define GMCP_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <jansson.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static apr_pool_t *fuzz_root;

/* Optional per-target one-time setup, run from LLVMFuzzerInitialize. */
#ifdef FUZZ_SETUP
static void FUZZ_SETUP(apr_pool_t *root);
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    if (apr_initialize() != APR_SUCCESS) abort();
    if (apr_pool_create(&fuzz_root, NULL) != APR_SUCCESS) abort();
    json_object_seed(1);                  /* deterministic hash order: reproducible runs */
#ifdef FUZZ_SETUP
    FUZZ_SETUP(fuzz_root);
#endif
    return 0;
}

static inline apr_pool_t *fuzz_pool(void)
{
    apr_pool_t *p;
    if (apr_pool_create(&p, fuzz_root) != APR_SUCCESS) abort();
    return p;
}

/* The input as a C string (a header value or file body: bytes after a NUL are cut,
 * as they would be by httpd's header table). */
static inline char *fuzz_cstr(apr_pool_t *p, const uint8_t *data, size_t size)
{
    return apr_pstrmemdup(p, (const char *)data, size);
}

/* Fail loudly on a broken invariant: libFuzzer records the input as a crash. */
#define FUZZ_ASSERT(cond) do { \
    if (!(cond)) { fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, \
                           __FILE__, __LINE__); abort(); } \
} while (0)

#endif
