#!/usr/bin/env python3
"""Differential check: render many template files (e.g. a fuzz corpus) with
Jinja2 in transformers' environment and with the C engine, and report where
they disagree: output, phase (error vs output) or, for errors, the message.

  ls CORPUS/* | /tmp/render_c VARS.json > c.jsonl        # tools/templates/render_c.c
  python3 tools/templates/diff_corpus.py VARS.json c.jsonl

VARS.json holds the template variables (the fuzz target's are written with
--write-vars). Known, accepted differences are counted by category rather
than listed: Python's unbounded ints, object addresses in reprs, Jinja's
compile-time folding of constant slices, the engine's size limits.
"""
import ast
import collections
import json
import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_golden as rg  # noqa: E402

FUZZ_VARS = {
    "messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "h\u00e9 \U0001F600"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1.5, "y": [True, None]}}}]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "ok "},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                            "properties": {"x": {"type": "number"}}}}}],
    "bos_token": "<s>", "eos_token": "</s>", "enable_thinking": False, "n": 3, "d": {"k": "v"},
}


class Timeout(Exception):
    pass


def py_render(src, ctx):
    def alarm(*_):
        raise Timeout()
    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(2)
    try:
        return ("out", rg.ENV.from_string(src).render(**ctx))
    except Timeout:
        return ("timeout",)
    except Exception as e:
        return ("err", type(e).__name__, str(e))
    finally:
        signal.alarm(0)


def category(py, c):
    text = repr(py)
    if re.search(r"at 0x[0-9a-f]+>", text, re.I) or "<bound method" in text or "<class '" in text:
        return "Python prints an object address"
    if "dict['" in text or "GenericAlias" in text:
        return "dict[...] generic alias"
    cerr = c.get("err", "")
    if "integer overflow" in cerr:
        return "Python int beyond 64 bits"
    if "complex" in cerr:
        return "complex number"
    if "too large" in cerr or "exceed" in cerr or "recursion" in cerr or "memory" in cerr:
        return "engine limit"
    if "not supported by this engine" in cerr:
        return "unsupported filter/global"
    if "name 'inf'" in text:
        return "Jinja NameError for an inf literal"
    if py[0] == "out" and ("not subscriptable" in cerr or "slice indices" in cerr):
        return "Jinja folds constant slices at compile time"
    return None


def main():
    if sys.argv[1:2] == ["--write-vars"]:
        json.dump(FUZZ_VARS, open(sys.argv[2], "w"))
        return
    ctx = json.load(open(sys.argv[1]))
    stats, cats, shown = collections.Counter(), collections.Counter(), []
    for line in open(sys.argv[2]):
        c = json.loads(line)
        if c.get("skip"):
            stats["skipped"] += 1
            continue
        try:
            src = open(c["f"], encoding="utf-8", newline="").read()
        except (UnicodeDecodeError, FileNotFoundError):
            stats["skipped"] += 1
            continue
        py = py_render(src, ctx)
        if py[0] == "timeout":
            stats["python timeout"] += 1
            continue
        if py[0] == "out" and c["rc"] == 0:
            if py[1] == c["out"]:
                stats["same output"] += 1
                continue
        elif py[0] == "err" and c["rc"] != 0:
            compile_err = py[1] in ("TemplateSyntaxError", "TemplateAssertionError", "SyntaxError")
            if py[1] == "RecursionError":  # Python's parser or renderer ran out of stack: either phase
                compile_err = c["rc"] == -1
            if (c["rc"] == -1) != compile_err:
                pass  # phase differs: report below
            elif py[2] == c["err"] or c["rc"] == -1:
                stats["same error"] += 1
                continue
            else:
                stats["same error, other message"] += 1
                cats["message wording (%s)" % py[1]] += 1
                continue
        cat = category(py, c)
        if cat:
            cats[cat] += 1
            continue
        stats["DIFFERENT"] += 1
        shown.append((c["f"], py, c.get("out", c.get("err"))))
    print(dict(stats))
    for k, v in cats.most_common():
        print(f"  {v:5d}  {k}")
    for f, py, c in shown:
        print(f, "\n  python:", repr(py)[:300], "\n  c:     ", repr(c)[:300])
    return 1 if shown else 0


if __name__ == "__main__":
    sys.exit(main())
