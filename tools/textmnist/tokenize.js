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

const { buildClipTokenizer, clipWords } = require("../../tests/tokenizer/clip_bpe.js");

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

// Every caption word becomes one token: merges are learned until no pair is
// left (word frequencies only order them).
function build(captionsPath, outPath) {
  const captions = JSON.parse(fs.readFileSync(captionsPath, "utf8"));
  const { tokenizer, vocab, merges, bos, eos } = buildClipTokenizer(captions, { sortWords: true });
  fs.mkdirSync(path.dirname(path.resolve(outPath)), { recursive: true });
  fs.writeFileSync(outPath, JSON.stringify(tokenizer, null, 1) + "\n");
  // The word counts the caller compares against (CLIP's split, as above).
  const wordCounts = captions.map((line) => clipWords(line).length);
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
