"""Regenerate the embedded intents example: corpus, vocabulary, trained weights and data.

This script builds everything the ``examples/intents`` example needs, with no
download: the corpus is generated here from templates and slot values.

* ``calibration/intents/texts.tsv``       the generated corpus: label, text, split (train/eval)
* ``calibration/intents/labels.txt``      intent names, line number = class id
* ``calibration/intents/vocab.txt``       word vocabulary from the training split ([PAD], [UNK], [CLS] first)
* ``examples/intents/intents_transformer.pt``  trained ``IntentTransformer`` state_dict
* ``calibration/intents/calib.npz``       200 calibration samples from the training split
                                          (input_ids, attention_mask, y)
* ``calibration/intents/eval.npz``        the held-out split (input_ids, attention_mask, y)
* ``calibration/intents/PROVENANCE.md``   how the corpus was made, splits, seeds,
                                          float accuracy and sha256 of each file

The model architecture and the tokenizer live in ``examples/intents/model.py`` and
are imported from there by path, so there is a single definition of each.

Everything is seeded and run single-threaded with deterministic algorithms, so
re-running on the same software stack reproduces the same files byte for byte.

Usage::

    python scripts/make_intents_example.py [--out-root DIR]
"""

from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from example_tools import load_module, save_npz, sha256
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_PY = REPO_ROOT / "examples" / "intents" / "model.py"

SEED = 0  # corpus generator (random.Random), numpy generator and torch seed
PER_INTENT = 160  # distinct sentences generated per intent
N_EVAL_PER_INTENT = 30  # held out per intent -> eval split
N_CALIB_PER_INTENT = 20  # calibration samples per intent, taken from the training split
MIN_COUNT = 2  # a training word needs this many occurrences to enter the vocabulary
EPOCHS = 30
BATCH_SIZE = 32
LR = 2e-3
WEIGHT_DECAY = 1e-2
WARMUP_STEPS = 100
WORD_DROPOUT = 0.1  # training only: a word id is replaced by [UNK] with this probability

# Fixed timestamp for zip members so the .npz files are byte-reproducible
# (np.savez stamps members with the current time).




# --------------------------------------------------------------------------- corpus

# Politeness / wake-word prefixes: imperative commands, and questions.
PRE = ["", "", "", "", "please ", "hey ", "ok ", "can you ", "could you ", "would you ", "hey pi ",
       "computer ", "i'd like you to ", "can you please ", "could you please ", "go ahead and ", "quickly ",
       "hey assistant ", "ok pi ", "i want you to "]
QPRE = ["", "", "", "", "hey ", "ok ", "hey pi ", "computer ", "hey assistant ", "ok pi ", "quick question ",
        "excuse me ", "um ", "so "]
SUF = ["", "", "", "", "", " please", " now", " for me", " thanks", " thank you", " right now", " asap",
       " if you can", " would you"]
QSUF = ["", "", "", "", "", " please", " thanks", " thank you", " right now", " again"]

NUM_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
             "fifteen", "twenty", "twenty five", "thirty", "forty", "forty five", "fifty", "sixty", "ninety"]
CITIES = ["london", "paris", "berlin", "tokyo", "new york", "chicago", "madrid", "rome", "sydney", "toronto",
          "dublin", "oslo", "lisbon", "cairo", "mumbai", "seattle", "boston", "vienna", "prague", "nairobi",
          "lima", "denver", "austin", "glasgow", "munich", "osaka", "seoul", "athens", "helsinki", "miami"]
ARTISTS = ["the beatles", "taylor swift", "miles davis", "daft punk", "adele", "queen", "beyonce", "radiohead",
           "bob marley", "nina simone", "coldplay", "mozart", "bach", "fleetwood mac", "abba", "kendrick lamar",
           "norah jones", "the rolling stones", "eminem", "ed sheeran", "billie eilish", "david bowie",
           "john coltrane", "dolly parton", "the weeknd", "frank sinatra", "pink floyd", "chopin", "nirvana",
           "aretha franklin", "bruno mars", "lady gaga", "elton john", "johnny cash", "the cure"]
GENRES = ["jazz", "rock", "classical", "lofi", "hip hop", "country", "pop", "reggae", "blues", "ambient",
          "metal", "techno", "folk", "soul", "disco", "piano", "punk", "indie", "opera", "funk"]
PLAYLISTS = ["workout", "chill", "dinner", "party", "focus", "road trip", "sleep", "morning", "study", "favourites",
             "running", "summer", "cooking", "relax", "throwback"]
LIGHTS = ["lights", "light", "lamp", "lamps", "ceiling light", "desk lamp", "fairy lights", "porch light",
          "bulbs", "floor lamp", "reading light", "kitchen lights", "night light", "led strip"]
LIGHTS_PLURAL = ["lights", "lamps", "fairy lights", "bulbs", "kitchen lights", "ceiling lights", "spotlights"]
ROOMS = ["kitchen", "living room", "bedroom", "hallway", "bathroom", "office", "garage", "nursery", "dining room",
         "study", "basement", "lounge", "kids room", "guest room", "attic", "garden"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
FOODS = ["the pasta", "the eggs", "the rice", "the pizza", "my tea", "the cake", "the bread", "the potatoes",
         "the laundry", "my nap", "the oven", "the steak", "the cookies"]


def _dur(r: random.Random) -> str:
    n = r.choice([str(r.randint(1, 90)), r.choice(NUM_WORDS)])
    singular = n in ("1", "one")
    units = ["minute", "second", "hour", "min"] if singular else ["minutes", "minutes", "seconds", "hours", "mins"]
    unit = r.choice(units)
    return r.choice([f"{n} {unit}", f"{n} {unit}", f"{n} {unit}", "half an hour", "an hour", "a minute",
                     "an hour and a half", f"{n} and a half minutes", f"{n} {unit} and {r.randint(5, 55)} seconds",
                     "a quarter of an hour", "ninety seconds",
                     f"{r.randint(1, 9)} hours and {r.randint(5, 55)} minutes"])


def _clock(r: random.Random) -> str:
    h = r.randint(1, 12)
    hw = r.choice([str(h), NUM_WORDS[h - 1]])
    mm = r.choice(["15", "30", "45", "05", "10", "20", "40", "50"])
    return r.choice([f"{hw} am", f"{hw} pm", f"{h}:{mm}", f"{h}:{mm} am", f"{h}:{mm} pm", f"{hw} o'clock",
                     f"{hw} in the morning", f"{hw} thirty", "noon", "midnight", f"half past {hw}",
                     f"quarter to {hw}", f"quarter past {hw}", f"{h} {mm}"])


def _day(r: random.Random) -> str:
    return r.choice(["", "", "", " tomorrow", " tomorrow morning", " tonight", f" on {r.choice(WEEKDAYS)}",
                     " every weekday", " every day", f" this {r.choice(WEEKDAYS)}", " in the morning", " daily"])


def _loc(r: random.Random) -> str:
    return r.choice(["", "", "", f" in {r.choice(CITIES)}", f" in {r.choice(CITIES)}", f" for {r.choice(CITIES)}",
                     " here", " outside", " near me", " at home", " in town", " around here"])


def _when(r: random.Random) -> str:
    return r.choice(["", "", "", " today", " tomorrow", " this weekend", " tonight", f" on {r.choice(WEEKDAYS)}",
                     " this afternoon", " this morning", " next week", " later", " this evening", " right now"])


def _music(r: random.Random) -> str:
    a, g, p = r.choice(ARTISTS), r.choice(GENRES), r.choice(PLAYLISTS)
    return r.choice([a, a, f"something by {a}", f"songs by {a}", f"some {a}", f"my {p} playlist",
                     f"the {p} playlist", f"some {g}", f"{g} music", f"some {g} music", "the radio", "a song",
                     "some music", "music", f"the latest {a} album", f"{a} radio", f"a {g} station",
                     f"my {g} mix", "my favourite songs", "something relaxing", "something upbeat",
                     "the top hits", f"{g} from the nineties"])


def _light(r: random.Random) -> str:
    det = r.choice(["the ", "the ", "the ", "my ", "all the ", ""])
    return det + r.choice(LIGHTS_PLURAL if det == "all the " else LIGHTS)


def _room(r: random.Random) -> str:
    return r.choice(["", "", f" in the {r.choice(ROOMS)}", f" in the {r.choice(ROOMS)}", f" in my {r.choice(ROOMS)}",
                     " downstairs", " upstairs", " in here", " everywhere"])


def _amt(r: random.Random) -> str:
    n = r.choice([str(r.randint(1, 30)), r.choice(NUM_WORDS[:10])])
    return r.choice(["", "", "", " a bit", " a little", " a lot", " a notch", f" by {n}", f" by {n} percent",
                     " some more", " slightly", " a little bit", " way"])


def _sound(r: random.Random) -> str:
    return r.choice(["the volume", "the volume", "the sound", "the music", "the speaker", "the tv", "it", "the radio",
                     "the audio", "this song"])


# Each template is a function of a seeded random.Random; <P>/<S> are filled with a command
# prefix/suffix, <Q>/<QS> with a question prefix/suffix.
TEMPLATES = {
    "set_timer": [
        lambda r: f"<P>set a timer for {_dur(r)}<S>",
        lambda r: f"<P>start a {_dur(r)} timer<S>",
        lambda r: f"timer for {_dur(r)}<S>",
        lambda r: f"<P>start a countdown for {_dur(r)}<S>",
        lambda r: f"<P>count down from {_dur(r)}",
        lambda r: f"{_dur(r)} timer<S>",
        lambda r: f"<P>put a timer on for {_dur(r)}<S>",
        lambda r: f"<P>time {r.choice(FOODS)} for {_dur(r)}",
        lambda r: f"<Q>let me know when {_dur(r)} have passed",
        lambda r: f"<P>set the kitchen timer to {_dur(r)}<S>",
        lambda r: f"<P>give me a {_dur(r)} timer<S>",
        lambda r: f"<Q>i need a timer for {_dur(r)}",
        lambda r: f"<P>ping me in {_dur(r)}<S>",
        lambda r: f"<P>set a {_dur(r)} countdown",
    ],
    "set_alarm": [
        lambda r: f"<P>set an alarm for {_clock(r)}{_day(r)}<S>",
        lambda r: f"<P>wake me up at {_clock(r)}{_day(r)}<S>",
        lambda r: f"<P>wake me at {_clock(r)}{_day(r)}",
        lambda r: f"alarm at {_clock(r)}{_day(r)}<S>",
        lambda r: f"<P>set my alarm to {_clock(r)}{_day(r)}",
        lambda r: f"<Q>i need to get up at {_clock(r)}{_day(r)}",
        lambda r: f"<P>create an alarm for {_clock(r)}{_day(r)}",
        lambda r: f"<P>make sure i'm up by {_clock(r)}{_day(r)}",
        lambda r: f"<P>add an alarm at {_clock(r)}{_day(r)}<S>",
        lambda r: f"<Q>alarm for {_clock(r)}{_day(r)}<QS>",
        lambda r: f"<P>get me up at {_clock(r)}{_day(r)}",
        lambda r: f"<P>set the alarm clock for {_clock(r)}{_day(r)}",
    ],
    "get_weather": [
        lambda r: f"<Q>what's the weather{_loc(r)}{_when(r)}<QS>",
        lambda r: f"<Q>what is the weather like{_loc(r)}{_when(r)}",
        lambda r: f"<Q>is it going to rain{_loc(r)}{_when(r)}",
        lambda r: f"<Q>will it {r.choice(['rain', 'snow', 'be sunny', 'be windy', 'be cold', 'storm'])}"
                  f"{_when(r)}{_loc(r)}",
        lambda r: f"<Q>do i need an umbrella{_when(r)}",
        lambda r: f"<Q>how {r.choice(['hot', 'cold', 'warm', 'windy'])} is it{_loc(r)}{_when(r)}",
        lambda r: f"<Q>what's the forecast{_loc(r)}{_when(r)}<QS>",
        lambda r: f"weather forecast for {r.choice(CITIES)}{_when(r)}",
        lambda r: f"<P>tell me the weather{_loc(r)}{_when(r)}<S>",
        lambda r: f"<P>give me the forecast{_when(r)}<S>",
        lambda r: f"<Q>should i wear a jacket{_when(r)}",
        lambda r: f"<Q>what's the temperature{_loc(r)}{_when(r)}",
        lambda r: f"<Q>weather{_loc(r)}{_when(r)}<QS>",
        lambda r: f"<Q>is it sunny{_loc(r)}{_when(r)}",
        lambda r: f"<P>check the weather{_loc(r)}{_when(r)}<S>",
    ],
    "get_time": [
        lambda r: f"<Q>what time is it{r.choice(['', '', ' now', ' right now', ' here'])}<QS>",
        lambda r: "<Q>what's the time<QS>",
        lambda r: "<P>tell me the time<S>",
        lambda r: "<Q>do you know what time it is",
        lambda r: f"<Q>what time is it in {r.choice(CITIES)}<QS>",
        lambda r: f"<Q>current time{r.choice(['', ' in ' + r.choice(CITIES)])}<QS>",
        lambda r: "<Q>how late is it<QS>",
        lambda r: "<P>check the time<S>",
        lambda r: "<Q>time check<QS>",
        lambda r: f"<Q>is it {_clock(r)} yet",
        lambda r: f"<Q>is it past {_clock(r)} already",
        lambda r: "<Q>what hour is it<QS>",
        lambda r: "<Q>have you got the time<QS>",
        lambda r: "<P>say the time<S>",
        lambda r: f"<Q>what's the local time in {r.choice(CITIES)}",
        lambda r: "<Q>what time do you have",
    ],
    "play_music": [
        lambda r: f"<P>play {_music(r)}<S>",
        lambda r: f"<P>put on {_music(r)}<S>",
        lambda r: f"<Q>i want to listen to {_music(r)}",
        lambda r: f"<P>start playing {_music(r)}{_room(r)}",
        lambda r: f"<Q>let's hear {_music(r)}",
        lambda r: f"<P>shuffle {_music(r)}<S>",
        lambda r: f"<P>play {_music(r)} in the {r.choice(ROOMS)}",
        lambda r: f"<Q>i'm in the mood for {_music(r)}",
        lambda r: f"<P>queue up {_music(r)}<S>",
        lambda r: "<P>resume the music<S>",
        lambda r: f"<P>blast {_music(r)}",
        lambda r: f"<P>stream {_music(r)}<S>",
    ],
    "pause_music": [
        lambda r: f"<P>pause the {r.choice(['music', 'song', 'track', 'playlist', 'radio', 'podcast'])}<S>",
        lambda r: f"<P>stop the {r.choice(['music', 'song', 'track', 'playlist', 'radio', 'podcast'])}<S>",
        lambda r: f"<P>stop playing{r.choice(['', ' music', ' this', ' that song', ' ' + r.choice(ARTISTS)])}<S>",
        lambda r: "<P>pause<S>",
        lambda r: f"<P>turn the music off{_room(r)}<S>",
        lambda r: f"<P>turn off the {r.choice(['music', 'radio', 'song'])}{_room(r)}<S>",
        lambda r: f"<Q>enough music for {r.choice(['now', 'today', 'tonight'])}",
        lambda r: f"<P>{r.choice(['kill', 'cut', 'end', 'halt'])} the music<S>",
        lambda r: "<P>pause playback<S>",
        lambda r: f"<Q>that's enough{r.choice(['', ' music'])} stop playing",
        lambda r: "<P>hold the music<S>",
        lambda r: f"<P>pause {r.choice(ARTISTS)}<S>",
        lambda r: f"<Q>i don't want to hear {r.choice(['this', 'music', 'this song', 'that'])} anymore",
        lambda r: f"<P>stop the {r.choice(GENRES)}<S>",
    ],
    "lights_on": [
        lambda r: f"<P>turn on {_light(r)}{_room(r)}<S>",
        lambda r: f"<P>turn {_light(r)} on{_room(r)}<S>",
        lambda r: f"<P>switch on {_light(r)}{_room(r)}<S>",
        lambda r: f"<P>switch {_light(r)} on{_room(r)}",
        lambda r: f"lights on{_room(r)}<S>",
        lambda r: f"{r.choice(ROOMS)} lights on<S>",
        lambda r: f"<Q>it's too dark{_room(r)}",
        lambda r: f"<P>light up the {r.choice(ROOMS)}<S>",
        lambda r: f"<P>put {_light(r)} on{_room(r)}<S>",
        lambda r: f"<P>{r.choice(['brighten', 'illuminate'])} the {r.choice(ROOMS)}",
        lambda r: f"<Q>i can't see anything{_room(r)}",
        lambda r: f"<P>get {_light(r)} on{_room(r)}",
        lambda r: f"<P>power on {_light(r)}{_room(r)}",
    ],
    "lights_off": [
        lambda r: f"<P>turn off {_light(r)}{_room(r)}<S>",
        lambda r: f"<P>turn {_light(r)} off{_room(r)}<S>",
        lambda r: f"<P>switch off {_light(r)}{_room(r)}<S>",
        lambda r: f"<P>switch {_light(r)} off{_room(r)}",
        lambda r: f"lights off{_room(r)}<S>",
        lambda r: f"{r.choice(ROOMS)} lights off<S>",
        lambda r: f"<Q>it's too bright{_room(r)}",
        lambda r: f"<P>kill {_light(r)}{_room(r)}<S>",
        lambda r: f"<P>shut off {_light(r)}{_room(r)}<S>",
        lambda r: f"lights out{_room(r)}<S>",
        lambda r: f"<P>darken the {r.choice(ROOMS)}",
        lambda r: f"<P>power off {_light(r)}{_room(r)}",
        lambda r: f"<P>put {_light(r)} out{_room(r)}",
    ],
    "volume_up": [
        lambda r: f"<P>turn it up{_amt(r)}<S>",
        lambda r: f"<P>turn up {_sound(r)}{_amt(r)}<S>",
        lambda r: f"<P>turn {_sound(r)} up{_amt(r)}<S>",
        lambda r: f"<P>{r.choice(['increase', 'raise', 'boost'])} {_sound(r)}{_amt(r)}<S>",
        lambda r: "louder<S>",
        lambda r: "<P>make it louder<S>",
        lambda r: f"<P>make {_sound(r)} louder<S>",
        lambda r: f"<Q>i can't hear {r.choice(['it', 'the music', 'anything', 'the tv', 'you'])}",
        lambda r: f"<Q>it's too quiet{r.choice(['', ' in here'])}",
        lambda r: f"<P>bump up {_sound(r)}{_amt(r)}",
        lambda r: f"<P>crank it up{_amt(r)}",
        lambda r: f"volume up{_amt(r)}<S>",
        lambda r: f"<P>pump up {_sound(r)}{_amt(r)}",
        lambda r: "<Q>can it be louder",
    ],
    "volume_down": [
        lambda r: f"<P>turn it down{_amt(r)}<S>",
        lambda r: f"<P>turn down {_sound(r)}{_amt(r)}<S>",
        lambda r: f"<P>turn {_sound(r)} down{_amt(r)}<S>",
        lambda r: f"<P>{r.choice(['decrease', 'lower', 'reduce'])} {_sound(r)}{_amt(r)}<S>",
        lambda r: "quieter<S>",
        lambda r: "<P>make it quieter<S>",
        lambda r: f"<P>make {_sound(r)} {r.choice(['quieter', 'softer'])}<S>",
        lambda r: f"<Q>it's too loud{r.choice(['', ' in here'])}",
        lambda r: "<Q>that's way too loud",
        lambda r: f"<P>bring {_sound(r)} down{_amt(r)}",
        lambda r: f"volume down{_amt(r)}<S>",
        lambda r: "<Q>not so loud<QS>",
        lambda r: "<P>keep it down<S>",
        lambda r: f"<P>tone it down{_amt(r)}",
    ],
}


def generate_corpus(intents: tuple[str, ...]) -> list[tuple[str, str]]:
    """(intent, sentence) pairs: PER_INTENT distinct sentences per intent, no sentence under two intents.

    Sentences are drawn intent by intent in ``intents`` order from one ``random.Random(SEED)``:
    pick a template, fill its slots, add a prefix and suffix, collapse spaces.
    """
    r = random.Random(SEED)
    seen: set[str] = set()
    corpus = []
    for intent in intents:
        made, attempts = 0, 0
        while made < PER_INTENT:
            attempts += 1
            if attempts > 200 * PER_INTENT:
                raise RuntimeError(f"{intent}: templates too narrow for {PER_INTENT} distinct sentences")
            text = r.choice(TEMPLATES[intent])(r)
            text = (text.replace("<P>", r.choice(PRE)).replace("<S>", r.choice(SUF))
                    .replace("<Q>", r.choice(QPRE)).replace("<QS>", r.choice(QSUF)))
            text = re.sub(r"\s+", " ", text).strip()
            if text in seen:
                continue
            seen.add(text)
            corpus.append((intent, text))
            made += 1
    return corpus


def split(corpus: list[tuple[str, str]], intents: tuple[str, ...]):
    """Per intent: shuffle with np.random.default_rng(SEED); first N_EVAL_PER_INTENT -> eval, rest -> train.

    Calibration: the first N_CALIB_PER_INTENT training sentences of each intent (after the shuffle).
    Returns index lists into ``corpus``, each sorted.
    """
    rng = np.random.default_rng(SEED)
    train, evals, calib = [], [], []
    for intent in intents:
        idx = [i for i, (lab, _) in enumerate(corpus) if lab == intent]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        evals += idx[:N_EVAL_PER_INTENT]
        train += idx[N_EVAL_PER_INTENT:]
        calib += idx[N_EVAL_PER_INTENT : N_EVAL_PER_INTENT + N_CALIB_PER_INTENT]
    return sorted(train), sorted(evals), sorted(calib)


def build_vocab(texts: list[str], tokenize, specials: tuple[str, ...]) -> list[str]:
    """Specials, then training words seen >= MIN_COUNT times, by descending count then alphabetically."""
    counts = Counter(w for t in texts for w in tokenize(t))
    words = sorted((w for w, c in counts.items() if c >= MIN_COUNT), key=lambda w: (-counts[w], w))
    return list(specials) + words


# --------------------------------------------------------------------------- training


def train(model: nn.Module, ids: np.ndarray, mask: np.ndarray, y: np.ndarray, unk_id: int) -> None:
    """AdamW, linear warm-up then cosine decay, seeded batch order and word dropout."""
    rng = np.random.default_rng(SEED)
    it, mt, yt = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = -(-len(y) // BATCH_SIZE)
    total = EPOCHS * steps_per_epoch

    def lr_at(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        return 0.5 * (1.0 + np.cos(np.pi * (step - WARMUP_STEPS) / (total - WARMUP_STEPS)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    for _ in range(EPOCHS):
        order = torch.from_numpy(rng.permutation(len(y)))
        for i in range(0, len(y), BATCH_SIZE):
            idx = order[i : i + BATCH_SIZE]
            batch_ids = it[idx].clone()
            # Word dropout: real words (not [CLS] at position 0, not padding) -> [UNK], so the
            # model learns to cope with words it has not seen.
            drop = torch.from_numpy(rng.random(batch_ids.shape) < WORD_DROPOUT) & (mt[idx] == 1)
            drop[:, 0] = False
            batch_ids[drop] = unk_id
            opt.zero_grad()
            loss = loss_fn(model(batch_ids, mt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def n_correct(model: nn.Module, ids: np.ndarray, mask: np.ndarray, y: np.ndarray) -> int:
    """Number of samples whose top-1 prediction matches the label."""
    pred = model(torch.from_numpy(ids), torch.from_numpy(mask)).argmax(dim=1).numpy()
    return int((pred == y).sum())


# --------------------------------------------------------------------------- files






def write_provenance(path: Path, *, out_root: Path, files: list[Path], stats: dict, intents: tuple[str, ...],
                     examples: list[tuple[str, str]]) -> None:
    """Write PROVENANCE.md: how the corpus was generated, splits, seeds, accuracy, hashes."""
    hashes = "\n".join(
        f"| `{p.relative_to(out_root).as_posix()}` | {p.stat().st_size} | `{sha256(p)}` |" for p in files
    )
    intent_list = ", ".join(f"{i} `{name}`" for i, name in enumerate(intents))
    sample = "\n".join(f"| `{lab}` | {text} |" for lab, text in examples)
    text = f"""# Intents example data: provenance

## Source: generated, not a natural corpus

Every sentence in `texts.tsv` was generated by `scripts/make_intents_example.py` from
hand-written templates and slot values (durations, clock times, cities, artists, genres,
rooms, lamps, amounts) plus optional politeness / wake-word prefixes ("hey pi", "could you
please") and suffixes ("please", "thanks", "right now"). Nothing was collected from people
and nothing is downloaded. It imitates the short commands a phone or Raspberry Pi voice
assistant receives, but it is **not** a natural corpus: its vocabulary, phrasings and class
balance are exactly what the templates allow, and there are no typos, disfluencies beyond
a few fillers, or speech-recognition errors. Accuracy on it says little about accuracy on
real user utterances; it is here to exercise edgepack on a text model.

{len(intents)} intents (class id, name): {intent_list}.

Generation: one `random.Random({SEED})`, intent by intent in that order; for each, draw a
template, fill its slots, add a prefix and suffix, collapse whitespace, and keep the
sentence if it has not been produced before (under any intent), until {PER_INTENT} distinct
sentences exist. Total: {stats['total']} sentences, no duplicates.

A few generated sentences:

| intent | text |
|--------|------|
{sample}

## Tokenizer

Word level, in `examples/intents/model.py` (`tokenize`, `encode`): lower-case, words are
runs of `[a-z0-9]` (so "what's" -> `what`, `s`). `vocab.txt` holds `[PAD]`=0, `[UNK]`=1,
`[CLS]`=2, then every word that occurs at least {MIN_COUNT} times in the **training split
only**, by descending count then alphabetically ({stats['vocab']} entries). A sequence is `[CLS]`
followed by the word ids (unknown words -> `[UNK]`), truncated / padded with `[PAD]` to 32;
`attention_mask` is 1 on `[CLS]` and the words, 0 on padding.
Held-out words not in the vocabulary: {stats['eval_unk']} of {stats['eval_words']} eval word tokens
({stats['eval_unk'] / stats['eval_words'] * 100:.1f} %) become `[UNK]`.

## Splits (stratified by intent)

| split | samples | how |
|-------|---------|-----|
| train | {stats['train']} | per intent, shuffle with `np.random.default_rng({SEED})`; all but the first \
{N_EVAL_PER_INTENT} |
| eval | {stats['eval']} | the first {N_EVAL_PER_INTENT} per intent after that shuffle (held out from training \
and from the vocabulary) |
| calibration | {stats['calib']} | the first {N_CALIB_PER_INTENT} training sentences per intent (a subset of train) |

`texts.tsv` (header `label`, `text`, `split`) lists every sentence with its split
(`train` or `eval`). No eval sentence is a copy of a training sentence, but both come from
the same templates and slot lists, so eval measures generalisation to new combinations of
known phrasings (and to some unseen words), not to new phrasings.

`calib.npz` and `eval.npz` hold `input_ids` and `attention_mask` (int64, shape (N, 32)) and
`y` (int64 class ids), rows in `texts.tsv` order. `labels.txt` lists the intent names
(line number = class id).

## Model and training

`examples/intents/model.py:IntentTransformer` (token + learned position embedding, 2
pre-LayerNorm encoder layers with d_model 64, 4 heads, feed-forward 128 with exact GELU,
additive `(1 - mask) * -1e4` attention mask, final LayerNorm, masked mean pooling, linear
head), trained on the train split only: AdamW (lr {LR}, weight decay {WEIGHT_DECAY}),
{WARMUP_STEPS} warm-up steps then cosine decay, {EPOCHS} epochs, batch size {BATCH_SIZE},
cross-entropy with label smoothing 0.05, dropout 0.1, word dropout {WORD_DROPOUT} (training
words replaced by `[UNK]`). Seeds: `torch.manual_seed({SEED})`, batch order and word dropout
from `np.random.default_rng({SEED})`; `torch.use_deterministic_algorithms(True)`,
`torch.set_num_threads(1)`. Trained with torch {torch.__version__}, numpy {np.__version__}.

Float (PyTorch, fp32) accuracy:

- eval split: **{stats['eval_correct'] / stats['eval'] * 100:.2f} %** ({stats['eval_correct']}/{stats['eval']})
- train split: {stats['train_correct'] / stats['train'] * 100:.2f} % ({stats['train_correct']}/{stats['train']})

## Regenerate

```
python scripts/make_intents_example.py
```

(optionally `--out-root DIR`). Re-running with the same library versions reproduces the
files below byte for byte.

## Files

| file | bytes | sha256 |
|------|-------|--------|
{hashes}
"""
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT,
                        help="root under which examples/ and calibration/ are written "
                             "(default: repository root)")
    args = parser.parse_args()
    out_root = args.out_root.resolve()
    t0 = time.perf_counter()

    # Determinism: fixed seeds, deterministic kernels, one thread (reduction
    # order in CPU kernels can depend on the thread count).
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    m = load_module(MODEL_PY, "intents_example_model")
    corpus = generate_corpus(m.INTENTS)
    train_idx, eval_idx, calib_idx = split(corpus, m.INTENTS)
    texts = [t for _, t in corpus]
    labels = np.array([m.INTENTS.index(lab) for lab, _ in corpus], dtype=np.int64)

    vocab_list = build_vocab([texts[i] for i in train_idx], m.tokenize, m.SPECIALS)
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    enc = m.encode(texts, vocab)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if mask.sum(axis=1).max() >= m.SEQ_LEN:
        raise RuntimeError("a sentence was truncated; raise SEQ_LEN or shorten the templates")

    def part(idx):
        return ids[idx], mask[idx], labels[idx]

    model = m.IntentTransformer(vocab_size=len(vocab_list))
    t_train = time.perf_counter()
    train(model, *part(train_idx), unk_id=m.UNK_ID)
    t_train = time.perf_counter() - t_train
    train_correct = n_correct(model, *part(train_idx))
    eval_correct = n_correct(model, *part(eval_idx))

    model_dir = out_root / "examples" / "intents"
    data_dir = out_root / "calibration" / "intents"
    model_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)

    split_of = {i: "eval" for i in eval_idx} | {i: "train" for i in train_idx}
    corpus_tsv = data_dir / "texts.tsv"
    corpus_tsv.write_text("label\ttext\tsplit\n" + "".join(
        f"{lab}\t{text}\t{split_of[i]}\n" for i, (lab, text) in enumerate(corpus)), encoding="utf-8")
    labels_txt = data_dir / "labels.txt"
    labels_txt.write_text("".join(f"{name}\n" for name in m.INTENTS), encoding="utf-8")
    vocab_txt = data_dir / "vocab.txt"
    vocab_txt.write_text("".join(f"{tok}\n" for tok in vocab_list), encoding="utf-8")

    weights = model_dir / "intents_transformer.pt"
    calib = data_dir / "calib.npz"
    evals = data_dir / "eval.npz"
    torch.save(model.state_dict(), weights)
    c_ids, c_mask, c_y = part(calib_idx)
    e_ids, e_mask, e_y = part(eval_idx)
    save_npz(calib, input_ids=c_ids, attention_mask=c_mask, y=c_y)
    save_npz(evals, input_ids=e_ids, attention_mask=e_mask, y=e_y)

    eval_words = sum(len(m.tokenize(texts[i])) for i in eval_idx)
    eval_unk = int(((e_ids == m.UNK_ID) & (e_mask == 1)).sum())
    stats = {"total": len(corpus), "train": len(train_idx), "eval": len(eval_idx), "calib": len(calib_idx),
             "vocab": len(vocab_list), "eval_words": eval_words, "eval_unk": eval_unk,
             "train_correct": train_correct, "eval_correct": eval_correct}
    examples = [corpus[i] for i in eval_idx[:: max(1, len(eval_idx) // 10)]][:10]
    write_provenance(
        data_dir / "PROVENANCE.md", out_root=out_root,
        files=[corpus_tsv, labels_txt, vocab_txt, weights, calib, evals],
        stats=stats, intents=m.INTENTS, examples=examples,
    )

    print(f"intents: {len(corpus)} sentences ({len(train_idx)} train, {len(eval_idx)} eval, "
          f"{len(calib_idx)} calib), vocab {len(vocab_list)}, eval [UNK] rate {eval_unk / eval_words * 100:.1f}%")
    print(f"intents: float accuracy train {train_correct / len(train_idx) * 100:.2f}% "
          f"({train_correct}/{len(train_idx)}), eval {eval_correct / len(eval_idx) * 100:.2f}% "
          f"({eval_correct}/{len(eval_idx)}); training {t_train:.1f}s, total {time.perf_counter() - t0:.1f}s "
          f"-> {out_root}")


if __name__ == "__main__":
    main()
