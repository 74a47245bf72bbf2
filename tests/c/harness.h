/*
 * harness.h: a minimal C test harness for libr1's tests.
 *
 * A test is `static void test_x(void)` registered in a TESTS table; CHECK records a
 * failure and carries on, REQUIRE returns from the test. main() runs the tests named
 * on the command line (or all) and prints one "ok"/"FAIL" line per test and a
 * closing "<binary>: N passed, M failed" line; the exit status is 1 on any failure.
 */
#ifndef R1_TEST_HARNESS_H
#define R1_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

static int h_failed_checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            h_failed_checks++;                                                         \
        }                                                                              \
    } while (0)

#define REQUIRE(cond)                                                                    \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "    %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, #cond); \
            h_failed_checks++;                                                           \
            return;                                                                      \
        }                                                                                \
    } while (0)

#ifdef R1_H
/* CHECK that a call returned the expected status; prints the last error otherwise. */
#define CHECK_STATUS(call, want)                                                         \
    do {                                                                                 \
        int h_got = (int)(call);                                                         \
        if (h_got != (int)(want)) {                                                      \
            fprintf(stderr, "    %s:%d: %s returned %d, wanted %s (%d); last error: %s\n", \
                    __FILE__, __LINE__, #call, h_got, #want, (int)(want),                \
                    r1_last_error_message());                                            \
            h_failed_checks++;                                                           \
        }                                                                                \
    } while (0)

#define REQUIRE_STATUS(call, want)                                                       \
    do {                                                                                 \
        int h_got = (int)(call);                                                         \
        if (h_got != (int)(want)) {                                                      \
            fprintf(stderr, "    %s:%d: %s returned %d, wanted %s (%d); last error: %s\n", \
                    __FILE__, __LINE__, #call, h_got, #want, (int)(want),                \
                    r1_last_error_message());                                            \
            h_failed_checks++;                                                           \
            return;                                                                      \
        }                                                                                \
    } while (0)

#endif /* R1_H */

static int h_run(const char *binary, const test_case *tests, size_t n, int argc, char **argv) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1) {
            int wanted = 0;
            for (int a = 1; a < argc; a++)
                if (strcmp(argv[a], tests[i].name) == 0) wanted = 1;
            if (!wanted) continue;
        }
        int before = h_failed_checks;
        fprintf(stderr, "  run  %s\n", tests[i].name);
        tests[i].fn();
        if (h_failed_checks == before) {
            printf("ok   %s\n", tests[i].name);
            passed++;
        } else {
            printf("FAIL %s\n", tests[i].name);
            failed++;
        }
        fflush(stdout);
    }
    printf("%s: %d passed, %d failed\n", binary, passed, failed);
    return failed ? 1 : 0;
}

#define H_MAIN(binary, table)                                                  \
    int main(int argc, char **argv) {                                          \
        return h_run(binary, table, sizeof table / sizeof table[0], argc, argv); \
    }

/* Like H_MAIN, with a teardown run after the tests (shared fixtures). */
#define H_MAIN_TEARDOWN(binary, table, teardown)                                   \
    int main(int argc, char **argv) {                                              \
        int h_rc = h_run(binary, table, sizeof table / sizeof table[0], argc, argv); \
        teardown();                                                                \
        return h_rc;                                                               \
    }

#endif
