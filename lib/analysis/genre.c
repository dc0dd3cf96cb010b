/* genre.c - genre by weighted k-nearest neighbours over standardized feature vectors of tracks
 * whose genre the catalog knows. */
#include "analysis/analysis.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Member, offset, scale: each dimension lands roughly in 0-1 so no single
 * unit (Hz, BPM) dominates the distance. */
static const struct {
        const char *name;
        double offset, scale;
} dims[QZ_ANALYSIS_GENRE_DIMS] = {
    {"tempo_bpm", 60.0, 120.0},   {"energy", 0.0, 1.0},        {"loudness_lufs", -40.0, 35.0},
    {"centroid_hz", 0.0, 3000.0}, {"rolloff_hz", 0.0, 6000.0}, {"flatness", 0.0, 0.2},
    {"onset_rate", 0.0, 8.0},     {"low_ratio", 0.0, 1.0},     {"mode", 0.0, 1.0},
};

int qz_analysis_genre_vector(const json_t *features, double v[QZ_ANALYSIS_GENRE_DIMS])
{
        for (int i = 0; i < QZ_ANALYSIS_GENRE_DIMS; i++) {
                json_t *j = json_object_get(features, dims[i].name);
                double x;
                if (json_is_string(j))
                        x = strcmp(json_string_value(j), "minor") == 0 ? 1.0 : 0.0;
                else if (json_is_number(j))
                        x = json_number_value(j);
                else
                        return -1;
                v[i] = (x - dims[i].offset) / dims[i].scale;
        }
        return 0;
}

struct hit {
        double d;
        size_t i;
};

static int by_distance(const void *a, const void *b)
{
        double x = ((const struct hit *)a)->d, y = ((const struct hit *)b)->d;
        return x < y ? -1 : x > y;
}

int qz_analysis_genre_knn(const double v[QZ_ANALYSIS_GENRE_DIMS],
                          const struct qz_analysis_labelled *refs, size_t n, int k,
                          const char **genre, double *confidence)
{
        if (n == 0)
                return -1;
        struct hit *h = malloc(sizeof(*h) * n);
        if (!h)
                return -1;
        for (size_t i = 0; i < n; i++) {
                double s = 0;
                for (int d = 0; d < QZ_ANALYSIS_GENRE_DIMS; d++)
                        s += (v[d] - refs[i].v[d]) * (v[d] - refs[i].v[d]);
                h[i] = (struct hit){sqrt(s), i};
        }
        qsort(h, n, sizeof(*h), by_distance);
        size_t kk = k > 0 && (size_t)k < n ? (size_t)k : n;
        double total = 0, best = -1;
        *genre = NULL;
        for (size_t a = 0; a < kk; a++)
                total += 1.0 / (h[a].d + 1e-3);
        for (size_t a = 0; a < kk; a++) {
                const char *g = refs[h[a].i].genre;
                double w = 0;
                for (size_t b = 0; b < kk; b++)
                        if (strcmp(refs[h[b].i].genre, g) == 0)
                                w += 1.0 / (h[b].d + 1e-3);
                if (w > best) {
                        best = w;
                        *genre = g;
                }
        }
        *confidence = total > 0 ? best / total : 0;
        free(h);
        return 0;
}
