/* derive.c - the 0-1 heuristics (energy, valence, danceability, acousticness,
 * instrumentalness), mood from the valence/arousal quadrant, and the features as JSON. */
#include "analysis/analysis.h"

#include <math.h>

static double clamp01(double x)
{
        return x < 0 ? 0 : x > 1 ? 1 : isfinite(x) ? x : 0;
}

static void tag(struct qz_analysis_features *f, const char *t)
{
        if (f->n_mood_tags < QZ_ANALYSIS_MAX_TAGS)
                f->mood_tags[f->n_mood_tags++] = t;
}

void qz_analysis_derive(struct qz_analysis_features *f)
{
        /* Energy (arousal): loudness dominates (-23 LUFS -> 0, -14 -> 1; the
         * scale was fitted on the demo set, docs/analysis.md), with onset
         * density and noisiness (drums, distortion) adding intensity. */
        double loud = clamp01((f->loudness_lufs + 23.0) / 9.0);
        double busy = clamp01(f->onset_rate / 6.0);
        double noisy = clamp01(f->flatness * 8.0);
        f->energy = clamp01(0.80 * loud + 0.10 * busy + 0.10 * noisy);

        /* Valence: mode (weighted by how sure we are), tempo and brightness,
         * the three cues music-psychology studies find most consistent. */
        double mode =
            f->minor ? 0.5 - 0.5 * f->mode_confidence * 4 : 0.5 + 0.5 * f->mode_confidence * 4;
        double fast = clamp01((f->tempo_bpm - 60.0) / 120.0);
        double bright = clamp01((f->centroid_hz - 500.0) / 2500.0);
        f->valence = clamp01(0.55 * clamp01(mode) + 0.25 * fast + 0.20 * bright);

        /* Danceability: a clear, regular pulse near dance tempos. */
        double near = f->tempo_bpm > 0 ? clamp01(1.0 - fabs(f->tempo_bpm - 120.0) / 60.0) : 0;
        f->danceability =
            clamp01(0.45 * f->pulse_clarity + 0.30 * near + 0.25 * f->beat_confidence);

        /* Acousticness: acoustic recordings are darker and less noisy than
         * produced electronic/distorted material. */
        f->acousticness = clamp01(1.0 - 0.6 * clamp01((f->centroid_hz - 800.0) / 3000.0) -
                                  0.4 * clamp01(f->flatness * 10.0));

        /* Instrumentalness: no voice model; sustained harmonic content with a
         * low zero-crossing rate reads as instrumental. A weak heuristic. */
        f->instrumentalness =
            clamp01(1.0 - clamp01((f->zcr - 0.02) / 0.15) * 0.6 - clamp01(f->flatness * 5.0) * 0.4);

        f->n_mood_tags = 0;
        double dv = f->valence - 0.5, de = f->energy - 0.5;
        if (dv >= 0 && de >= 0) {
                f->mood = "happy";
                tag(f, "upbeat");
                if (f->energy > 0.75)
                        tag(f, "energetic");
        } else if (dv >= 0) {
                f->mood = "calm";
                tag(f, "relaxed");
                tag(f, "peaceful");
        } else if (de >= 0) {
                f->mood = "energetic";
                tag(f, "intense");
                tag(f, "dark");
        } else {
                f->mood = "sad";
                tag(f, "melancholic");
        }
        if (f->danceability > 0.7)
                tag(f, "danceable");
        if (f->acousticness > 0.7)
                tag(f, "acoustic");
        f->mood_confidence = clamp01(2.0 * sqrt(dv * dv + de * de) / sqrt(0.5));
}

json_t *qz_analysis_features_json(const struct qz_analysis_features *f)
{
        json_t *tags = json_array();
        for (size_t i = 0; i < f->n_mood_tags; i++)
                json_array_append_new(tags, json_string(f->mood_tags[i]));
        static const char *const keys[12] = {"C",  "C#", "D",  "D#", "E",  "F",
                                             "F#", "G",  "G#", "A",  "A#", "B"};
        return json_pack(
            "{s:f, s:f, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:s, "
            "s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:s?, s:o, s:f, s:s}",
            "seconds", f->seconds, "file_seconds", f->file_seconds, "sample_rate", f->sample_rate,
            "tempo_bpm", f->tempo_bpm, "beat_confidence", f->beat_confidence, "loudness_lufs",
            f->loudness_lufs, "loudness_range", f->loudness_range, "rms_db", f->rms_db,
            "onset_rate", f->onset_rate, "centroid_hz", f->centroid_hz, "rolloff_hz", f->rolloff_hz,
            "flatness", f->flatness, "zcr", f->zcr, "low_ratio", f->low_ratio, "pulse_clarity",
            f->pulse_clarity, "key", keys[f->key % 12], "mode", f->minor ? "minor" : "major",
            "mode_confidence", f->mode_confidence, "energy", f->energy, "valence", f->valence,
            "danceability", f->danceability, "acousticness", f->acousticness, "instrumentalness",
            f->instrumentalness, "mood", f->mood, "mood_tags", tags, "mood_confidence",
            f->mood_confidence, "method",
            "heuristic: energy valence danceability acousticness instrumentalness mood");
}
