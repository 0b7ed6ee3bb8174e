/* Long double arithmetic for INCRBYFLOAT and HINCRBYFLOAT, done as Redis
 * does it (util.c: string2ld, ld2string with LD_STR_HUMAN), with the C
 * library's strtold and printf, so that sums and their text match
 * redis-server's on the same platform: 80-bit x87 extended precision on
 * x86-64, IEEE quad on aarch64. Rust has no long double; the values cross
 * the boundary by pointer, as opaque 16-byte cells (src/resp/ldouble.rs). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Redis' MAX_LONG_DOUBLE_CHARS: the longest text it parses or prints. */
#define FK_LD_MAX_CHARS (5 * 1024)

_Static_assert(sizeof(long double) <= 16, "a long double fits the Rust cell");

/* Parses `len` bytes as a long double: 1 and the value in `*out`, or 0 where
 * Redis' string2ld refuses (empty, too long, leading space, trailing bytes,
 * overflow, underflow to zero, NaN). */
int fk_ld_parse(const char *s, size_t len, long double *out) {
    char buf[FK_LD_MAX_CHARS];
    char *end;
    long double v;
    if (len == 0 || len >= sizeof(buf)) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    v = strtold(buf, &end);
    if (isspace((unsigned char)buf[0]) || end[0] != '\0' || (size_t)(end - buf) != len ||
        (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO)) ||
        errno == EINVAL || isnan(v))
        return 0;
    *out = v;
    return 1;
}

/* `*a + *b` into `*out`. */
void fk_ld_add(const long double *a, const long double *b, long double *out) {
    *out = *a + *b;
}

/* Whether `*a` is neither infinite nor NaN. */
int fk_ld_is_finite(const long double *a) {
    return isfinite(*a) ? 1 : 0;
}

/* A finite `*a` as Redis' ld2string(LD_STR_HUMAN) prints it: "%.17Lf", then
 * the zeros after the point and a bare point cut, "-0" made "0". Returns the
 * length written to `buf` (not terminated), or 0 if `cap` is too small. */
size_t fk_ld_format_human(const long double *a, char *buf, size_t cap) {
    int l = snprintf(buf, cap, "%.17Lf", *a);
    if (l < 0 || (size_t)l + 1 > cap) return 0;
    if (strchr(buf, '.') != NULL) {
        char *p = buf + l - 1;
        while (*p == '0') {
            p--;
            l--;
        }
        if (*p == '.') l--;
    }
    if (l == 2 && buf[0] == '-' && buf[1] == '0') {
        buf[0] = '0';
        l = 1;
    }
    return (size_t)l;
}
