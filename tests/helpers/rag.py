"""Retrieval without the real embedder or a real server: a predictable embedder, documents, a
scripted OpenAI-compatible server, and a PDF written byte by byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import numpy as np

from groklm.apps.rag.chunk import approx_tokens
from groklm.apps.rag.load import Document


class HashEmbedder:
    """Each word adds 1 to a hashed coordinate; vectors are normalized. Same words, same vector,
    so its cosine is word overlap and ranks can be reasoned about."""

    max_tokens = 512
    count_tokens = staticmethod(approx_tokens)

    def __init__(self, dim: int = 256, name: str = "hash"):
        self.dim = dim
        self.identity = {"backend": "test", "model": name, "dim": dim}
        self.spec = f"test:{name}"
        self.calls: list[int] = []  # how many texts each embed() call got

    def embed(self, texts, progress=False):
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def doc(source: str, text: str, **metadata) -> Document:
    return Document(source, text, metadata.pop("format", "text"), metadata)


class ScriptedServer:
    """An OpenAI-compatible /v1/chat/completions that replies with `reply` and records requests."""

    def __init__(self, reply: str):
        self.reply, self.requests = reply, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 7, "total_tokens": 57},
        })


def write_pdf(path: Path, pages: list[str]) -> None:
    """A minimal valid PDF: one Helvetica text line per page, with a correct xref table."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode('latin-1')}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       f"/Contents {len(objects)} 0 R >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
