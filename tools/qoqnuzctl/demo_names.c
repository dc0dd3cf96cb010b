/* demo_names.c - believable generated names for demo artists, albums, tracks and users. */
#include "demo.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define COUNT(a)   (sizeof(a) / sizeof((a)[0]))
#define PICK(r, a) ((a)[qz_demo_rng_below((r), (uint32_t)COUNT(a))])

const char *const qz_demo_genre_names[QZ_DEMO_NGENRES] = {
    "rock",  "pop",  "hip-hop", "electronic", "jazz",    "classical", "metal",
    "folk",  "r&b",  "country", "indie",      "ambient", "latin",     "reggae",
    "blues", "soul", "punk",    "techno",     "house",   "k-pop",
};

enum {
        G_ROCK,
        G_POP,
        G_HIPHOP,
        G_ELECTRONIC,
        G_JAZZ,
        G_CLASSICAL,
        G_METAL,
        G_FOLK,
        G_RNB,
        G_COUNTRY,
        G_INDIE,
        G_AMBIENT,
        G_LATIN,
        G_REGGAE,
        G_BLUES,
        G_SOUL,
        G_PUNK,
        G_TECHNO,
        G_HOUSE,
        G_KPOP,
};

static const char *const first_names[] = {
    "Ada",    "Alex",  "Amara",  "Ana",   "Ben",    "Camila", "Carlos", "Chloe", "Dara",  "David",
    "Elena",  "Eli",   "Emma",   "Farah", "Felix",  "Grace",  "Hana",   "Hugo",  "Ines",  "Isaac",
    "Jade",   "James", "Jin",    "Jonas", "Kai",    "Kira",   "Leila",  "Leo",   "Lina",  "Lucas",
    "Maya",   "Mateo", "Mina",   "Nadia", "Nico",   "Noah",   "Nora",   "Omar",  "Oscar", "Priya",
    "Rafael", "Rosa",  "Ruby",   "Sam",   "Sara",   "Sofia",  "Theo",   "Tomas", "Una",   "Vera",
    "Wes",    "Yara",  "Yusuf",  "Zoe",   "Darius", "Mira",   "Soren",  "Ivy",   "Ezra",  "Lola",
    "Parisa", "Arash", "Shirin", "Kian",
};

static const char *const last_names[] = {
    "Abbott",   "Alvarez", "Barnes",   "Bauer",   "Castillo", "Chen",   "Cole",   "Diaz",
    "Dubois",   "Ellis",   "Farahani", "Fischer", "Garcia",   "Hale",   "Hansen", "Ito",
    "Jensen",   "Kaur",    "Kim",      "Klein",   "Larsen",   "Lopez",  "Moreau", "Morgan",
    "Nakamura", "Novak",   "Okafor",   "Park",    "Patel",    "Quinn",  "Rahimi", "Reyes",
    "Rossi",    "Santos",  "Schmidt",  "Silva",   "Sousa",    "Tanaka", "Torres", "Vance",
    "Wagner",   "Walsh",   "Weber",    "Yilmaz",  "Young",    "Zhang",  "Moradi", "Hart",
};

static const char *const adjectives[] = {
    "Velvet", "Electric", "Silent", "Golden",    "Broken",  "Hollow",   "Crimson",
    "Neon",   "Paper",    "Wild",   "Quiet",     "Burning", "Midnight", "Silver",
    "Lonely", "Restless", "Blue",   "Wandering", "Frozen",  "Bright",   "Distant",
    "Sunken", "Secret",   "Glass",  "Faded",     "Endless", "Gentle",   "Savage",
    "Honey",  "Static",   "Lucky",  "Northern",  "Copper",  "Tender",   "Shallow",
};

static const char *const nouns[] = {
    "Heart",   "River",  "Echo",   "Signal",  "Garden",  "Mirror", "Horizon", "Ocean",
    "Fire",    "Shadow", "Light",  "Summer",  "Winter",  "Storm",  "Dream",   "Machine",
    "Ghost",   "Harbor", "Desert", "Thunder", "Moon",    "City",   "Stone",   "Wave",
    "Road",    "Window", "Season", "Orbit",   "Valley",  "Bloom",  "Tide",    "Satellite",
    "Lantern", "Canyon", "Memory", "Fever",   "Compass", "Meadow", "Skyline", "Rain",
};

static const char *const plural_nouns[] = {
    "Wolves", "Strangers", "Lanterns", "Satellites", "Foxes",    "Pilots",  "Tides",
    "Ravens", "Kings",     "Dreamers", "Machines",   "Sparrows", "Giants",  "Echoes",
    "Rebels", "Comets",    "Saints",   "Drifters",   "Magnets",  "Orchids", "Wires",
};

static const char *const syllables[] = {
    "ka", "lo", "mi", "ra", "ne", "so", "vi", "ta", "zu", "re", "an", "el",
    "or", "ix", "qu", "ny", "da", "fe", "lu", "mo", "sa", "tr", "vo", "ze",
};

static const char *const metal_words[] = {
    "Iron", "Obsidian", "Black", "Grave", "Storm", "Blood", "Ash", "Doom", "Bone", "Night",
};

static const char *const metal_tails[] = {
    "Throne", "Legion", "Serpent", "Altar", "Covenant", "Winter", "Eclipse", "Pyre",
};

static const char *const ensembles[] = {"Quartet", "Ensemble", "Trio", "Orchestra", "Consort"};
static const char *const jazz_groups[] = {"Trio", "Quartet", "Quintet", "Sextet", "Collective"};
static const char *const places[] = {"the Roxy",   "Montreux",  "the Forum",    "Budokan",
                                     "the Apollo", "Red Rocks", "the Fillmore", "Blue Note"};
static const char *const verbs[] = {"Dancing", "Running", "Falling", "Waiting", "Drifting",
                                    "Burning", "Calling", "Chasing", "Holding", "Dreaming"};
static const char *const preps[] = {"in the",     "through the", "under the",
                                    "across the", "into the",    "beyond the"};
static const char *const track_tails[] = {" (Remix)",     " (Acoustic)", " (Live)", " (Radio Edit)",
                                          " (Interlude)", " Pt. II",     " (Demo)"};

/* A pronounceable made-up word, capitalised: "Zuravi". */
static void made_up_word(struct qz_demo_rng *r, int n_syl, char *out, size_t out_size)
{
        size_t len = 0;
        out[0] = '\0';
        for (int i = 0; i < n_syl && len + 3 < out_size; i++) {
                const char *s = PICK(r, syllables);
                len += (size_t)snprintf(out + len, out_size - len, "%s", s);
        }
        out[0] = (char)toupper((unsigned char)out[0]);
}

void qz_demo_name_artist(struct qz_demo_rng *r, int genre, char *out, size_t out_size)
{
        char w[32];
        uint32_t v = qz_demo_rng_below(r, 4);
        switch (genre) {
        case G_HIPHOP:
                made_up_word(r, 2, w, sizeof(w));
                if (v == 0)
                        snprintf(out, out_size, "Lil %s", w);
                else if (v == 1)
                        snprintf(out, out_size, "MC %s", w);
                else if (v == 2)
                        snprintf(out, out_size, "%s %s", w, PICK(r, nouns));
                else
                        snprintf(out, out_size, "Young %s", PICK(r, first_names));
                return;
        case G_ELECTRONIC:
        case G_TECHNO:
        case G_HOUSE:
        case G_AMBIENT:
                made_up_word(r, 2 + (int)qz_demo_rng_below(r, 2), w, sizeof(w));
                if (v == 0)
                        snprintf(out, out_size, "DJ %s", w);
                else if (v == 1)
                        snprintf(out, out_size, "%s %s", PICK(r, adjectives), PICK(r, nouns));
                else
                        snprintf(out, out_size, "%s", w);
                return;
        case G_CLASSICAL:
                if (v < 2)
                        snprintf(out, out_size, "%s %s", PICK(r, first_names), PICK(r, last_names));
                else
                        snprintf(out, out_size, "%s %s", PICK(r, last_names), PICK(r, ensembles));
                return;
        case G_JAZZ:
                if (v < 2)
                        snprintf(out, out_size, "%s %s %s", PICK(r, first_names),
                                 PICK(r, last_names), PICK(r, jazz_groups));
                else
                        snprintf(out, out_size, "%s %s", PICK(r, first_names), PICK(r, last_names));
                return;
        case G_METAL:
                snprintf(out, out_size, "%s %s", PICK(r, metal_words), PICK(r, metal_tails));
                return;
        case G_KPOP:
                made_up_word(r, 2, w, sizeof(w));
                for (char *p = w; *p; p++)
                        *p = (char)toupper((unsigned char)*p);
                if (v == 0)
                        snprintf(out, out_size, "%s%u", w, 1 + qz_demo_rng_below(r, 9));
                else
                        snprintf(out, out_size, "%s", w);
                return;
        case G_LATIN:
        case G_REGGAE:
                if (v < 2)
                        snprintf(out, out_size, "%s %s", PICK(r, first_names), PICK(r, last_names));
                else
                        snprintf(out, out_size, "Los %s", PICK(r, plural_nouns));
                return;
        default:
                break;
        }
        if (v == 0)
                snprintf(out, out_size, "The %s %s", PICK(r, adjectives), PICK(r, plural_nouns));
        else if (v == 1)
                snprintf(out, out_size, "%s %s", PICK(r, first_names), PICK(r, last_names));
        else if (v == 2)
                snprintf(out, out_size, "%s & the %s", PICK(r, first_names), PICK(r, plural_nouns));
        else
                snprintf(out, out_size, "%s %s", PICK(r, adjectives), PICK(r, nouns));
}

void qz_demo_name_album(struct qz_demo_rng *r, const char *artist, char *out, size_t out_size)
{
        switch (qz_demo_rng_below(r, 8)) {
        case 0:
                snprintf(out, out_size, "%s", artist); /* self-titled */
                break;
        case 1:
                snprintf(out, out_size, "%s of %s", PICK(r, nouns), PICK(r, nouns));
                break;
        case 2:
                snprintf(out, out_size, "Songs for the %s", PICK(r, nouns));
                break;
        case 3:
                snprintf(out, out_size, "Live at %s", PICK(r, places));
                break;
        case 4:
                snprintf(out, out_size, "%s", PICK(r, nouns));
                break;
        default:
                snprintf(out, out_size, "%s %s", PICK(r, adjectives), PICK(r, nouns));
                break;
        }
}

void qz_demo_name_track(struct qz_demo_rng *r, char *out, size_t out_size)
{
        size_t n;
        switch (qz_demo_rng_below(r, 7)) {
        case 0:
                n = (size_t)snprintf(out, out_size, "%s %s %s", PICK(r, verbs), PICK(r, preps),
                                     PICK(r, nouns));
                break;
        case 1:
                n = (size_t)snprintf(out, out_size, "%s", PICK(r, nouns));
                break;
        case 2:
                n = (size_t)snprintf(out, out_size, "%s", PICK(r, first_names));
                break;
        case 3:
                n = (size_t)snprintf(out, out_size, "%s %s", PICK(r, verbs), PICK(r, first_names));
                break;
        default:
                n = (size_t)snprintf(out, out_size, "%s %s", PICK(r, adjectives), PICK(r, nouns));
                break;
        }
        if (qz_demo_rng_below(r, 10) == 0 && n < out_size)
                snprintf(out + n, out_size - n, "%s", PICK(r, track_tails));
}

void qz_demo_name_user(struct qz_demo_rng *r, char *out, size_t out_size)
{
        const char *f = PICK(r, first_names), *l = PICK(r, last_names);
        switch (qz_demo_rng_below(r, 3)) {
        case 0:
                snprintf(out, out_size, "%s %s", f, l);
                break;
        case 1:
                snprintf(out, out_size, "%s %c.", f, l[0]);
                break;
        default:
                snprintf(out, out_size, "%c%s%u", tolower((unsigned char)f[0]), f + 1,
                         qz_demo_rng_below(r, 100));
                break;
        }
}
