// The strings tests/tokenizer_test.cc tokenizes with both the C++ tokenizer
// and the reference: deterministic (seeded), a few thousand, covering what
// prompts contain and what breaks tokenizers.
"use strict";

// mulberry32: a small seeded PRNG, so the corpus is the same on every run.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  "a an the of in on at with and or by from photo painting portrait landscape " +
  "cat dog astronaut horse riding castle mountain river forest city street night " +
  "sunset sunrise oil watercolor digital art highly detailed sharp focus cinematic " +
  "lighting trending artstation octane render unreal engine volumetric fog golden hour " +
  "beautiful woman man child old young red blue green yellow purple black white " +
  "vintage retro futuristic cyberpunk steampunk fantasy medieval baroque impressionist " +
  "by greg rutkowski alphonse mucha studio ghibli van gogh monet picasso " +
  "wide angle close up macro bokeh 35mm film grain hdr 4k 8k ultra realistic " +
  "concept illustration sketch pencil charcoal ink anime manga comic pixel " +
  "underwater space galaxy nebula planet moon stars clouds rain snow storm ocean " +
  "beach desert jungle temple ruins robot dragon knight wizard princess king queen " +
  "flowers garden tree house room kitchen library cafe train car bicycle boat"
).split(" ");

const PUNCT = [".", ",", "!", "?", ";", ":", "...", "!!", "?!", "-", "--", "—", "–", "(", ")",
  "[", "]", "{", "}", "\"", "'", "`", "/", "\\", "|", "@", "#", "$", "%", "^", "&", "*", "+",
  "=", "<", ">", "~", "_", "«", "»", "“", "”", "‘", "’", "¿", "¡", "…", "·", "§", "©", "®", "™",
  "°", "±", "×", "÷", "€", "£", "¥", "¢"];

const UNICODE_WORDS = [
  "café", "naïve", "résumé", "Ångström", "Straße", "STRASSE", "façade", "jalapeño", "Øresund",
  "cafe\u0301", "nai\u0308ve", "A\u030angstro\u0308m", "e\u0301\u0301", "o\u0302\u0323",
  "Ελληνικά", "ΟΔΟΣ", "ΣΊΣΥΦΟΣ", "Σ", "σ", "ς", "İstanbul", "ISTANBUL", "ıi", "ǅemal", "ﬁnance",
  "Москва", "ПРИВЕТ", "日本語", "東京タワー", "中文字符", "한국어", "ｆｕｌｌｗｉｄｔｈ", "ＡＢＣ",
  "مرحبا", "שלום", "हिन्दी", "क्षत्रिय", "ภาษาไทย", "가", "Ⅻ", "½", "²³", "١٢٣", "߀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
  "𝟘𝟙𝟚", "ℌ", "K", "Å", "ſ", "'ſ", "ꝏ", "ᾨ", "ﬀ",
];

const EMOJI = ["😀", "🎨", "🐱", "🚀", "❤️", "❤", "👍🏽", "👩‍🚀", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸🇬🇧",
  "🧑🏿‍🎤", "✨", "🔥🔥🔥", "☕", "⭐️", "👁‍🗨", "🫠", "🪐", "#️⃣", "1️⃣", "©️"];

const SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", " \n ", "\n\n", "\t\t", "\u00a0", "\u3000",
  "\u2003", "\u2028", "\u000b", "\u000c", "\u0085", "\ufeff", "\u200b", " \t \n"];

const SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "<|endoftext|", "<|endof",
  "<|fim_prefix|>", "<|endofprompt|>", "<s>", "</s>", "</w>"];

const APOSTROPHE = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'RE", "'Ll", "’s", "n't",
  "'", "''", "o'clock", "rock'n'roll", "dog's", "DOG'S", "they're", "THEY'RE", "we've", "I'm"];

function numberToken(r) {
  const kinds = [
    () => String(Math.floor(r() * 10)),
    () => String(Math.floor(r() * 100000)),
    () => String(Math.floor(r() * 1e12)),
    () => (r() * 1000).toFixed(2),
    () => "1,000,000",
    () => "3.14159",
    () => "2024-01-15",
    () => "v1.5",
    () => "4k",
    () => "1920x1080",
    () => "50%",
    () => "$99.99",
    () => "#" + Math.floor(r() * 0xffffff).toString(16),
    () => "0x" + Math.floor(r() * 0xffff).toString(16).toUpperCase(),
    () => "-" + String(Math.floor(r() * 100)),
    () => "1e-5",
  ];
  return kinds[Math.floor(r() * kinds.length)]();
}

function randomCodePoint(r) {
  const ranges = [[0x20, 0x7e], [0xa0, 0x24f], [0x300, 0x36f], [0x370, 0x3ff], [0x400, 0x4ff],
    [0x590, 0x6ff], [0x900, 0x97f], [0xe00, 0xe7f], [0x1100, 0x11ff], [0x2000, 0x206f],
    [0x2100, 0x22ff], [0x3000, 0x30ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0xff00, 0xffef],
    [0x1f300, 0x1faff], [0x1d400, 0x1d7ff], [0x20000, 0x2a6df], [0x1, 0x1f]];
  const [lo, hi] = ranges[Math.floor(r() * ranges.length)];
  const cp = lo + Math.floor(r() * (hi - lo + 1));
  return String.fromCodePoint(cp);
}

function pick(r, list) {
  return list[Math.floor(r() * list.length)];
}

function caseVariant(r, w) {
  const x = r();
  if (x < 0.6) return w;
  if (x < 0.75) return w.toUpperCase();
  if (x < 0.9) return w.charAt(0).toUpperCase() + w.slice(1);
  return Array.from(w).map((c) => (r() < 0.5 ? c.toUpperCase() : c)).join("");
}

// One prompt-like string of about `n` pieces.
function mixed(r, n, weights) {
  const parts = [];
  for (let i = 0; i < n; ++i) {
    const x = r();
    let piece;
    if (x < weights.word) piece = caseVariant(r, pick(r, WORDS));
    else if (x < weights.punct) piece = pick(r, PUNCT);
    else if (x < weights.number) piece = numberToken(r);
    else if (x < weights.unicode) piece = pick(r, UNICODE_WORDS);
    else if (x < weights.emoji) piece = pick(r, EMOJI);
    else if (x < weights.apostrophe) piece = pick(r, APOSTROPHE);
    else if (x < weights.special) piece = pick(r, SPECIAL);
    else piece = randomCodePoint(r);
    parts.push(piece);
    // Usually a space, sometimes nothing or an odd run of whitespace.
    const y = r();
    parts.push(y < 0.7 ? " " : y < 0.85 ? "" : pick(r, SPACES));
  }
  return parts.join("");
}

function makeCorpus(seed = 20261130) {
  const r = rng(seed);
  const out = [
    "", " ", "   ", "\n", "a", "A", "a photo of a cat", "A Photo Of A Cat!!!",
    "<|startoftext|>", "<|endoftext|>", "<|startoftext|>a cat<|endoftext|>",
    "a cat <|endoftext|> a dog", "a<|endoftext|>b", "<|endoftext|><|endoftext|>",
    "don't stop, it's 5 o'clock", "I'M HERE", "he said: \"hi\"", "x".repeat(300),
    "ab".repeat(200), "🙂".repeat(50), "1234567890".repeat(10), "....................",
    "caf\u00e9 cafe\u0301", "\u0041\u030a \u00c5 \u212b", "ΟΔΟΣ ΟΔΟΣ.", "İi Iı",
  ];
  const plain = { word: 0.85, punct: 0.93, number: 0.98, unicode: 0.985, emoji: 0.99,
    apostrophe: 0.995, special: 0.997 };
  const wild = { word: 0.35, punct: 0.5, number: 0.6, unicode: 0.72, emoji: 0.8, apostrophe: 0.88,
    special: 0.92 };
  for (let i = 0; i < 1200; ++i) out.push(mixed(r, 1 + Math.floor(r() * 20), plain));
  for (let i = 0; i < 1200; ++i) out.push(mixed(r, 1 + Math.floor(r() * 25), wild));
  // Very long prompts: well past 77 tokens.
  for (let i = 0; i < 150; ++i) out.push(mixed(r, 80 + Math.floor(r() * 300), i % 2 ? plain : wild));
  // Random code points only.
  for (let i = 0; i < 300; ++i) {
    let s = "";
    const n = 1 + Math.floor(r() * 30);
    for (let k = 0; k < n; ++k) s += randomCodePoint(r);
    out.push(s);
  }
  // Long runs without spaces, and whitespace-only strings.
  for (let i = 0; i < 60; ++i) {
    out.push(caseVariant(r, pick(r, WORDS)).repeat(5 + Math.floor(r() * 60)));
    out.push(Array.from({ length: 1 + Math.floor(r() * 8) }, () => pick(r, SPACES)).join(""));
  }
  return out;
}

// Plain-text lines for training the CLIP-style test vocabulary.
function trainingText(seed = 7) {
  const r = rng(seed);
  const plain = { word: 0.88, punct: 0.95, number: 0.99, unicode: 0.995, emoji: 0.999,
    apostrophe: 1.0, special: 1.0 };
  const out = [];
  for (let i = 0; i < 3000; ++i) out.push(mixed(r, 5 + Math.floor(r() * 15), plain));
  return out;
}

module.exports = { makeCorpus, trainingText, rng };
