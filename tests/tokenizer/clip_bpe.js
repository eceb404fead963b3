// CLIP-style byte-level BPE tokenizer.json, built from words: the shared
// part of make_clip_tokenizer.js (the test corpus's clip_style tokenizer)
// and tools/textmnist/tokenize.js (the text model's tokenizer). The result
// has exactly the structure of Stable Diffusion's CLIP tokenizer.json:
// CLIP's normalizer and split regex, the byte-level alphabet with `</w>`
// word ends, <|startoftext|> / <|endoftext|>, and merges learned by plain
// BPE on the words' counts.
"use strict";

const CLIP_SPLIT =
  "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

// GPT-2's byte → printable character table, in its own order.
function bytesToUnicode() {
  const bs = [];
  for (let b = 33; b <= 126; ++b) bs.push(b);
  for (let b = 161; b <= 172; ++b) bs.push(b);
  for (let b = 174; b <= 255; ++b) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; ++b) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return bs.map((b, i) => [b, String.fromCodePoint(cs[i])]);
}

// CLIP's normalization (NFC, whitespace runs to one space, lower case) and
// its split of one line of text into words.
function clipWords(line) {
  const split = new RegExp(CLIP_SPLIT.replace(/\\s/g, "\\p{White_Space}"), "gu");
  const text = line.normalize("NFC").replace(/\p{White_Space}+/gu, " ").toLowerCase();
  return text.match(split) || [];
}

// Trains merges on `lines` and returns {tokenizer, vocab, merges, bos, eos}.
// Options: maxMerges (default unlimited), minPairCount (stop when the best
// pair occurs fewer times; default 1: merge until no pair is left),
// sortWords (order the words by their symbols before training).
function buildClipTokenizer(lines, { maxMerges = Infinity, minPairCount = 1, sortWords = false } = {}) {
  const table = bytesToUnicode();
  const byteChar = new Map(table);
  const encoder = new TextEncoder();
  const counts = new Map();
  for (const line of lines) {
    for (const word of clipWords(line)) {
      const chars = Array.from(encoder.encode(word), (b) => byteChar.get(b));
      chars[chars.length - 1] += "</w>";
      const key = chars.join("\u0001");
      counts.set(key, (counts.get(key) || 0) + 1);
    }
  }
  let entries = [...counts];
  if (sortWords) entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const words = entries.map(([key, count]) => ({ symbols: key.split("\u0001"), count }));

  const vocab = {};
  let nextId = 0;
  for (const [, c] of table) vocab[c] = nextId++;
  for (const [, c] of table) vocab[c + "</w>"] = nextId++;
  const merges = [];
  for (let m = 0; m < maxMerges; ++m) {
    const pairs = new Map();
    for (const w of words) {
      for (let i = 0; i + 1 < w.symbols.length; ++i) {
        const key = w.symbols[i] + "\u0001" + w.symbols[i + 1];
        pairs.set(key, (pairs.get(key) || 0) + w.count);
      }
    }
    let best = null;
    let bestCount = 0;
    for (const [key, count] of pairs) {
      if (count > bestCount || (count === bestCount && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === null || bestCount < minPairCount) break;
    const [a, b] = best.split("\u0001");
    merges.push(a + " " + b);
    if (!(a + b in vocab)) vocab[a + b] = nextId++;
    for (const w of words) {
      const out = [];
      for (let i = 0; i < w.symbols.length; ++i) {
        if (i + 1 < w.symbols.length && w.symbols[i] === a && w.symbols[i + 1] === b) {
          out.push(a + b);
          ++i;
        } else {
          out.push(w.symbols[i]);
        }
      }
      w.symbols = out;
    }
  }
  const bos = nextId++;
  const eos = nextId++;
  vocab["<|startoftext|>"] = bos;
  vocab["<|endoftext|>"] = eos;

  const special = (content, id) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: true, special: true,
  });
  const tokenizer = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special("<|startoftext|>", bos), special("<|endoftext|>", eos)],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "NFC" },
        { type: "Replace", pattern: { Regex: "\\s+" }, content: " " },
        { type: "Lowercase" },
      ],
    },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: CLIP_SPLIT }, behavior: "Removed", invert: true },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "TemplateProcessing",
      single: [
        { SpecialToken: { id: "<|startoftext|>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<|endoftext|>", type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: "<|startoftext|>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<|endoftext|>", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
        { SpecialToken: { id: "<|endoftext|>", type_id: 1 } },
      ],
      special_tokens: {
        "<|startoftext|>": { id: "<|startoftext|>", ids: [bos], tokens: ["<|startoftext|>"] },
        "<|endoftext|>": { id: "<|endoftext|>", ids: [eos], tokens: ["<|endoftext|>"] },
      },
    },
    decoder: { type: "BPEDecoder", suffix: "</w>" },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<|endoftext|>",
      continuing_subword_prefix: "",
      end_of_word_suffix: "</w>",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges,
    },
  };
  return { tokenizer, vocab, merges, bos, eos };
}

module.exports = { CLIP_SPLIT, buildClipTokenizer, clipWords };
