/* fuzz_state_open — an MRTR requestState coming back from a client (gmcp_state_open)
 * with a fixed key. Byte 0 chooses the form, the rest is the payload:
 *   0 mod 3: the payload is the sealed value as sent (a forgery: must not verify
 *            unless it is a real seal);
 *   1 mod 3: the payload is the base64url body, sealed here with the right tag, so the
 *            decoding behind the MAC check is reached;
 *   2 mod 3: the payload is the JSON itself, encoded and sealed here.
 * Anything that opens is sealed again and must open to an equal value. */
#include "fuzz.h"
#include "gmcp_stateless.h"
#include "gmcp_util.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

static const unsigned char key[32] = "fuzz-key-0123456789abcdef-fuzz!";
static const char *const binding = "gemini_chat\nprincipal:alice";

static const char *tag(apr_pool_t *p, const char *body)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *msg = apr_pstrcat(p, binding, "\n", body, NULL);
    if (!HMAC(EVP_sha256(), key, (int)sizeof(key), (const unsigned char *)msg, strlen(msg), md,
              &mdlen))
        abort();
    return gmcp_b64url_encode(p, md, mdlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    const char *payload, *sealed;
    json_t *state = NULL;
    apr_status_t rv;
    int mode;
    if (size < 1) return 0;
    p = fuzz_pool();
    mode = data[0] % 3;
    payload = fuzz_cstr(p, data + 1, size - 1);
    if (mode == 0)
        sealed = payload;
    else {
        const char *body =
            mode == 1 ? payload : gmcp_b64url_encode(p, (const unsigned char *)data + 1, size - 1);
        sealed = apr_pstrcat(p, body, ".", tag(p, body), NULL);
    }
    rv = gmcp_state_open(p, key, sizeof(key), binding, sealed, &state);
    FUZZ_ASSERT((rv == APR_SUCCESS) == (state != NULL));
    FUZZ_ASSERT(rv == APR_SUCCESS || rv == APR_EINVAL);
    if (state) {
        json_t *again = NULL;
        const char *resealed = gmcp_state_seal(p, key, sizeof(key), binding, state);
        FUZZ_ASSERT(resealed);
        FUZZ_ASSERT(gmcp_state_open(p, key, sizeof(key), binding, resealed, &again) == APR_SUCCESS);
        FUZZ_ASSERT(json_equal(state, again));
        /* Bound elsewhere, the same seal must not open. */
        json_decref(again);
        again = NULL;
        FUZZ_ASSERT(gmcp_state_open(p, key, sizeof(key), "other\nprincipal:alice", resealed, &again)
                        == APR_EINVAL
                    && !again);
        json_decref(state);
    }
    apr_pool_destroy(p);
    return 0;
}
