// The tokenizer side of tools/textmnist/train_text_mnist.py. Two commands:
//
//   node tokenize.js build CAPTIONS.json OUT/tokenizer.json
//     Writes a CLIP-style tokenizer.json (the structure of
//     tests/tokenizer/clip_style/tokenizer.json: CLIP's normalizer and split
//     regex, byte-level alphabet with `</w>` word ends, <|startoftext|> /
//     <|endoftext|>) whose merges are learned by plain BPE on the captions'
//     words until no pair is left, so every caption word is one token.
//
//   node tokenize.js encode TOKENIZER.json STRINGS.json MAX_LENGTH [PAD_ID]
//     Prints {"ids": [[...], ...], "pad_id": P, "words": [...]} where ids[i]
//     is what the reference tokenizer (@huggingface/tokenizers, the library
//     the C++ tokenizer is tested against) gives STRINGS[i], cut and padded
//     exactly as Tokenizer::EncodeForModel does: the text's own tokens are cut
//     to MAX_LENGTH - 2, BOS/EOS added, then right-padded with PAD_ID
//     (default: the id of <|endoftext|>). "words" counts, per string, the
//     reference's text tokens, so the caller can check one token per word.
//
// The reference is found in tests/tokenizer/node_modules (scripts/setup.sh
// installs it) or on NODE_PATH.
"use strict";
const fs = require("fs");
const path = require("path");

const CLIP_SPLIT =
  "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

function loadReference() {
  const repoTokenizerDir = path.join(__dirname, "..", "..", "tests", "tokenizer");
  try {
    return require(require.resolve("@huggingface/tokenizers", { paths: [repoTokenizerDir] }));
  } catch (e) {
    try {
      return require("@huggingface/tokenizers");
    } catch (e2) {
      throw new Error(
        "tokenize.js: @huggingface/tokenizers not found in tests/tokenizer/node_modules or on " +
          "NODE_PATH; run scripts/setup.sh");
    }
  }
}

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

function build(captionsPath, outPath) {
  const captions = JSON.parse(fs.readFileSync(captionsPath, "utf8"));
  const table = bytesToUnicode();
  const byteChar = new Map(table);
  const encoder = new TextEncoder();
  const split = new RegExp(CLIP_SPLIT.replace(/\\s/g, "\\p{White_Space}"), "gu");

  // Distinct words after CLIP's normalization and split (frequencies only
  // order the merges; every word is merged to the end).
  const counts = new Map();
  for (const line of captions) {
    const text = line.normalize("NFC").replace(/\p{White_Space}+/gu, " ").toLowerCase();
    for (const word of text.match(split) || []) {
      const chars = Array.from(encoder.encode(word), (b) => byteChar.get(b));
      chars[chars.length - 1] += "</w>";
      const key = chars.join("\u0001");
      counts.set(key, (counts.get(key) || 0) + 1);
    }
  }
  const words = [...counts]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([key, count]) => ({ symbols: key.split("\u0001"), count }));

  const vocab = {};
  let nextId = 0;
  for (const [, c] of table) vocab[c] = nextId++;
  for (const [, c] of table) vocab[c + "</w>"] = nextId++;
  const merges = [];
  for (;;) {
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
    if (best === null) break;
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
  fs.mkdirSync(path.dirname(path.resolve(outPath)), { recursive: true });
  fs.writeFileSync(outPath, JSON.stringify(tokenizer, null, 1) + "\n");
  // The word counts the caller compares against (CLIP's split, as above).
  const wordCounts = captions.map((line) => {
    const text = line.normalize("NFC").replace(/\p{White_Space}+/gu, " ").toLowerCase();
    return (text.match(split) || []).length;
  });
  process.stdout.write(JSON.stringify({
    vocab_size: Object.keys(vocab).length, merges: merges.length, bos, eos, words: wordCounts,
  }) + "\n");
}

function encode(tokenizerPath, stringsPath, maxLengthText, padText) {
  const { Tokenizer } = loadReference();
  const json = JSON.parse(fs.readFileSync(tokenizerPath, "utf8"));
  const tokenizer = new Tokenizer(json, {});
  const strings = JSON.parse(fs.readFileSync(stringsPath, "utf8"));
  const maxLength = Number(maxLengthText);
  if (!Number.isInteger(maxLength) || maxLength < 2) throw new Error("MAX_LENGTH must be >= 2");
  const bos = json.model.vocab["<|startoftext|>"];
  const eos = json.model.vocab["<|endoftext|>"];
  const pad = padText === undefined ? eos : Number(padText);
  const ids = [];
  const words = [];
  for (const text of strings) {
    const full = tokenizer.encode(text).ids;
    if (full.length < 2 || full[0] !== bos || full[full.length - 1] !== eos) {
      throw new Error(`tokenize.js: ${JSON.stringify(text)} did not encode as BOS ... EOS`);
    }
    const body = full.slice(1, -1);
    words.push(body.length);
    const row = [bos, ...body.slice(0, maxLength - 2), eos];
    while (row.length < maxLength) row.push(pad);
    ids.push(row);
  }
  process.stdout.write(JSON.stringify({ ids, pad_id: pad, bos, eos, words }) + "\n");
}

function main() {
  const [command, ...args] = process.argv.slice(2);
  if (command === "build" && args.length === 2) {
    build(args[0], args[1]);
  } else if (command === "encode" && (args.length === 3 || args.length === 4)) {
    encode(args[0], args[1], args[2], args[3]);
  } else {
    throw new Error(
      "usage: node tokenize.js build CAPTIONS.json OUT.json | " +
        "encode TOKENIZER.json STRINGS.json MAX_LENGTH [PAD_ID]");
  }
}

main();
