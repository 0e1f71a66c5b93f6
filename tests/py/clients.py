"""Drives ollama-proxy with the official `ollama` and `openai` Python packages.

Usage: clients.py BASE_URL [--only-chat | --two-machines] [--key KEY]
With --key, both clients send KEY (ollama: an Authorization header; openai: api_key), and a client
without it must be refused with 401 first.
Exits non-zero (with a traceback) when anything is wrong.
"""
import sys

import ollama
import openai

base = sys.argv[1]
only_chat = "--only-chat" in sys.argv
key = sys.argv[sys.argv.index("--key") + 1] if "--key" in sys.argv else None

if key is not None:
    try:
        ollama.Client(host=base).list()
        raise SystemExit("listed without a key")
    except ollama.ResponseError as e:
        assert e.status_code == 401, e
    try:
        openai.OpenAI(base_url=base + "/v1", api_key="not-the-key").models.list()
        raise SystemExit("listed with a wrong key")
    except openai.AuthenticationError:
        pass
    print("without the key: 401")

headers = {"Authorization": "Bearer " + key} if key else None
api_key = key or "ollama"
o = ollama.Client(host=base, headers=headers)

if "--two-machines" in sys.argv:
    # big:70b on the desktop only, small:1b on both: one merged list, each model chatted with.
    names = sorted(m.model for m in o.list().models)
    assert names == ["big:70b", "small:1b"], names
    print("ollama list:", names)
    oa = openai.OpenAI(base_url=base + "/v1", api_key=api_key)
    ids = sorted(m.id for m in oa.models.list().data)
    assert ids == ["big:70b", "small:1b"], ids
    print("openai models:", ids)
    parts = [c["message"]["content"] for c in o.chat(model="small:1b", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert len(parts) >= 2, parts
    print("ollama chat small:1b:", len(parts), "chunks")
    stream = oa.chat.completions.create(model="big:70b", messages=[{"role": "user", "content": "hi"}], stream=True)
    deltas = [c.choices[0].delta.content for c in stream if c.choices]
    assert len(deltas) >= 2, deltas
    print("openai chat big:70b:", len(deltas), "chunks")
    sys.exit(0)

# A streamed chat, chunk by chunk.
parts = [c["message"]["content"] for c in o.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True)]
assert len(parts) >= 2, parts
assert "".join(parts).startswith("tok0 "), parts
print("ollama chat stream:", len(parts), "chunks")
if only_chat:
    sys.exit(0)

models = o.list()
names = [m.model for m in models.models]
assert "llama3.2:latest" in names, names
print("ollama list:", names)

emb = o.embed(model="llama3.2", input="hello")
assert len(emb.embeddings[0]) == 3, emb
print("ollama embed: ok")

show = o.show("llama3.2")
assert show.modelinfo is not None
print("ollama show: ok")

oa = openai.OpenAI(base_url=base + "/v1", api_key=api_key)
ids = [m.id for m in oa.models.list().data]
assert "llama3.2:latest" in ids, ids
print("openai models:", ids)

stream = oa.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True)
deltas = [c.choices[0].delta.content for c in stream if c.choices]
assert len(deltas) >= 2 and deltas[0] == "tok0 ", deltas
print("openai chat stream:", len(deltas), "chunks")

e = oa.embeddings.create(model="llama3.2", input="hello")
assert len(e.data[0].embedding) == 3
print("openai embeddings: ok")
