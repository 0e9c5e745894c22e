#!/usr/bin/env python3
"""Render the expected outputs of the chat-template tests with Python Jinja2,
set up exactly as Hugging Face transformers sets it up for
apply_chat_template (see README.md). No transformers import is needed: the
environment is rebuilt here from transformers' chat_template_utils.py
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, the
`generation` tag, its tojson, raise_exception and strftime_now) and
apply_chat_template's handling of continue_final_message.

  render_golden.py lang     tests/fixtures/templates/lang_cases.json
                            (cases from tools/templates/lang_cases.py)
  render_golden.py models   tests/fixtures/templates/expected/<model>.json
                            (models.json x conversations.json)
  render_golden.py all      both

Outputs are JSON, so the C test can compare byte for byte (Python str ->
UTF-8). strftime_now is pinned to FIXED_NOW (UTC), which the C test sets with
chat_template_set_now().
"""
import datetime
import json
import os
import sys
from copy import deepcopy

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.environ.get("VLLMC_TEMPLATE_FIXTURES") or os.path.join(ROOT, "tests", "fixtures", "templates")
FIXED_NOW = 1722004496  # 2024-07-26 14:34:56 UTC

CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class GenerationTag(Extension):
    """transformers' AssistantTracker, minus the index tracking: {% generation %}
    renders its body as a call block."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        fixed = datetime.datetime.fromtimestamp(FIXED_NOW, datetime.timezone.utc).replace(tzinfo=None)
        return fixed.strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def result_of(fn):
    try:
        return {"out": fn()}
    except Exception as e:  # the C test compares the message where the engine promises to
        return {"error": str(e), "type": type(e).__name__}


def apply_chat_template(source, messages, tools=None, documents=None, add_generation_prompt=False,
                        continue_final_message=False, specials=None, kwargs=None):
    """transformers' apply_chat_template(tokenize=False) for one conversation."""
    if continue_final_message and add_generation_prompt:
        raise ValueError(
            "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when "
            "you want the model to continue the final message, and add_generation_prompt when you want to add a "
            "header that will prompt it to start a new assistant message instead.")
    template = ENV.from_string(source)
    template_kwargs = {**(specials or {}), **(kwargs or {})}
    for k in ("messages", "tools", "documents", "add_generation_prompt"):
        template_kwargs.pop(k, None)
    chat = messages
    final_message = None
    if continue_final_message:
        chat = deepcopy(chat)
        key = "content"
        final_message = chat[-1].get(key)
        if final_message is None:
            raise ValueError(f'continue_final_message is set but the final message has no "{key}" to continue!')
        if key not in source:
            raise ValueError(f'continue_final_message is set to "{key}" but this is not an accepted field in the chat_template')
        if isinstance(final_message, (list, tuple)):
            for block in reversed(final_message):
                if "text" in block:
                    final_message = block["text"]
                    block["text"] = block["text"] + CONTINUE_TAG
                    break
            else:
                raise ValueError("continue_final_message is set but we could not find any text to continue in the final message!")
        else:
            chat[-1][key] = chat[-1][key] + CONTINUE_TAG
    rendered = template.render(messages=chat, tools=tools, documents=documents,
                               add_generation_prompt=add_generation_prompt, **template_kwargs)
    if continue_final_message:
        if final_message.strip() not in rendered or CONTINUE_TAG.strip() not in rendered:
            raise ValueError(
                "continue_final_message is set but the final message does not appear in the chat after applying the "
                "chat template! This can happen if the chat template deletes portions of the final message. Please "
                "verify the chat template and final message in your chat to ensure they are compatible."
                f"Final message to continue: {final_message.strip()}\nRendered chat:\n{rendered}")
        loc = rendered.rindex(CONTINUE_TAG.strip())
        if rendered[loc: loc + len(CONTINUE_TAG)] == CONTINUE_TAG:
            rendered = rendered[:loc]
        else:
            rendered = rendered[:loc].rstrip()
    return rendered


def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def do_lang():
    sys.path.insert(0, HERE)
    from lang_cases import CASES

    out = []
    names = set()
    for case in CASES:
        name, source = case[0], case[1]
        ctx = case[2] if len(case) > 2 else {}
        assert name not in names, name
        names.add(name)
        entry = {"name": name, "template": source, "ctx": ctx}

        def render():
            return ENV.from_string(source).render(**ctx)

        entry.update(result_of(render))
        out.append(entry)
    dump(os.path.join(FIX, "lang_cases.json"),
         {"jinja2": jinja2.__version__, "now": FIXED_NOW, "cases": out})
    print(f"lang: {len(out)} cases", file=sys.stderr)


def do_models():
    with open(os.path.join(FIX, "models.json"), encoding="utf-8") as f:
        models = json.load(f)
    with open(os.path.join(FIX, "conversations.json"), encoding="utf-8") as f:
        convs = json.load(f)
    total = errors = 0
    for m in models:
        with open(os.path.join(FIX, "models", m["file"]), encoding="utf-8", newline="") as f:
            source = f.read()
        results = {}
        for c in convs:
            results[c["name"]] = result_of(lambda: apply_chat_template(
                source, c["messages"], tools=c.get("tools"), documents=c.get("documents"),
                add_generation_prompt=c.get("add_generation_prompt", False),
                continue_final_message=c.get("continue_final_message", False),
                specials=m.get("specials"), kwargs=c.get("kwargs")))
            total += 1
            errors += "error" in results[c["name"]]
        dump(os.path.join(FIX, "expected", m["name"] + ".json"),
             {"jinja2": jinja2.__version__, "now": FIXED_NOW, "results": results})
    print(f"models: {len(models)} templates x {len(convs)} conversations = {total} renders ({errors} errors)",
          file=sys.stderr)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("lang", "all"):
        do_lang()
    if what in ("models", "all"):
        do_models()
