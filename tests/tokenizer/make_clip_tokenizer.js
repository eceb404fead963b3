// Writes clip_style/tokenizer.json: a small tokenizer with exactly the
// structure of Stable Diffusion's CLIP tokenizer.json (clip_bpe.js) and a
// vocabulary learned here by plain BPE training (at most 1,500 merges, pairs
// seen at least twice) on corpus.js's training text, so it stays a few tens
// of KB. Deterministic: `node make_clip_tokenizer.js` rewrites the same file.
"use strict";
const fs = require("fs");
const path = require("path");
const { buildClipTokenizer } = require("./clip_bpe.js");
const { trainingText } = require("./corpus.js");

function main() {
  const { tokenizer, vocab, merges } =
    buildClipTokenizer(trainingText(), { maxMerges: 1500, minPairCount: 2 });
  const out = path.join(__dirname, "clip_style", "tokenizer.json");
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(tokenizer, null, 1) + "\n");
  console.log(`${out}: ${Object.keys(vocab).length} tokens, ${merges.length} merges`);
}

main();
