/* counts.c - a batch's counter deltas summed in C: per user and per (user, track). */
#include "counts.h"
#include "history.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void counts_hour_day(int64_t ms, int *hour, int *day)
{
        const int64_t day_ms = 86400000;
        int64_t days = ms / day_ms, rem = ms % day_ms;
        if (rem < 0) { /* floor, not truncation, for times before 1970 */
                rem += day_ms;
                days -= 1;
        }
        *hour = (int)(rem / 3600000);
        /* 1970-01-01 was a Thursday (4) */
        int64_t d = (days + 4) % 7;
        *day = (int)(d < 0 ? d + 7 : d);
}

/* One row's keys, lower-cased, and where it came from. */
struct key {
        char user[37], track[37];
        size_t row;
};

static void lower36(char *out, const char *in)
{
        for (size_t i = 0; i < 36; i++)
                out[i] = (char)tolower((unsigned char)in[i]);
        out[36] = '\0';
}

static int key_cmp(const void *a, const void *b)
{
        const struct key *x = a, *y = b;
        int c = memcmp(x->user, y->user, 36);
        return c ? c : memcmp(x->track, y->track, 36);
}

int counts_build(const struct history_row *rows, size_t n, struct counts *out, char *errstr,
                 size_t errstr_size)
{
        memset(out, 0, sizeof(*out));
        if (n == 0)
                return 0;
        struct key *keys = malloc(n * sizeof(*keys));
        out->users = calloc(n, sizeof(*out->users));
        out->pairs = calloc(n, sizeof(*out->pairs));
        if (!keys || !out->users || !out->pairs) {
                snprintf(errstr, errstr_size, "out of memory summing %zu plays", n);
                goto fail;
        }
        for (size_t i = 0; i < n; i++) {
                lower36(keys[i].user, rows[i].user_id);
                lower36(keys[i].track, rows[i].track_id);
                keys[i].row = i;
        }
        qsort(keys, n, sizeof(*keys), key_cmp);
        for (size_t i = 0; i < n; i++) {
                const struct history_row *r = &rows[keys[i].row];
                bool new_user = i == 0 || memcmp(keys[i].user, keys[i - 1].user, 36) != 0;
                if (new_user)
                        memcpy(out->users[out->nusers++].user_id, keys[i].user, 37);
                if (new_user || memcmp(keys[i].track, keys[i - 1].track, 36) != 0) {
                        struct counts_pair *p = &out->pairs[out->npairs++];
                        memcpy(p->user_id, keys[i].user, 37);
                        memcpy(p->track_id, keys[i].track, 37);
                }
                struct counts_user *u = &out->users[out->nusers - 1];
                int hour, day;
                counts_hour_day(r->played_ms, &hour, &day);
                u->plays++;
                u->ms += r->duration_ms;
                u->hour[hour]++;
                u->day[day]++;
                out->pairs[out->npairs - 1].plays++;
        }
        free(keys);
        return 0;
fail:
        free(keys);
        counts_free(out);
        return -1;
}

void counts_free(struct counts *c)
{
        free(c->users);
        free(c->pairs);
        memset(c, 0, sizeof(*c));
}
