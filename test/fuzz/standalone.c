/* standalone.c — replay inputs through a target without libFuzzer (any C compiler):
 *
 *   fuzz_<target> FILE|DIR...
 *
 * Each file (directories: each regular file in them, not recursively) is read whole
 * and passed once to LLVMFuzzerTestOneInput. A crash fails the caller; the exit status
 * is non-zero when an argument cannot be read or nothing at all was run. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f) {
        perror(path);
        return -1;
    }
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        perror(path);
        fclose(f);
        return -1;
    }
    /* An exact-size copy, as libFuzzer hands it over: reads past the end are caught. */
    buf = malloc(n ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: read failed\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    int i, ran = 0, bad = 0;
    LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            bad++;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            DIR *d = opendir(argv[i]);
            struct dirent *e;
            char **names = NULL;
            size_t n = 0, k;
            if (!d) {
                perror(argv[i]);
                bad++;
                continue;
            }
            while ((e = readdir(d))) {
                char *path;
                struct stat fst;
                if (e->d_name[0] == '.') continue;
                path = malloc(strlen(argv[i]) + strlen(e->d_name) + 2);
                if (!path) abort();
                sprintf(path, "%s/%s", argv[i], e->d_name);
                if (stat(path, &fst) != 0 || !S_ISREG(fst.st_mode)) {
                    free(path);
                    continue;
                }
                names = realloc(names, (n + 1) * sizeof(*names));
                if (!names) abort();
                names[n++] = path;
            }
            closedir(d);
            if (n) qsort(names, n, sizeof(*names), cmp); /* a stable replay order */
            for (k = 0; k < n; k++) {
                if (run_file(names[k]))
                    bad++;
                else
                    ran++;
                free(names[k]);
            }
            free(names);
        }
        else if (run_file(argv[i]))
            bad++;
        else
            ran++;
    }
    fprintf(stderr, "%s: replayed %d input(s)%s\n", argv[0], ran, bad ? ", some unreadable" : "");
    return bad || !ran ? 1 : 0;
}
